"""Typed records for text classification data, and the label set."""

import random
from dataclasses import dataclass

from lmforge.config.schema import DataConfig, DataSource
from lmforge.data.readers import Problems, ReadOptions, reader_for
from lmforge.data.tagging import sentence_text
from lmforge.errors import ConfigError, DataError
from lmforge.paths import resolve_path


@dataclass
class TextExample:
    """One labelled (or unlabelled) text, with where it came from."""

    text: str
    text_pair: str | None = None
    label: str | None = None  # the raw label as written in the file
    where: str = ""
    label_id: int | None = None


def source_of(value: str | DataSource) -> DataSource:
    return DataSource(path=value) if isinstance(value, str) else value


def read_rows(source: str | DataSource, data: DataConfig, problems: Problems):
    """Yield ``(where, row, fields)`` for every row of a configured data source."""
    source = source_of(source)
    path = resolve_path(source.path)
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    fields = source.fields or data.fields
    options = ReadOptions(
        header=source.header if source.header is not None else data.header,
        field_names=(fields.text, fields.text_pair, fields.label),
        encoding=data.encoding,
        errors=data.encoding_errors,
    )
    reader = reader_for(path, source.format or data.format)
    taken = 0
    for number, (where, row) in enumerate(reader(path, options, problems), 1):
        if number <= source.offset:
            continue
        yield where, row, fields
        taken += 1
        if source.limit is not None and taken >= source.limit:
            return


def _raw_label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _field(row: dict, name, where: str, problems: Problems, what: str):
    if name in row:
        return row[name]
    names = ", ".join(str(k) for k in row if not isinstance(k, int)) or f"{len(row)} columns"
    flag = f"--{what.replace('_', '-')}-field"
    problems.report(
        f"{where}: missing {what} field '{name}' (the row has: {names}); set data.fields.{what} "
        f"(a command reading a run's data: {flag})"
    )
    return None


def _sentence_of(columns: list[list[str]], column: int, where: str, problems: Problems) -> str | None:
    try:
        return sentence_text([cells[column] for cells in columns])
    except IndexError:
        problems.report(f"{where}: no token column {column} (data.fields.token_column)")
        return None


def read_text_examples(source, data: DataConfig, problems: Problems, need_label: bool = True) -> list[TextExample]:
    """Read a source (or a list of sources) into ``TextExample``s, reporting rows without text or
    label."""
    if isinstance(source, list):
        return [ex for item in source for ex in read_text_examples(item, data, problems, need_label)]
    fixed_label = source_of(source).label
    if source_of(source).incomplete_types:
        raise ConfigError(
            f"{source_of(source).path}: incomplete_types applies to token_classification training data only"
        )
    examples = []
    for where, row, fields in read_rows(source, data, problems):
        if "columns" in row and fields.text not in row:  # a CoNLL sentence: its tokens as running text
            text = _sentence_of(row["columns"], fields.token_column, where, problems)
        else:
            text = _field(row, fields.text, where, problems, "text")
        if text is None:
            continue
        text = str(text)
        if not text.strip():
            problems.report(f"{where}: empty text in field '{fields.text}'")
            continue
        pair = None
        if fields.text_pair is not None:
            pair = _field(row, fields.text_pair, where, problems, "text_pair")
            if pair is None:
                continue
            pair = str(pair)
        label = fixed_label
        if label is None and (need_label or fields.label in row):
            value = _field(row, fields.label, where, problems, "label")
            if value is None:
                continue
            label = _raw_label(value)
            if not label:
                problems.report(f"{where}: empty label in field '{fields.label}'")
                continue
        examples.append(TextExample(text, pair, label, where))
    if not examples and not problems.items:
        raise DataError(f"{resolve_path(source_of(source).path)}: no usable rows")
    return examples


def _sort_key(raw: str):
    try:
        return (0, float(raw), raw)
    except ValueError:
        return (1, 0.0, raw)


class LabelSet:
    """Maps raw labels to names and ids; ``names[i]`` is the label with id ``i``."""

    def __init__(self, names: list[str], raw_to_name: dict[str, str]):
        self.names = names
        self.raw_to_name = raw_to_name
        self.index = {name: i for i, name in enumerate(names)}

    @classmethod
    def build(cls, raw_labels: list[str], label_names, where: str = "data.label_names") -> "LabelSet":
        """From the training labels and the optional ``data.label_names`` (list or mapping)."""
        distinct = sorted(set(raw_labels), key=_sort_key)
        if label_names is None:
            return cls(distinct, {raw: raw for raw in distinct})
        if isinstance(label_names, dict):
            mapping = {str(k): str(v) for k, v in label_names.items()}
            missing = [raw for raw in distinct if raw not in mapping]
            if missing:
                raise DataError(f"{where}: no name for the raw label(s) {', '.join(map(repr, missing[:5]))}")
            return cls(list(dict.fromkeys(mapping.values())), mapping)
        names = [str(n) for n in label_names]
        if len(set(names)) != len(names):
            raise DataError(f"{where}: label names repeat")
        if all(raw.lstrip("-").isdigit() for raw in distinct) and all(0 <= int(r) < len(names) for r in distinct):
            # Integer labels index the names directly, even if a class is absent from train.
            return cls(names, {str(i): name for i, name in enumerate(names)})
        if len(distinct) != len(names):
            raise DataError(
                f"{where}: {len(names)} names for {len(distinct)} distinct raw labels ({', '.join(distinct[:10])})"
            )
        return cls(names, dict(zip(distinct, names)))

    def id_of(self, raw: str, where: str, problems: Problems) -> int | None:
        name = self.raw_to_name.get(raw, raw if raw in self.index else None)
        if name is None or name not in self.index:
            shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            problems.report(f"{where}: label '{raw}' never appears in the training data (labels: {shown})")
            return None
        return self.index[name]

    def to_json(self) -> dict:
        return {"names": self.names, "raw_to_name": self.raw_to_name}

    @classmethod
    def from_json(cls, data: dict) -> "LabelSet":
        return cls(list(data["names"]), dict(data["raw_to_name"]))


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (train, held-out): per class a seeded ``fraction`` is held out, at least one
    example of every class with two or more."""
    import random

    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    held = []
    for label in sorted(by_class):
        members = by_class[label][:]
        rng.shuffle(members)
        k = round(len(members) * fraction)
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        held.extend(members[:k])
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def limited_sample(examples: list, n: int, seed: int) -> list:
    """``n`` examples drawn with a seed; with labels, as evenly over the classes as they allow
    (a class with too few examples gives all it has, the rest is shared by the others). The input
    order is kept."""
    if n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    labels = [getattr(ex, "label_id", None) for ex in examples]
    if any(label is None for label in labels):
        return [examples[i] for i in sorted(rng.sample(range(len(examples)), n))]
    by_class: dict = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for members in by_class.values():
        rng.shuffle(members)
    chosen, left, classes = [], n, sorted(by_class, key=lambda c: len(by_class[c]))
    for k, label in enumerate(classes):  # smallest classes first: their shortfall goes to the rest
        take = min(len(by_class[label]), left // (len(classes) - k))
        chosen += by_class[label][:take]
        left -= take
    return [examples[i] for i in sorted(chosen)]
