"""NER data mistakes: one line naming the file and line, a non-zero exit, the previous run intact;
``data.on_error: skip`` skips and counts instead."""

import pytest
from test_bad_input import previous_run, snapshot  # noqa: F401  (fixture)

from conftest import TINY_MODEL, write_jsonl

GOOD = "John B-PER\nvisited O\nParis B-LOC\n\nMary B-PER\nstayed O\nhome O\n\n"


def job(tmp_path, out, train: str, dev: str | None = None, name="train.conll", extra=""):
    (tmp_path / name).write_text(train, encoding="utf-8")
    dev_line = ""
    if dev is not None:
        (tmp_path / "dev.conll").write_text(dev, encoding="utf-8")
        dev_line = f", validation: {tmp_path / 'dev.conll'}"
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: token_classification\ndata: {{train: {tmp_path / name}{dev_line}{extra}}}\n"
        f"model: {TINY_MODEL}\ntrain: {{epochs: 1}}\noutput: {out}\noverwrite: true\n"
    )
    return config


def span_rows(*entities):
    return [{"text": "John visited Paris", "entities": [{"start": 0, "end": 4, "label": "PER"}]}] * 3 + [
        {"text": "John visited Paris", "entities": list(entities)}
    ]


CASES = {
    "wrong column count": (
        lambda p: job(p, p / "previous", GOOD + "Bob B-PER extra\n"),
        "train.conll:9: expected 2 columns, found 3",
    ),
    "unseen tag in dev": (
        lambda p: job(p, p / "previous", GOOD, dev="Acme B-ORG\nwins O\n"),
        "dev.conll:1: tag 'B-ORG' has an entity type training never saw (types: LOC, PER)",
    ),
    "span outside text": (
        lambda p: write_jsonl(p / "t.jsonl", span_rows({"start": 13, "end": 30, "label": "LOC"})) and job_spans(p),
        "t.jsonl:4: ",
    ),
    "overlapping spans": (
        lambda p: (
            (
                write_jsonl(
                    p / "t.jsonl",
                    span_rows({"start": 0, "end": 4, "label": "PER"}, {"start": 2, "end": 8, "label": "LOC"}),
                )
            )
            and job_spans(p)
        ),
        "t.jsonl:4: ",
    ),
    "empty sentence": (
        lambda p: (
            (write_jsonl(p / "t.jsonl", [{"tokens": ["a"], "tags": ["B-PER"]}, {"tokens": [], "tags": []}]))
            and job_spans(p)
        ),
        "t.jsonl:2: empty sentence",
    ),
    "tag without prefix": (lambda p: job(p, p / "previous", GOOD + "Bob PERSON\n"), "train.conll:9: "),
    "incomplete type unknown": (
        lambda p: job_partial(p, "train: [{path: P, incomplete_types: [ORG]}]"),
        "incomplete_types: 'ORG' is not an entity type of the training data (types: LOC, PER)",
    ),
    "incomplete types in dev": (
        lambda p: job_partial(p, "train: P, validation: {path: P, incomplete_types: [LOC]}"),
        "train.conll:1: incomplete_types applies to training data only",
    ),
    "incomplete types with split": (
        lambda p: job_partial(p, "train: {path: P, incomplete_types: [LOC]}, split: 0.5"),
        "data.split: a training source has incomplete_types",
    ),
}


def job_partial(tmp_path, data: str):
    (tmp_path / "train.conll").write_text(GOOD * 2, encoding="utf-8")
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: token_classification\ndata: {{{data.replace('P', str(tmp_path / 'train.conll'))}}}\n"
        f"model: {TINY_MODEL}\ntrain: {{epochs: 1}}\noutput: {tmp_path / 'previous'}\n"
        f"overwrite: true\n"
    )
    return config


def job_spans(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: token_classification\ndata: {{train: {tmp_path / 't.jsonl'}}}\n"
        f"model: {TINY_MODEL}\ntrain: {{epochs: 1}}\noutput: {tmp_path / 'previous'}\n"
        f"overwrite: true\n"
    )
    return config


@pytest.mark.parametrize("name", list(CASES))
def test_ner_bad_input_one_line_no_damage(name, tmp_path, previous_run, run_cli):
    make, expected = CASES[name]
    before = snapshot(previous_run)
    config = make(tmp_path)
    code, _, err = run_cli("train", "--quiet", str(config))
    assert code == 2
    assert err.startswith("lmforge: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert snapshot(previous_run) == before


def test_span_errors_name_the_entity(tmp_path, run_cli):
    write_jsonl(tmp_path / "t.jsonl", span_rows({"start": 13, "end": 30, "label": "LOC"}))
    code, _, err = run_cli("train", "--quiet", str(job_spans(tmp_path)))
    assert code == 2 and "outside" in err and "18" in err, err
    write_jsonl(
        tmp_path / "t.jsonl", span_rows({"start": 0, "end": 4, "label": "PER"}, {"start": 2, "end": 8, "label": "LOC"})
    )
    code, _, err = run_cli("train", "--quiet", str(job_spans(tmp_path)))
    assert code == 2 and "overlaps" in err, err


def test_skip_bad_sentences_and_count_them(tmp_path, run_cli):
    config = job(tmp_path, tmp_path / "out", GOOD * 4 + "Bob B-PER extra\n\n" + GOOD, extra=", on_error: skip")
    code, _, err = run_cli("train", str(config))
    assert code == 0, err
    assert "skipped 1 bad row(s)" in err


def test_text_row_without_entities_is_an_error_not_all_o(tmp_path, run_cli):
    write_jsonl(tmp_path / "t.jsonl", span_rows() + [{"text": "Mary went home"}])
    code, _, err = run_cli("train", "--quiet", str(job_spans(tmp_path)))
    assert code == 2 and "t.jsonl:5: no 'entities' list" in err, err


def test_validate_shows_the_partial_label_note(tmp_path, run_cli):
    config = job_partial(tmp_path, "train: [P, {path: P, incomplete_types: [LOC]}]")
    code, out, err = run_cli("validate", str(config))
    assert code == 0, err
    assert "note: partial labels: O tokens of 4 training sentences may be LOC" in out, out
