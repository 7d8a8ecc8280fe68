"""Continual stages end to end on a tiny BERT: a run continues its parent (same weights at the start,
the head grown with the old rows kept), records its lineage and stage matrix, replays and anchors on
earlier stages; bad settings are one line naming the key or path."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL, write_jsonl
from lmforge.config import load_config
from lmforge.errors import ConfigError, RunFolderError
from lmforge.training.finish import cleanup
from lmforge.training.job import setup
from lmforge.training.loop import run_loop
from lmforge.training.signals import StopRequest

WORDS = {
    "sport": ["match", "goal", "team", "coach", "league"],
    "tech": ["phone", "software", "chip", "app", "robot"],
    "food": ["pizza", "bread", "soup", "cheese", "apple"],
    "music": ["song", "band", "guitar", "album", "concert"],
}
FILLER = ["the", "a", "new", "big", "today"]


def _rows(labels: list[str], n: int, seed: int, noise: bool = False) -> list[dict]:
    """Texts of three topic words and two fillers; ``noise``: one word of another topic too (stage 1's
    tokenizer, trained on its texts, then knows every topic's words)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(WORDS[label]) for _ in range(3)] + [rng.choice(FILLER) for _ in range(2)]
        if noise:
            words.append(rng.choice([w for k, ws in WORDS.items() if k not in labels for w in ws]))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def _stage(folder: Path, name: str, labels: list[str]) -> list[str]:
    train = write_jsonl(folder / f"{name}_train.jsonl", _rows(labels, 32, 1, noise=name == "s1"))
    dev = write_jsonl(folder / f"{name}_dev.jsonl", _rows(labels, 12, 2))
    return [f"data.train={train}", f"data.validation={dev}"]


def _config(folder: Path, name: str, labels: list[str], *extra: str):
    job = folder / f"{name}.yaml"
    job.write_text(
        "task: classification\n"
        + ("" if any(e.startswith("continual.parent") for e in extra) else f"model: {TINY_MODEL}\n")
        + "train: {epochs: 1, batch_size: 8, lr: 3.0e-3, warmup: 0, log_every: 1}\n",
        encoding="utf-8",
    )
    return load_config(job, [*_stage(folder, name, labels), f"output={folder / name}", *extra])


def _train(config) -> Path:
    job = setup(config)
    with StopRequest() as stop:
        state = run_loop(job, stop, quiet=True)
    cleanup(job, state)
    return job.run.path


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("continual")
    return _train(_config(folder, "s1", ["sport", "tech"]))


def test_a_continued_run_starts_from_its_parent_with_the_head_grown(stage1):
    folder = stage1.parent
    job = setup(_config(folder, "s2-start", ["food", "music"], f"continual.parent={stage1}"))
    assert job.data.labels.names == ["sport", "tech", "food", "music"]
    assert {ex.label_id for ex in job.data.train} == {2, 3}  # the new stage's examples, in the grown set
    parent = load_file(str(stage1 / "best" / "model.safetensors"))
    model = job.accelerator.unwrap_model(job.model).state_dict()
    for name, saved in parent.items():
        if name.startswith("classifier."):
            assert model[name].shape[0] == 4 and torch.equal(model[name][:2], saved), name
        else:
            assert torch.equal(model[name], saved), name
    assert model["classifier.weight"][2:].abs().sum() > 0
    record = json.loads((folder / "s2-start" / "lmforge.json").read_text())
    assert record["record_version"] == 3 and record["continual"]["parent"] == str(stage1.resolve())
    # measured before training: stage 1's own row, the start on stage 2, the untrained model
    matrix = record["continual"]["matrix"]
    assert len(matrix) == 1 and len(matrix[0]) == 2 and all(isinstance(v, float) for v in matrix[0])
    assert len(record["continual"]["baseline"]) == 2


@pytest.mark.slow
def test_stages_record_lineage_matrix_replay_and_fisher(stage1):
    folder = stage1.parent
    s2 = _train(_config(folder, "s2", ["food", "music"], f"continual.parent={stage1}", "continual.method=ewc"))
    record = json.loads((s2 / "lmforge.json").read_text())["continual"]
    assert record["stage"] == 2 and record["method"] == "ewc" and record["fisher_stages"] == [1]
    assert [s["run"] for s in record["stages"]] == [str(stage1.resolve()), str(s2.resolve())]
    assert record["stages"][1]["data"]["train"] == str((folder / "s2_train.jsonl").resolve())
    assert record["stages"][0]["labels"] == ["sport", "tech"] and record["stages"][1]["labels"] == ["food", "music"]
    matrix = record["matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 and None not in row for row in matrix)
    assert record["bwt"] == pytest.approx(matrix[1][0] - matrix[0][0])
    assert record["fwt"] == pytest.approx(matrix[0][1] - record["baseline"][1])
    # the stage's own validation score is the run's
    results = json.loads((s2 / "eval_results.json").read_text())["validation"]
    assert matrix[1][1] == pytest.approx(results["accuracy"])
    fisher = load_file(str(s2 / "continual" / "fisher.safetensors"))
    assert fisher["classifier.weight"].shape == (2, 32) and fisher["classifier.weight"].sum() > 0
    line = [json.loads(x) for x in (s2 / "metrics.jsonl").read_text().splitlines() if '"continual"' in x]
    assert line and line[0]["matrix"] == matrix
    assert "Continual learning" in (s2 / "report.html").read_text()

    # Stage 3 continues stage 2 with replay: samples from both earlier stages; and with EWC the
    # Fisher information of stages 1 and 2 adds up.
    s3 = _train(
        _config(
            folder,
            "s3",
            ["sport", "music"],
            f"continual.parent={s2}",
            "continual.method=replay",
            "continual.replay_size=10",
        )
    )
    record = json.loads((s3 / "lmforge.json").read_text())["continual"]
    assert [s["stage"] for s in record["stages"]] == [1, 2, 3]
    assert [(r["stage"], r["examples"]) for r in record["replay"]] == [(1, 5), (2, 5)]
    replayed = (s3 / "continual" / "replayed.txt").read_text().splitlines()
    assert sum("s1_train" in w for w in replayed) == 5 and sum("s2_train" in w for w in replayed) == 5
    assert len(record["matrix"]) == 3 and all(len(row) == 3 for row in record["matrix"])
    assert record["matrix"][0] == [*matrix[0], None]  # stage 3 did not exist after stage 1
    assert record["matrix"][1][:2] == matrix[1] and isinstance(record["matrix"][1][2], float)

    s3e = _train(_config(folder, "s3e", ["sport", "music"], f"continual.parent={s2}", "continual.method=ewc"))
    assert json.loads((s3e / "lmforge.json").read_text())["continual"]["fisher_stages"] == [1, 2]


def test_a_missing_parent_is_one_line_naming_the_path(tmp_path, run_cli):
    code, _, err = run_cli("train", str(_write(tmp_path)), "--from", str(tmp_path / "nowhere"))
    assert code == 2 and err.count("\n") == 1
    assert "continual.parent" in err and "nowhere: no such run folder" in err


def test_a_parent_of_another_task_is_refused(stage1, tmp_path):
    other = tmp_path / "ner"
    shutil.copytree(stage1, other)
    record = json.loads((other / "lmforge.json").read_text())
    (other / "lmforge.json").write_text(json.dumps({**record, "task": "token_classification"}))
    with pytest.raises(ConfigError, match="is a token_classification run and this job's task is classification"):
        setup(_config(tmp_path, "s2", ["food", "music"], f"continual.parent={other}"))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(stage1, unfinished)
    (unfinished / "lmforge.json").write_text(json.dumps({**record, "finished": False}))
    with pytest.raises(RunFolderError, match="did not finish"):
        setup(_config(tmp_path, "s2", ["food", "music"], f"continual.parent={unfinished}"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("continual.method=forget", "continual.method: unknown continual-learning method 'forget'"),
        ("continual.ewc_lambda=-1", "continual.ewc_lambda"),
        ("continual.metric=bleu", "continual.metric: 'bleu' is not reported"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(stage1, tmp_path, run_cli, override, message):
    code, _, err = run_cli("train", str(_write(tmp_path)), override, "--from", str(stage1))
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_method_without_a_parent_and_lora_per_task_without_lora_are_refused(tmp_path, run_cli, stage1):
    code, _, err = run_cli("train", str(_write(tmp_path)), "continual.method=replay")
    assert code == 2 and "continual.method: replay needs continual.parent" in err
    code, _, err = run_cli("train", str(_write(tmp_path)), "continual.method=lora_per_task", "--from", str(stage1))
    assert code == 2 and "set tuning.method: lora" in err
    code, _, err = run_cli(
        "train", str(_write(tmp_path)), "continual.method=ewc", "tuning.method=lora", "--from", str(stage1)
    )
    assert code == 2 and "use tuning.method full or freeze" in err
    code, _, err = run_cli("train", str(_write(tmp_path)), f"output={stage1}", "overwrite=true", "--from", str(stage1))
    assert code == 2 and "is this job's output" in err
    assert (stage1 / "lmforge.json").is_file()  # the parent is untouched


def _write(folder: Path) -> Path:
    train = write_jsonl(folder / "t.jsonl", _rows(["food", "music"], 16, 0))
    job = folder / "cli.yaml"
    job.write_text(
        f"task: classification\ndata: {{train: {train}, split: 0.25}}\n"
        f"train: {{epochs: 1, batch_size: 8}}\noutput: {folder / 'out'}\n",
        encoding="utf-8",
    )
    return job


@pytest.mark.slow
def test_lora_per_task_keeps_a_model_per_stage(stage1, tmp_path):
    # stage 1 on a "pretrained" folder (the tiny run's best model), stage 2 an adapter over it
    base = _config(tmp_path, "p1", ["sport", "tech"])
    first = _train(base.model_copy(update={"model": str(stage1 / "best")}))
    second = _train(
        _config(
            tmp_path,
            "p2",
            ["food", "music"],
            f"continual.parent={first}",
            "continual.method=lora_per_task",
            "tuning.method=lora",
        )
    )
    record = json.loads((second / "lmforge.json").read_text())
    assert record["labels"]["names"] == ["food", "music"]  # its own labels: a model per stage
    continual = record["continual"]
    assert continual["protocol"] == "task-incremental"
    # stage 1 is evaluated with stage 1's own model: nothing forgotten, by construction
    assert continual["matrix"][1][0] == continual["matrix"][0][0] and continual["bwt"] == 0.0
    # the base stayed frozen: the saved model is the base plus the merged adapter, the head new
    assert record["parameters"]["trainable"] < record["parameters"]["total"] / 2


def test_from_and_another_parent_on_the_command_line_are_refused(tmp_path, run_cli):
    config = str(_write(tmp_path))
    code, _, err = run_cli("train", config, f"continual.parent={tmp_path / 'a'}", "--from", str(tmp_path / "b"))
    assert code == 2 and err.count("\n") == 1 and "two parents given; keep one" in err, err
    code, _, err = run_cli("train", config, f"continual.parent={tmp_path / 'a'}", "--from", f"{tmp_path / 'a'}/")
    assert "two parents" not in err  # the same folder written two ways: no conflict (it fails later: no run)
