"""A fixture of the export tests: a tiny trained classification run (imported by the test modules;
a conftest.py here would shadow the root one that `from conftest import` reads)."""

import pytest

from conftest import tiny_overrides


@pytest.fixture
def tiny_run(tiny_data, run_cli):
    """A 2-layer BERT trained for two epochs on the tiny sentiment data."""
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\n")
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, tiny_data["dir"] / "run"), "--quiet")
    assert code == 0, err
    return tiny_data["dir"] / "run"
