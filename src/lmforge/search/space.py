"""``tune.space``: which config keys a search varies and over what, checked before any trial runs.

Every key is checked against the config schema with the values it may take (both ends of a range,
every choice), so an unknown key, an empty or reversed range or a choice of the wrong type fails in
one line naming the key -- not in trial 7 an hour later.
"""

import json
from dataclasses import dataclass
from typing import Any

import optuna
from pydantic import ValidationError

from lmforge.config import apply_overrides
from lmforge.config.loader import format_validation_error
from lmforge.config.schema import JobConfig, SearchRange
from lmforge.errors import ConfigError, LmforgeError


@dataclass(frozen=True)
class Dimension:
    """One searched key: a list of choices, or a numeric range."""

    key: str
    choices: tuple | None = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list:
        """The values to check the key with: every choice, or both ends of the range."""
        if self.choices is not None:
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


def override(key: str, value: Any) -> str:
    """``key=value`` as ``apply_overrides`` reads it back (JSON is YAML)."""
    return f"{key}={json.dumps(value)}"


def read_space(config: JobConfig, base: dict) -> list[Dimension]:
    """The dimensions of ``config.tune.space``, each checked against the schema on top of ``base``
    (the job's config as the user wrote it)."""
    if not config.tune.space:
        raise ConfigError(
            "tune.space is empty: name the config keys to search, e.g. "
            "tune: {space: {train.lr: {low: 1.0e-5, high: 1.0e-3, log: true}, train.batch_size: [16, 32]}}"
        )
    dims = [_dimension(key, spec) for key, spec in config.tune.space.items()]
    for dim in dims:
        if dim.key.split(".")[0] in ("tune", "output", "resume", "overwrite"):
            raise ConfigError(f"tune.space.{dim.key}: this key is not searchable (it says where and how to search)")
        for value in dim.corners():
            _check_value(base, dim.key, value)
    if config.tune.sampler == "grid" and any(d.choices is None for d in dims):
        ranged = next(d.key for d in dims if d.choices is None)
        raise ConfigError(f"tune.space.{ranged}: the grid sampler needs a list of values for every key, not a range")
    return dims


def _dimension(key: str, spec: SearchRange | list) -> Dimension:
    where = f"tune.space.{key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: the list of choices is empty")
        if any(isinstance(v, (dict, list)) for v in spec):
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, not mappings or lists")
        return Dimension(key, choices=tuple(spec))
    if spec.low > spec.high:
        raise ConfigError(f"{where}: low ({spec.low}) is above high ({spec.high})")
    if spec.low == spec.high:
        raise ConfigError(f"{where}: the range is empty (low = high = {spec.low}); give a list for a fixed value")
    if spec.log and spec.low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0 (got {spec.low})")
    if spec.log and spec.step is not None:
        raise ConfigError(f"{where}: a range is either log or stepped, not both")
    integer = (
        isinstance(spec.low, int) and isinstance(spec.high, int) and (spec.step is None or spec.step == int(spec.step))
    )
    return Dimension(key, low=spec.low, high=spec.high, log=spec.log, step=spec.step, integer=integer)


def _check_value(base: dict, key: str, value: Any) -> None:
    data = json.loads(json.dumps(base))  # a deep copy of plain data
    try:
        apply_overrides(data, [override(key, value)])
        JobConfig.model_validate(data)
    except LmforgeError as exc:
        raise ConfigError(f"tune.space.{key}: {exc}") from None
    except ValidationError as exc:
        reason = format_validation_error(exc, "config", [])
        raise ConfigError(f"tune.space.{key}: the value {value!r} does not fit ({reason})") from None
