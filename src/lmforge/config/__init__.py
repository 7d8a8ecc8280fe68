"""Typed job configs: schema, YAML loading, overrides and validation."""

from lmforge.config.loader import apply_overrides, config_to_dict, load_config, read_yaml
from lmforge.config.schema import (
    DataConfig,
    DataSource,
    EarlyStopping,
    Fields,
    JobConfig,
    ModelSpec,
    TrainConfig,
    TuningConfig,
)

__all__ = [
    "DataConfig",
    "DataSource",
    "EarlyStopping",
    "Fields",
    "JobConfig",
    "ModelSpec",
    "TrainConfig",
    "TuningConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "read_yaml",
]
