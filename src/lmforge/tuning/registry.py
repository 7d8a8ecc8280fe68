"""Tuning methods: which parameters train. One file per method, one ``register_method`` call.

A method takes the model and the tuning config and returns the model to train (possibly wrapped,
as PEFT does). ``export_model`` gives back a plain Hugging Face model for saving.
"""

from collections.abc import Callable

from torch import nn

from lmforge.config.schema import TuningConfig
from lmforge.errors import ConfigError

Method = Callable[[nn.Module, TuningConfig, str], nn.Module]
METHODS: dict[str, Method] = {}


def register_method(name: str, fn: Method) -> None:
    METHODS[name] = fn


def apply_tuning(model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None) -> nn.Module:
    """Apply the configured method; an unknown method names the known ones. ``total_steps`` is the
    length of training (AdaLoRA schedules its rank budget over it)."""
    from lmforge.tuning import freeze, full, lora, peft_methods  # noqa: F401  (registration)

    method = METHODS.get(config.method)
    if method is None:
        raise ConfigError(f"tuning.method: unknown method '{config.method}' (known: {', '.join(sorted(METHODS))})")
    return method(model, config, task_type, total_steps=total_steps)


def after_optimizer_step(model: nn.Module, step: int) -> None:
    """Per-step work of a method, after the gradients and before they are cleared (AdaLoRA
    re-allocates its ranks here)."""
    inner = getattr(model, "base_model", None)
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


def export_model(model: nn.Module) -> nn.Module:
    """A plain ``transformers`` model with adapters folded in (a copy; ``model`` keeps training).

    Virtual-token methods (prefix, prompt, P-tuning) cannot be folded into weights: the export is
    the frozen base model, and the run folder keeps the trained prompts in ``adapter/``, which
    ``load_saved`` puts back."""
    if not is_peft(model):
        return model
    if not hasattr(model, "merge_and_unload"):
        return model.get_base_model()
    import copy

    return copy.deepcopy(model).merge_and_unload()
