"""Read a YAML config, apply ``key=value`` overrides, and validate it into a ``JobConfig``.

Errors name the file (or the override) and the dotted key, and suggest the closest valid key for a
misspelt one.
"""

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from lmforge.config.model_spec import MODEL_SPECS, UNKNOWN_FAMILY
from lmforge.config.schema import JobConfig
from lmforge.errors import ConfigError


def read_yaml(path: str | Path) -> dict:
    """Load a YAML mapping from ``path`` with errors that name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys, not {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each ``dotted.key=value`` in ``data``; values are parsed as YAML (``3e-5``, ``[a, b]``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        value = _number(value)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else _promote(child, part, item)
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _number(value):
    # YAML 1.1 reads "3e-5" (no dot) as a string; on the command line it is meant as a number.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in "eE.") and value.strip() else value
        except ValueError:
            return value
    return value


def _promote(value: Any, part: str, item: str) -> dict:
    # `model=minilm` then `model.path=...`-style overrides: a string section becomes {path: ...}.
    if isinstance(value, str):
        return {"path": value}
    raise ConfigError(f"override '{item}': '{part}' is not a section")


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> JobConfig:
    """Build the job config from a YAML file (or ``base``) plus overrides."""
    overrides = list(overrides or [])
    data = dict(base or {})
    source = str(path) if path is not None else "config"
    if path is not None:
        data.update(read_yaml(path))
    apply_overrides(data, overrides)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overrides)) from None


def format_validation_error(exc: ValidationError, source: str, overrides: list[str]) -> str:
    """One line naming where each problem is; the first problems come first."""
    override_keys = {item.partition("=")[0].strip(): item for item in overrides}
    messages = []
    for err, loc in _specific_errors(exc.errors()):
        dotted = ".".join(str(p) for p in loc)
        origin = next((f"override '{item}'" for key, item in override_keys.items() if _related(dotted, key)), source)
        family = _family(err["loc"])
        if err["type"] == UNKNOWN_FAMILY and isinstance(err["input"], dict):
            name = err["input"].get("family")
            messages.append(f"{origin}: model.family: unknown model family {name!r} (known: {', '.join(MODEL_SPECS)})")
        elif err["type"] == UNKNOWN_FAMILY:
            messages.append(
                f"{origin}: model: a bundled alias, a folder or a spec {{family: ...}} (got {err['input']!r})"
            )
        elif err["type"] == "extra_forbidden" and family is not None and len(loc) == 2:
            messages.append(f"{origin}: {dotted}: {_not_a_setting(str(loc[1]), family)}")
        elif err["type"] == "extra_forbidden":
            hint = _suggest(loc)
            messages.append(f"{origin}: unknown key '{dotted}'{hint}")
        elif not loc:
            messages.append(f"{origin}: {err['msg'].removeprefix('Value error, ')}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            message = err["msg"].removeprefix("Value error, ")
            where = "" if message.startswith(f"{dotted}.") else f"{dotted}: "  # the message names its key
            messages.append(f"{origin}: {where}{message}{shown}")
    unique = list(dict.fromkeys(messages))
    return "; ".join(unique[:5]) + (f"; and {len(unique) - 5} more" if len(unique) > 5 else "")


def _family(loc: tuple) -> str | None:
    """The model family whose spec an error is in (pydantic puts the tag after the union's name)."""
    if len(loc) > 2 and loc[0] == "model" and str(loc[1]).startswith("tagged-union[") and loc[2] in MODEL_SPECS:
        return loc[2]
    return None


def _not_a_setting(key: str, family: str) -> str:
    """Why ``model.<key>`` is wrong for ``family``: a close key of its own, or where the key belongs."""
    own = [name for name in MODEL_SPECS[family].model_fields if name != "family"]
    message = f"not a setting of the {family} family (its settings: {', '.join(own)})"
    others = [name for name, spec in MODEL_SPECS.items() if name != family and key in spec.model_fields]
    if len(others) == 1:
        return f"{message}; model.{key} applies to the {others[0]} family only"
    if others:
        return f"{message}; model.{key} applies to the {' and '.join(others)} families"
    close = difflib.get_close_matches(key, own, n=1, cutoff=0.5)
    return f"{message}; did you mean 'model.{close[0]}'?" if close else message


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _specific_errors(errors: list[ErrorDetails]) -> list[tuple[ErrorDetails, tuple]]:
    # A value that fits no member of a union gets one error per member; "should be a string" beside
    # a more specific error at the same place (or inside it) is noise.
    located = [(err, _clean_loc(err["loc"])) for err in errors]
    kept: list[tuple[ErrorDetails, tuple]] = []
    for err, loc in located:
        others = [o for o, ol in located if o is not err and ol[: len(loc)] == loc]
        if err["type"].endswith("_type") and others and not all(o["type"].endswith("_type") for o in others):
            continue
        if err["type"].endswith("_type") and any(k[1] == loc for k in kept):
            continue
        kept.append((err, loc))
    return kept


def _clean_loc(loc: tuple) -> tuple:
    # pydantic puts the union member it tried into loc ("str", "DataSource", "function-after[...]").
    keep = []
    if _family(loc):  # ("model", "tagged-union[...]", family, ...): the family is not a key
        loc = loc[:1] + loc[3:]
    for part in loc:
        if isinstance(part, str) and (
            part[:1].isupper()
            or "[" in part
            or part
            in {"str", "int", "float", "bool", "list", "dict", "literal['balanced']", "literal['epoch']", "none"}
        ):
            continue
        keep.append(part)
    return tuple(keep)


def _section_models(annotation) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _section_models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _section_models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def valid_keys(parent: tuple) -> list[str]:
    """The keys allowed under the dotted location ``parent`` of the job config."""
    models: list[type[BaseModel]] = [JobConfig]
    for part in parent:
        nxt = []
        for model in models:
            field = model.model_fields.get(str(part))
            if field is not None:
                nxt.extend(_section_models(field.annotation))
        models = nxt
    return sorted({name for model in models for name in model.model_fields})


def _suggest(loc: tuple) -> str:
    if not loc:  # a key pydantic could not place (an odd top level): no suggestion
        return ""
    keys = valid_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.5)
    if close:
        prefix = ".".join(str(p) for p in loc[:-1])
        return f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
    return f" (valid keys: {', '.join(keys)})" if keys else ""


def config_to_dict(config: JobConfig) -> dict:
    """The resolved config as plain data, for ``config.yaml`` in the run folder."""
    return config.model_dump(mode="json")
