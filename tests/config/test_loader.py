from pathlib import Path

import pytest

from lmforge.config import load_config
from lmforge.config.loader import apply_overrides
from lmforge.errors import ConfigError

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
