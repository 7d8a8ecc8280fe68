"""Fuzzing (hypothesis) of what users hand lmforge: configs with their overrides, and data files in
every format. Whatever the input, the answer is a result or lmforge's own one-line error
(``LmforgeError``), never another exception (issue 32: 0 crashes)."""

import json
import os
import string
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.config import load_config
from lmforge.config.schema import DataConfig, DataSource
from lmforge.data.conversations import read_conversations
from lmforge.data.examples import read_text_examples
from lmforge.data.readers import Problems
from lmforge.data.tagged import read_tagged
from lmforge.errors import LmforgeError

KEYS = [
    "task",
    "data",
    "model",
    "tuning",
    "train",
    "output",
    "prompt",
    "tracking",
    "tune",
    "device",
    "train",
    "epochs",
    "lr",
    "batch_size",
    "max_length",
    "method",
    "r",
    "family",
    "layers",
    "hidden",
    "early_stopping",
    "metric",
    "patience",
    "fields",
    "text",
    "label",
    "split",
    "seed",
    "bogus",
    "",
]
TASKS = ["classification", "token_classification", "causal_lm", "masked_lm", "seq2seq", "nope"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TASKS + ["minilm", "lora", "full", "auto", "1e-3", "[1, 2]", "{a: 1}", "~"]),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=20,
)
CONFIGS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8).map(
    lambda d: {"task": "classification", **d} if "task" not in d else d
)
OVERRIDES = st.lists(
    st.tuples(
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join),
        st.one_of(st.text(string.printable, max_size=12), st.sampled_from(["1e-3", "[a, b]", "{x: 1}", "", "null"])),
    ).map(lambda kv: f"{kv[0]}={kv[1]}"),
    max_size=4,
)
# LMFORGE_FUZZ_EXAMPLES raises the count for a longer hunt (the suite runs 300 each).
FUZZ = settings(
    max_examples=int(os.environ.get("LMFORGE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _only_our_errors(call):
    try:
        call()
    except LmforgeError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
    except RecursionError:
        raise AssertionError("a recursion error escaped") from None


@FUZZ
@given(config=CONFIGS, overrides=OVERRIDES)
def test_any_config_loads_or_is_one_error(config, overrides):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        _only_our_errors(lambda: load_config(path, overrides))


@FUZZ
@given(text=st.text(max_size=400))
def test_any_yaml_text_loads_or_is_one_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        _only_our_errors(lambda: load_config(path, []))


ROW_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.lists(st.text(max_size=5), max_size=4),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
ROWS = st.lists(
    st.dictionaries(
        st.sampled_from(["text", "label", "tokens", "tags", "ner_tags", "messages", "instruction", "output", "x"]),
        ROW_VALUES,
        max_size=5,
    ),
    max_size=6,
)
LINES = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["", "word\tB-PER", "word B-PER", "-DOCSTART- -X- O O", "a\tb\tc", "text,label", "\ufeff"]),
    ),
    max_size=12,
)


def _read_all(path: Path, fmt: str | None = None) -> None:
    source = DataSource(path=str(path), format=fmt)
    for read in (
        lambda: read_text_examples(source, DataConfig(), Problems(), need_label=True),
        lambda: read_text_examples(source, DataConfig(), Problems(), need_label=False),
        lambda: read_tagged(source, DataConfig(), Problems()),
        lambda: read_conversations(source, DataConfig(), Problems()),
    ):
        _only_our_errors(read)


@FUZZ
@given(rows=ROWS, garbage=st.sampled_from(["", "{not json\n", "[1, 2]\n", "\x00\x01", "\ud800"]))
def test_any_jsonl_file_reads_or_is_one_error(rows, garbage):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.jsonl"
        text = "".join(json.dumps(r) + "\n" for r in rows) + garbage
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        _read_all(path)


@FUZZ
@given(lines=LINES, suffix=st.sampled_from([".csv", ".tsv", ".txt", ".conll", ".json", ".jsonl"]))
def test_any_text_file_in_any_format_reads_or_is_one_error(lines, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"d{suffix}"
        path.write_text("\n".join(lines), encoding="utf-8")
        _read_all(path)


@FUZZ
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".tsv", ".txt", ".conll", ".jsonl"]))
def test_any_bytes_read_or_are_one_error(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"d{suffix}"
        path.write_bytes(data)
        _read_all(path)
