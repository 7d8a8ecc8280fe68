"""Typed job configs: schema, YAML loading, overrides and validation."""

from lmforge.config.loader import apply_overrides, config_to_dict, load_config, read_yaml
from lmforge.config.model_spec import LstmSpec, ModelSpec, NgramSpec, TransformerSpec
from lmforge.config.schema import (
    DataConfig,
    DataSource,
    EarlyStopping,
    Fields,
    JobConfig,
    TrainConfig,
    TuningConfig,
)

__all__ = [
    "DataConfig",
    "DataSource",
    "EarlyStopping",
    "Fields",
    "JobConfig",
    "LstmSpec",
    "ModelSpec",
    "NgramSpec",
    "TrainConfig",
    "TransformerSpec",
    "TuningConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "read_yaml",
]
