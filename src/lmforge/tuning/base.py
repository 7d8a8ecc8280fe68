"""Tuning methods: which parameters train. A method is one module and one ``METHODS.register``
call, plus an import line in ``lmforge/tuning/__init__.py``.

A method takes the model and the tuning config and returns the model to train (possibly wrapped,
as PEFT does). ``export_model`` gives back a plain Hugging Face model for saving.
"""

import copy
from typing import TYPE_CHECKING, Any, Protocol, cast

from torch import nn

from lmforge.config.schema import TuningConfig
from lmforge.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class TuningMethod(Protocol):
    """Make ``model`` ready to train with ``config``: freeze, wrap (PEFT) or leave it; return the
    model to train. ``task_type`` is the job's task; ``total_steps`` the length of training
    (AdaLoRA schedules its rank budget over it)."""

    def __call__(
        self, model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None
    ) -> nn.Module: ...


METHODS: Registry[TuningMethod] = Registry("method", "tuning.method")


def apply_tuning(model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None) -> nn.Module:
    """Apply the configured method; an unknown method names the known ones. ``total_steps`` is the
    length of training (AdaLoRA schedules its rank budget over it)."""
    return METHODS.get(config.method)(model, config, task_type, total_steps=total_steps)


def after_optimizer_step(model: nn.Module, step: int) -> None:
    """Per-step work of a method, after the gradients and before they are cleared (AdaLoRA
    re-allocates its ranks here)."""
    inner: Any = getattr(model, "base_model", None)
    if is_peft(model) and hasattr(inner, "update_and_allocate"):
        inner.update_and_allocate(step)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared tensors are counted once."""
    seen, trainable, total = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def folds_in(model: nn.Module) -> bool:
    """Whether ``model`` is a peft wrapper whose adapters fold into the weights when exported (LoRA and
    the other weight methods; not the virtual-token ones): its export computes otherwise than it."""
    return is_peft(model) and hasattr(model, "merge_and_unload")


def export_model(model: nn.Module) -> "PreTrainedModel":
    """A plain ``transformers`` model with adapters folded in (a copy; ``model`` keeps training).

    Virtual-token methods (prefix, prompt, P-tuning) cannot be folded into weights: the export is
    the frozen base model, and the run folder keeps the trained prompts in ``adapter/``, which
    ``load_saved`` puts back."""
    if not is_peft(model):
        return cast("PreTrainedModel", model)  # every trained family's model is a Hugging Face one
    wrapped = cast(Any, model)  # a peft wrapper (is_peft): its methods are not nn.Module's
    if not hasattr(wrapped, "merge_and_unload"):
        return wrapped.get_base_model()
    return copy.deepcopy(wrapped).merge_and_unload()
