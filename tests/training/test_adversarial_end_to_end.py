"""``lmforge train`` with train.adversarial (fgm, pgd, freelb) and train.rdrop, for classification and
NER, on the transformer and LSTM families, beside the options they must work with (accumulation,
packed rows, LoRA, bf16 autocast, class weights, label smoothing, a CRF); the run log and the run
record say what was used; bad combinations fail before anything is written."""

import json

import pytest

from conftest import TINY_MODEL, tiny_overrides, write_jsonl
from training.test_ner_end_to_end import ner_sentences, write_conll

TINY_LSTM = "{family: lstm, layers: 1, hidden: 16, embedding: 16, vocab_size: 200}"
MODELS = {"transformer": TINY_MODEL, "lstm": TINY_LSTM}


def _classification(tiny_data, tmp_path, family: str, *extra: str) -> list[str]:
    config = tmp_path / "job.yaml"
    config.write_text("task: classification\n")
    out = tmp_path / "run"
    return [str(config), *tiny_overrides(tiny_data, out, "train.epochs=1", f"model={MODELS[family]}", *extra)]


def _ner(tmp_path, family: str, *extra: str) -> list[str]:
    config = tmp_path / "ner.yaml"
    config.write_text("task: token_classification\n")
    train = write_conll(tmp_path / "train.conll", ner_sentences(40, 0))
    dev = write_conll(tmp_path / "dev.conll", ner_sentences(12, 1))
    return [
        str(config),
        f"data.train={train}",
        f"data.validation={dev}",
        f"model={MODELS[family]}",
        "train.epochs=1",
        "train.batch_size=8",
        "train.lr=5e-3",
        "train.warmup=0",
        f"output={tmp_path / 'run'}",
        *extra,
    ]


def _finished(run_cli, argv, tmp_path) -> tuple[dict, dict]:
    """Train; return (the start row of metrics.jsonl, the run record's ``training``)."""
    code, _, err = run_cli("train", "--quiet", *argv)
    assert code == 0, err
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    record = json.loads((run / "lmforge.json").read_text())
    assert record["finished"] and any(r["kind"] == "final" for r in rows)
    assert all(r["loss"] == r["loss"] for r in rows if r["kind"] == "train")  # finite, not NaN
    return rows[0], record["training"]


ADVERSARIAL = "train.adversarial={method: %s, epsilon: 0.5}"


def test_fgm_classification_with_accumulation_packed_rows_and_weighted_smoothed_loss(tiny_data, tmp_path, run_cli):
    argv = _classification(
        tiny_data,
        tmp_path,
        "transformer",
        ADVERSARIAL % "fgm",
        "train.grad_accum=2",
        "train.padding_free=true",
        "train.class_weights=balanced",
        "train.label_smoothing=0.1",
    )
    start, training = _finished(run_cli, argv, tmp_path)
    expected = {"method": "fgm", "epsilon": 0.5, "alpha": 0.5, "steps": 1}
    assert start["kind"] == "start" and start["adversarial"] == expected and "rdrop" not in start
    assert training["adversarial"] == expected and "packed" in training["batches"]


def test_rdrop_ner_with_a_crf(tmp_path, run_cli):
    start, training = _finished(run_cli, _ner(tmp_path, "transformer", "train.rdrop=1.0", "head.crf=true"), tmp_path)
    assert start["rdrop"] == training["rdrop"] == 1.0 and "adversarial" not in start


@pytest.mark.slow
@pytest.mark.parametrize("family", ["transformer", "lstm"])
@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_each_method_trains_a_classifier(tiny_data, tmp_path, run_cli, family, method):
    start, _ = _finished(run_cli, _classification(tiny_data, tmp_path, family, ADVERSARIAL % method), tmp_path)
    assert start["adversarial"]["method"] == method


