"""Command-line options derived from a settings dataclass, so a setting's name, type, default and help
are written once, on the dataclass field (``field(..., metadata={"help": ...})``).

``max_new_tokens: int = 128`` becomes ``--max-new-tokens`` (type ``int``, default 128). Field types:
``X | None`` takes an ``X`` and defaults to None; ``bool`` is a switch (``store_true``); ``list[X]`` is
a repeatable option (``action="append"``). Field metadata may add ``help``, ``choices`` and
``metavar``; ``positional: True`` makes the field a positional argument taking one or more values.
"""

import argparse
import dataclasses
import types
import typing

OPTION_KEYS = ("help", "choices", "metavar")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    defaults: dict | None = None,
    helps: dict[str, str] | None = None,
) -> None:
    """One argument per field of the dataclass ``cls`` (but ``exclude``), in field order.
    ``defaults`` and ``helps`` replace a field's default or help for this command only (for a
    dataclass whose fields carry no help, or a command that wants another default)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        kind, item = _argument_type(hints[f.name])
        options = {key: f.metadata[key] for key in OPTION_KEYS if key in f.metadata}
        if helps and f.name in helps:
            options["help"] = helps[f.name]
        flag = "--" + f.name.replace("_", "-")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="+", type=item or kind, **options)
        elif kind is bool:
            if _default(f) is not False:
                raise TypeError(f"{cls.__name__}.{f.name}: a switch (store_true) must default to False")
            parser.add_argument(flag, action="store_true", **options)
        elif kind is list:
            # None until given: dataclass_from_args then leaves the field to its default_factory
            # (argparse would append to a shared default list).
            parser.add_argument(flag, action="append", type=item, **options)
        else:
            default = (defaults or {}).get(f.name, _default(f))
            parser.add_argument(flag, type=kind, default=default, **options)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides):
    """An instance of ``cls`` from the parsed ``args`` of ``add_dataclass_arguments``: every field
    whose argument was given (not None), then ``overrides``; the rest keep the dataclass defaults."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    values.update(overrides)
    return cls(**values)


def _argument_type(hint) -> tuple[type, type | None]:
    """(kind, item type): ``int | None`` -> (int, None); ``list[str]`` -> (list, str)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if len(args) != 1:
            raise TypeError(f"{hint}: only 'X | None' unions become options")
        return _argument_type(args[0])
    origin = typing.get_origin(hint)
    if origin is list:
        return list, (args[0] if args else str)
    return hint, None


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return None  # a default_factory (or no default): filled in by the dataclass itself
