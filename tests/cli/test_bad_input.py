"""Each user mistake ends with one line naming the place, a non-zero exit, and no damage to an
existing run folder (it is given with overwrite=true, so only a check that runs first saves it)."""

from pathlib import Path

import pytest

from conftest import TINY_MODEL, write_jsonl


@pytest.fixture
def previous_run(tmp_path) -> Path:
    out = tmp_path / "previous"
    (out / "model").mkdir(parents=True)
    (out / "config.yaml").write_text("task: classification\n")
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    return out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def good_rows(n=12):
    return [{"text": f"text number {i}", "label": "pos" if i % 2 else "neg"} for i in range(n)]


def run_job(run_cli, tmp_path, out, *overrides, train_rows=None, dev_rows=None):
    train = write_jsonl(tmp_path / "train.jsonl", train_rows if train_rows is not None else good_rows())
    dev = write_jsonl(tmp_path / "dev.jsonl", dev_rows if dev_rows is not None else good_rows(4))
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: classification\ndata: {{train: {train}, validation: {dev}}}\n"
        f"model: {TINY_MODEL}\ntrain: {{epochs: 1}}\noutput: {out}\noverwrite: true\n"
    )
    return run_cli("train", "--quiet", str(config), *overrides)


CASES = {
    "unknown key": (["train.lerning_rate=0.1"], {}, "unknown key 'train.lerning_rate'"),
    "misspelt key": (["train.epoch=2"], {}, "did you mean 'train.epochs'?"),
    "wrong type": (["train.batch_size=lots"], {}, "train.batch_size"),
    "missing data file": (["data.test=/nonexistent/test.jsonl"], {}, "/nonexistent/test.jsonl: data file not found"),
    "row without text": (
        [],
        {"train_rows": good_rows() + [{"sentence": "x", "label": "pos"}]},
        "train.jsonl:13: missing text field 'text'",
    ),
    "row without label": ([], {"train_rows": good_rows() + [{"text": "x"}]}, "train.jsonl:13: missing label field"),
    "empty text": ([], {"train_rows": good_rows() + [{"text": "  ", "label": "pos"}]}, "train.jsonl:13: empty text"),
    "unseen label": (
        [],
        {"dev_rows": good_rows(3) + [{"text": "meh", "label": "neutral"}]},
        "dev.jsonl:4: label 'neutral' never appears in the training data (labels: neg, pos)",
    ),
    "missing model folder": (
        ["model=/no/such/model"],
        {},
        "model '/no/such/model': folder /no/such/model does not exist",
    ),
    "hub id": (["model=bert-base/uncased"], {}, "lmforge does not download from a hub"),
    "bad early-stopping metric": (["train.early_stopping={metric: f2}"], {}, "'f2' is not reported"),
    "unknown tuning method": (["tuning.method=magic"], {}, "unknown method 'magic'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_no_damage(name, tmp_path, previous_run, run_cli):
    overrides, rows, expected = CASES[name]
    before = snapshot(previous_run)
    code, out, err = run_job(run_cli, tmp_path, previous_run, *overrides, **rows)
    assert code != 0
    assert err.startswith("lmforge: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err
    assert snapshot(previous_run) == before


def test_malformed_json_line(tmp_path, previous_run, run_cli):
    before = snapshot(previous_run)
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0\n')
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {{train: {tmp_path / 'train.jsonl'}}}\noutput: {previous_run}\noverwrite: true\n")
    code, _, err = run_cli("train", str(config))
    assert code == 2 and "train.jsonl:2: malformed JSON" in err and err.count("\n") == 1
    assert snapshot(previous_run) == before


def test_existing_run_is_refused_without_overwrite_or_resume(tmp_path, previous_run, run_cli):
    before = snapshot(previous_run)
    train = write_jsonl(tmp_path / "train.jsonl", good_rows())
    config = tmp_path / "job.yaml"
    config.write_text("task: classification\n")
    code, _, err = run_cli("train", "--quiet", str(config), f"data.train={train}", f"output={previous_run}")
    assert code == 2 and "already holds a run; set overwrite=true" in err
    assert snapshot(previous_run) == before


def test_validate_lists_every_problem(tmp_path, run_cli):
    train = write_jsonl(tmp_path / "train.jsonl", good_rows() + [{"text": ""}, {"label": "pos"}])
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"text": "x", "label": "other"}])
    config = tmp_path / "job.yaml"
    config.write_text(
        f"data: {{train: {train}, validation: {dev}, test: {tmp_path / 'missing.csv'}}}\n"
        f"model: /no/such/folder\noutput: {tmp_path / 'out'}\n"
    )
    code, out, err = run_cli("validate", str(config))
    assert code == 2 and "5 problem(s)" in err
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    joined = "\n".join(problems)
    for fragment in (
        "train.jsonl:13: empty text",
        "train.jsonl:14: missing text field",
        "dev.jsonl:1: label 'other'",
        "missing.csv: data file not found",
        "/no/such/folder does not exist",
    ):
        assert fragment in joined


def test_validate_ok(tmp_path, run_cli):
    train = write_jsonl(tmp_path / "train.jsonl", good_rows())
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {{train: {train}, split: 0.25}}\noutput: {tmp_path / 'out'}\n")
    code, out, _ = run_cli("validate", str(config))
    assert code == 0 and "8 train, 4 validation" in out


def test_validate_counts_the_limited_draw_and_checks_the_methods_needs(tmp_path, run_cli):
    """data.train_limit is the draw training uses; SetFit's data checks run too (no two examples of
    one label in a draw of 1)."""
    train = write_jsonl(tmp_path / "train.jsonl", good_rows())
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {{train: {train}, train_limit: 4}}\noutput: {tmp_path / 'out'}\n")
    code, out, _ = run_cli("validate", str(config))
    assert code == 0 and "4 train" in out and "note: data.train_limit: training on 4 examples" in out
    code, out, err = run_cli("validate", str(config), "tuning.method=setfit", "data.train_limit=1")
    assert code == 2 and "problem: data.train: tuning.method=setfit needs two examples of one label" in out


def test_overrides_may_follow_the_options(run_cli, tmp_path, capsys):
    config = tmp_path / "job.yaml"
    run_job(run_cli, tmp_path, tmp_path / "unused", "train.max_steps=1")  # writes job.yaml
    code, _, err = run_cli("train", str(config), "--quiet", "train.lerning_rate=0.1")
    assert code != 0 and "unknown key 'train.lerning_rate'" in err  # read as an override
    with pytest.raises(SystemExit) as stop:
        run_cli("train", str(config), "--quiet", "stray")
    assert stop.value.code == 2
    assert "unrecognized arguments: stray" in capsys.readouterr().err