@pytest.mark.slow
@pytest.mark.parametrize("family", ["transformer", "lstm"])
@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_each_method_trains_a_tagger(tmp_path, run_cli, family, method):
    crf = ["head.crf=true"] if method == "pgd" else []
    start, _ = _finished(run_cli, _ner(tmp_path, family, ADVERSARIAL % method, *crf), tmp_path)
    assert start["adversarial"]["method"] == method


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["tuning.method=lora", ADVERSARIAL % "pgd"],
        ["train.precision=bf16", ADVERSARIAL % "freelb"],
        ["train.rdrop=0.5", ADVERSARIAL % "fgm", "train.grad_accum=2"],
        ["train.gradient_checkpointing=true", ADVERSARIAL % "pgd"],
    ],
    ids=["pgd-lora", "freelb-bf16", "rdrop-fgm-accumulation", "pgd-gradient-checkpointing"],
)
def test_with_other_training_options(tiny_data, tmp_path, run_cli, extra):
    _finished(run_cli, _classification(tiny_data, tmp_path, "transformer", *extra), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["transformer", "lstm"])
def test_rdrop_trains_a_classifier_and_a_tagger(tiny_data, tmp_path, run_cli, family):
    (tmp_path / "c").mkdir()
    (tmp_path / "n").mkdir()
    _finished(run_cli, _classification(tiny_data, tmp_path / "c", family, "train.rdrop=1.0"), tmp_path / "c")
    _finished(run_cli, _ner(tmp_path / "n", family, "train.rdrop=1.0"), tmp_path / "n")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["task=causal_lm", ADVERSARIAL % "fgm"], "train.adversarial: fgm is built for classification"),
        (["model={family: ngram}", ADVERSARIAL % "pgd"], "train.adversarial: the ngram family has no input embeddings"),
        (["task=causal_lm", "train.rdrop=1"], "train.rdrop: task causal_lm has no label distribution"),
    ],
)
def test_bad_combinations_fail_before_anything_is_written(tmp_path, run_cli, extra, expected):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a b c", "label": "x"}, {"text": "d e", "label": "y"}])
    config, out = tmp_path / "job.yaml", tmp_path / "run"
    config.write_text(f"data: {{train: {tmp_path / 'train.jsonl'}}}\noutput: {out}\n")
    code, _, err = run_cli("train", "--quiet", str(config), *extra)
    assert code != 0 and expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_validate_reports_the_same_problems(tmp_path, run_cli):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a b c", "label": "x"}, {"text": "d e", "label": "y"}])
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {{train: {tmp_path / 'train.jsonl'}}}\noutput: {tmp_path / 'run'}\n")
    code, out, err = run_cli("validate", str(config), "model={family: ngram}", ADVERSARIAL % "fgm")
    assert code != 0 and "problem: train.adversarial: the ngram family has no input embeddings" in out
    code, out, _ = run_cli("validate", str(config), ADVERSARIAL % "pgd", "train.rdrop=0.5")
    assert code == 0 and "ok" in out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pgd", "freelb"])
def test_two_processes_and_accumulation_reproduce_one_process(tmp_path, method):
    """Per-example perturbations do not depend on how a global batch is split: two processes (gloo;
    PGD's gradient-only passes run unsynchronised) and two accumulated micro batches take the steps
    of one batch."""
    from training.test_distributed import _job, _lmforge, _rows, _torchrun, _weights

    # the same examples in each step however it is split: batches in file order, not grouped by length
    config, setting = _job(tmp_path), [ADVERSARIAL % method, "train.group_by_length=false"]
    one = _lmforge("train", str(config), f"output={tmp_path}/one", "train.batch_size=16", *setting, "--quiet")
    assert one.returncode == 0, one.stderr
    two = _torchrun("train", str(config), f"output={tmp_path}/two", "train.batch_size=8", *setting)
    assert two.returncode == 0, two.stderr
    acc = _lmforge(
        "train", str(config), f"output={tmp_path}/acc", "train.batch_size=8", "train.grad_accum=2", *setting, "--quiet"
    )
    assert acc.returncode == 0, acc.stderr
    losses = [[r["loss"] for r in _rows(tmp_path / run, "train")] for run in ("one", "two", "acc")]
    assert len(losses[0]) == 8
    assert losses[1] == pytest.approx(losses[0], abs=1e-5) and losses[2] == pytest.approx(losses[0], abs=1e-5)
    weights = [_weights(tmp_path / run / "model") for run in ("one", "two", "acc")]
    for other in weights[1:]:
        assert max((other[k] - weights[0][k]).abs().max().item() for k in weights[0]) < 1e-5
