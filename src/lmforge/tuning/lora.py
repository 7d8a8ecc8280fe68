"""LoRA through the ``peft`` library (Hu et al., 2021: W + (alpha/r) * B A, with A, B low rank)."""

from typing import Any

from torch import nn

from lmforge.config.schema import TuningConfig
from lmforge.errors import ConfigError
from lmforge.tuning.base import METHODS
from lmforge.tuning.dropout import cheapen_dropouts

# lmforge task -> peft TaskType name (decides which head modules peft keeps trainable).
PEFT_TASK_TYPES = {
    "classification": "SEQ_CLS",
    "token_classification": "TOKEN_CLS",
    "causal_lm": "CAUSAL_LM",
    "seq2seq": "SEQ_2_SEQ_LM",
    "masked_lm": None,
}


def peft_task_type(method: str, task_type: str):
    import peft

    if task_type not in PEFT_TASK_TYPES:
        raise ConfigError(f"tuning.method={method} is not available for task '{task_type}' yet")
    kind = PEFT_TASK_TYPES[task_type]
    if kind is None and method in ("prefix", "prompt", "ptuning"):
        raise ConfigError(
            f"tuning.method={method} needs a task peft knows (causal_lm, seq2seq, "
            f"classification, token_classification), not '{task_type}'"
        )
    return getattr(peft.TaskType, kind) if kind else None


def wrap(model, peft_config, what: str = "tuning.target"):
    """``peft.get_peft_model`` with its configuration errors as one-line config errors, and the adapters'
    dropouts drawing cheaper masks on the CPU (``tuning/dropout.py``)."""
    import peft

    try:
        wrapped = peft.get_peft_model(model, peft_config)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: {str(exc).splitlines()[0]}") from None
    cheapen_dropouts(wrapped)
    return wrapped


def apply_lora(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    import peft

    # "auto" lets peft choose the modules it knows for this architecture (BERT: query, value).
    target = None if config.target == "auto" else config.target
    lora_config = peft.LoraConfig(
        task_type=peft_task_type("lora", task_type),
        r=config.r,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft annotates int; a float scales as well
        lora_dropout=config.dropout,
        target_modules=target,
    )
    wrapped = wrap(model, lora_config)
    # A CRF layer (head.crf) is part of the head: it starts from zero and must train.
    for name, param in wrapped.named_parameters():
        if ".crf." in f".{name}":
            param.requires_grad_(True)
    return wrapped


METHODS.register("lora", apply_lora)
