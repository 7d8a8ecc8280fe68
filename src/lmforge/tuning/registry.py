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


def apply_tuning(model: nn.Module, config: TuningConfig, task_type: str) -> nn.Module:
    """Apply the configured method; an unknown method names the known ones."""
    from lmforge.tuning import freeze, full, lora  # noqa: F401  (registration)

    method = METHODS.get(config.method)
    if method is None:
        raise ConfigError(f"tuning.method: unknown method '{config.method}' (known: {', '.join(sorted(METHODS))})")
    return method(model, config, task_type)


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
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def export_model(model: nn.Module) -> nn.Module:
    """A plain ``transformers`` model with adapters folded in (a copy; ``model`` keeps training)."""
    if not is_peft(model):
        return model
    import copy

    return copy.deepcopy(model).merge_and_unload()
