"""Full fine-tuning: every parameter trains."""

from lmforge.tuning.base import METHODS


def apply_full(model, config, task_type, **_):
    for param in model.parameters():
        param.requires_grad_(True)
    return model


METHODS.register("full", apply_full)
