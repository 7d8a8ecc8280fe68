"""Full fine-tuning: every parameter trains."""

from lmforge.tuning.registry import register_method


def apply_full(model, config, task_type, **_):
    for param in model.parameters():
        param.requires_grad_(True)
    return model


register_method("full", apply_full)
