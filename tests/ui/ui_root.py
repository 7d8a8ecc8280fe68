"""A runs root for the UI tests: copies of the served tiny runs (sentiment, NER, chat) and a real
two-trial ``lmforge tune`` study, shared by the API and browser tests (a module the tests import
the fixture from, as tests/serving/served.py)."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from served import runs  # noqa: E402,F401  (fixture: tiny classification, NER and chat runs)

from conftest import TINY_MODEL, sentiment_rows, write_jsonl  # noqa: E402
from lmforge.cli.main import main  # noqa: E402


@pytest.fixture(scope="session")
def ui_root(runs, tmp_path_factory) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("ui") / "runs"
    for name, folder in runs.items():
        shutil.copytree(folder, root / name)
    data = tmp_path_factory.mktemp("ui-data")
    write_jsonl(data / "train.jsonl", sentiment_rows(48, 0))
    write_jsonl(data / "dev.jsonl", sentiment_rows(16, 1))
    config = data / "tune.yaml"
    config.write_text(
        f"task: classification\ndata: {{train: {data}/train.jsonl, validation: {data}/dev.jsonl}}\n"
        f"model: {TINY_MODEL}\n"
        "train: {epochs: 1, batch_size: 8, lr: 3.0e-3, warmup: 0, threads: 1}\n"
        f"output: {root}/study\n"
        "tune: {space: {train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}}, pruner: none}\n",
        encoding="utf-8",
    )
    assert main(["tune", str(config), "--trials", "2", "--quiet"]) == 0
    return root


def tiny_job_yaml(folder: Path, epochs: int = 1) -> str:
    """A config for a job started from the UI: a tiny sentiment model, seconds to train."""
    train = write_jsonl(folder / "job_train.jsonl", sentiment_rows(48, 0))
    return (
        f"task: classification\ndata: {{train: {train}, split: 0.25}}\nmodel: {TINY_MODEL}\n"
        f"train: {{epochs: {epochs}, batch_size: 8, lr: 5.0e-3, warmup: 0, threads: 1}}\n"
    )
