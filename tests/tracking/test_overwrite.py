"""overwrite=true loses nothing it should not: files lmforge did not write stay, and the run it
replaces is kept aside until the new run has written its first checkpoint (or its end), and put
back when the new run fails before that (issue 32)."""

import json
from pathlib import Path

import pytest

from conftest import tiny_overrides
from lmforge.errors import RunFolderError
from lmforge.tracking.run_folder import PREVIOUS, RunFolder


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".lmforge.lock" not in p.name
    }


@pytest.fixture
def finished(tiny_data, run_cli):
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\n")
    out = tiny_data["dir"] / "run"
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, out), "--quiet")
    assert code == 0, err
    (out / "notes.md").write_text("my notes on this run\n")  # the user's, beside the run
    (out / "plots").mkdir()
    (out / "plots" / "mine.png").write_bytes(b"png")
    return config, out


def test_overwrite_replaces_the_run_and_nothing_else(tiny_data, run_cli, finished):
    config, out = finished
    before = json.loads((out / "lmforge.json").read_text())["created"]
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, out, "train.seed=5"), "overwrite=true")
    assert code == 0, err
    assert "kept in .lmforge-previous until this run's first checkpoint" in err
    assert (out / "notes.md").read_text() == "my notes on this run\n" and (out / "plots" / "mine.png").is_file()
    assert not (out / PREVIOUS).exists()  # the new run finished: the old one is gone
    record = json.loads((out / "lmforge.json").read_text())
    assert record["finished"] and record["created"] >= before


def test_a_new_run_failing_before_its_first_checkpoint_puts_the_old_one_back(
    tiny_data, run_cli, finished, monkeypatch, capsys
):
    config, out = finished
    old = snapshot(out)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in the first step")

    monkeypatch.setattr("lmforge.training.recipe.run_loop", broken)
    with pytest.raises(RuntimeError, match="out of memory"):  # not lmforge's error: it is raised on
        run_cli("train", str(config), *tiny_overrides(tiny_data, out, "train.seed=5"), "overwrite=true")
    assert "is back" in capsys.readouterr().err
    assert snapshot(out) == old  # byte for byte, the user's files included
    assert not (out / PREVIOUS).exists()


def test_a_killed_overwrite_keeps_the_run_it_was_replacing(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    (run.path / "config.yaml").write_text("old")
    (run.path / "model").mkdir()
    (run.path / "model" / "w").write_text("old weights")
    (run.path / "mine.txt").write_text("user")
    assert run.set_aside() == run.path / PREVIOUS
    assert sorted(p.name for p in run.path.iterdir()) == [PREVIOUS, "mine.txt"]
    (run.path / "config.yaml").write_text("new, killed before a checkpoint")
    # the next overwrite: the killed run's files go, the run before it stays aside
    assert run.set_aside() == run.path / PREVIOUS
    assert not (run.path / "config.yaml").exists()
    assert (run.path / PREVIOUS / "config.yaml").read_text() == "old"
    # a run without overwrite refuses the folder, naming what is there
    with pytest.raises(RunFolderError, match="interrupted"):
        run.check_writable({"task": "classification"}, resume=False, overwrite=False)
    assert run.restore_previous()
    assert (run.path / "model" / "w").read_text() == "old weights" and (run.path / "mine.txt").read_text() == "user"
