"""The other ``peft`` methods, each one registration:

- ``adalora`` (Zhang et al., 2023): LoRA whose rank budget moves to the matrices that matter; ranks
  start at ``2 * r`` and are pruned to ``r`` on average over the middle of training
  (``update_and_allocate`` after every step, done by the training loop).
- ``ia3`` (Liu et al., 2022): learned vectors that rescale keys, values and feed-forward activations;
  the fewest trainable parameters of all.
- ``prefix`` (Li & Liang, 2021): trained key/value vectors prepended in every layer.
- ``prompt`` (Lester et al., 2021): trained input embeddings prepended to every sequence.
- ``ptuning`` (Liu et al., 2021): prompt embeddings produced by a small MLP encoder.

The last three add ``tuning.num_virtual_tokens`` positions to every sequence; peft does not pass
position ids through them, so SFT packing is turned off with them (the task says so at start).
"""

from typing import Any

from torch import nn

from lmforge.config.schema import TuningConfig
from lmforge.tuning.base import METHODS
from lmforge.tuning.lora import peft_task_type, wrap

PROMPT_LEARNING = {"prefix", "prompt", "ptuning"}


def _target(config):
    return None if config.target == "auto" else config.target


def apply_adalora(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    import peft

    steps = max(int(total_steps or 0), 10)
    adalora = peft.AdaLoraConfig(
        task_type=peft_task_type("adalora", task_type),
        init_r=2 * config.r,
        target_r=config.r,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft annotates int; a float scales as well
        lora_dropout=config.dropout,
        target_modules=_target(config),
        total_step=steps,
        tinit=steps // 10,
        tfinal=steps // 5,
        deltaT=1,
    )
    return wrap(model, adalora)


def apply_ia3(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    import peft

    return wrap(
        model,
        peft.IA3Config(
            task_type=peft_task_type("ia3", task_type),
            target_modules=_target(config),
            feedforward_modules=[] if config.target != "auto" else None,
        ),
    )


def apply_prefix(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    import peft

    return wrap(
        model,
        peft.PrefixTuningConfig(
            task_type=peft_task_type("prefix", task_type), num_virtual_tokens=config.num_virtual_tokens
        ),
        "tuning.method=prefix",
    )


def apply_prompt(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    import peft

    return wrap(
        model,
        peft.PromptTuningConfig(
            task_type=peft_task_type("prompt", task_type), num_virtual_tokens=config.num_virtual_tokens
        ),
        "tuning.method=prompt",
    )


def apply_ptuning(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    import peft

    return wrap(
        model,
        peft.PromptEncoderConfig(
            task_type=peft_task_type("ptuning", task_type),
            num_virtual_tokens=config.num_virtual_tokens,
            encoder_hidden_size=config.encoder_hidden,
        ),
        "tuning.method=ptuning",
    )


METHODS.register("adalora", apply_adalora)
METHODS.register("ia3", apply_ia3)
METHODS.register("prefix", apply_prefix)
METHODS.register("prompt", apply_prompt)
METHODS.register("ptuning", apply_ptuning)
