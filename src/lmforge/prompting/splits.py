"""What ``lmforge prompt`` draws its in-context examples from and scores on, for every task."""

import random

from lmforge.config import JobConfig
from lmforge.data.examples import limited_sample
from lmforge.errors import DataError


def labelled_pool(config: JobConfig, data) -> None:
    """``data.train_limit``: the in-context examples are drawn from a seeded (class-balanced, where
    rows have labels) sample of N training rows, as a trained candidate would learn from."""
    if config.data.train_limit is not None:
        data.train = limited_sample(data.train, config.data.train_limit, config.prompt.seed)
        data.notes.append(f"data.train_limit: {len(data.train)} labelled examples to draw from")


def evaluation_splits(data, spec) -> dict:
    """The rows ``lmforge prompt`` is scored on: validation and test, each a seeded sample of
    ``prompt.limit`` rows when that is set (not the first rows: files are often sorted by label)."""
    splits = {name: rows for name, rows in (("validation", data.validation), ("test", data.test)) if rows}
    if not splits:
        raise DataError("lmforge prompt needs evaluation data: data.validation, data.split or data.test")
    if spec.limit:
        splits = {name: _sample(rows, spec.limit, spec.seed) for name, rows in splits.items()}
    return splits


def _sample(rows: list, n: int, seed: int) -> list:
    """``n`` rows drawn with ``seed`` (the class mix of the file kept in expectation), in file order."""
    if n >= len(rows):
        return rows
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]
