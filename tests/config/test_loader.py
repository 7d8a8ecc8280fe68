from pathlib import Path

import pytest

from lmforge.config import JobConfig, config_to_dict, load_config
from lmforge.config.loader import apply_overrides
from lmforge.errors import ConfigError, RunFolderError

ROOT = Path(__file__).resolve().parents[2]


def test_overrides_parse_yaml_values():
    data = apply_overrides(
        {}, ["train.lr=3e-5", "train.eval_every=epoch", "data.label_names=[neg, pos]", "tuning.target=[query, value]"]
    )
    assert data == {
        "train": {"lr": 3e-5, "eval_every": "epoch"},
        "data": {"label_names": ["neg", "pos"]},
        "tuning": {"target": ["query", "value"]},
    }


def test_unknown_key_in_file_names_file_and_suggests(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("data: {train: t.jsonl}\ntrain: {lerning_rate: 0.1, lr: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "train.lerning_rate" in message
    assert "\n" not in message


def test_misspelt_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        load_config(None, ["data.train=x.jsonl", "train.lrr=3"])


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"override 'train.batch_size=many': train.batch_size: .*'many'"):
        load_config(None, ["data.train=x.jsonl", "train.batch_size=many"])


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: classification\ndata: {train: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")


def test_split_and_validation_exclusive():
    with pytest.raises(ConfigError, match="either data.validation or data.split"):
        load_config(None, ["data.train=a.jsonl", "data.validation=b.jsonl", "data.split=0.1"])


def test_string_model_promoted_by_dotted_override():
    config = load_config(None, ["data.train=a.jsonl", "model=minilm", "model.family=transformer"])
    assert config.model.path == "minilm"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples").glob("*.yaml")) + [ROOT / "src/lmforge/configs/demo.yaml"], ids=lambda p: p.name
)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.data.train is not None


def test_train_max_length_is_read_as_data_max_length():
    import logging

    notes: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: notes.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("lmforge")  # lmforge's own logger does not propagate (runtime.py)
    logger.addHandler(handler)
    try:
        config = load_config(None, ["data.train=x.jsonl", "train.max_length=32"])
    finally:
        logger.removeHandler(handler)
    assert config.data.max_length == 32
    assert "max_length" not in config_to_dict(config)["train"]
    assert any("deprecated" in note and "data.max_length" in note for note in notes)


def test_train_and_data_max_length_that_disagree_are_refused():
    with pytest.raises(ConfigError, match=r"train.max_length \(32\) and data.max_length \(64\) disagree"):
        load_config(None, ["data.train=x.jsonl", "train.max_length=32", "data.max_length=64"])


def test_a_run_folder_config_of_the_last_release_resumes(tmp_path):
    """A config.yaml written before data.max_length and the per-family specs (flat model spec,
    train.max_length) is the same job as its current form: resume is not refused."""
    import yaml

    from lmforge.tracking.run_folder import RunFolder

    old = yaml.safe_load((Path(__file__).parents[1] / "fixtures" / "runs_v1" / "ner" / "config.yaml").read_text())
    assert "max_length" in old["train"] and "classifier" in old["model"]
    run = RunFolder(tmp_path / "run")
    run.write_config(old)
    current = config_to_dict(JobConfig.model_validate(old))
    run.check_writable(current, resume=True, overwrite=False)  # no error
    changed = dict(current, data={**current["data"], "max_length": 64})
    with pytest.raises(RunFolderError, match="data.max_length: 128 -> 64"):
        run.check_writable(changed, resume=True, overwrite=False)


def test_a_boolean_ema_asks_for_a_decay():
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="train.ema: give the averaging decay, e.g. 0.999 .*not true"):
        load_config(None, ["data.train=x.jsonl", "train.ema=true"])
    assert load_config(None, ["data.train=x.jsonl", "train.ema=0.99"]).train.ema == 0.99
