"""Per-family model specs: the family picks the spec, and a key of another family (or of none) is a
one-line error that names the key and the family."""

import re

import pytest

from lmforge.config import load_config
from lmforge.config.loader import config_to_dict
from lmforge.config.model_spec import MODEL_SPECS, LstmSpec, NgramSpec, TransformerSpec
from lmforge.config.reference import markdown
from lmforge.config.schema import JobConfig
from lmforge.errors import ConfigError

DATA = "data.train=a.jsonl"


def _error(tmp_path, model: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(f"data: {{train: a.jsonl}}\nmodel: {model}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    "model,key,family,belongs",
    [
        ("{family: transformer, classifier: nbsvm}", "classifier", "transformer", "ngram"),
        ("{arch: bert, embedding: 32}", "embedding", "transformer", "lstm"),  # no family: a transformer
        ("{family: lstm, heads: 4}", "heads", "lstm", "transformer"),
        ("{family: lstm, order: 5}", "order", "lstm", "ngram"),
        ("{family: ngram, hidden: 64}", "hidden", "ngram", "transformer and lstm"),
        ("{family: ngram, path: minilm}", "path", "ngram", "transformer"),
    ],
)
def test_a_key_of_another_family_names_the_key_and_the_family(tmp_path, model, key, family, belongs):
    message = _error(tmp_path, model)
    own = ", ".join(name for name in MODEL_SPECS[family].model_fields if name != "family")
    assert message.startswith(f"model.{key}: not a setting of the {family} family (its settings: {own})")
    assert message.endswith(f"model.{key} applies to the {belongs} famil{'ies' if ' and ' in belongs else 'y only'}")


def test_a_misspelt_key_gets_the_family_and_the_closest_key(tmp_path):
    message = _error(tmp_path, "{family: lstm, embeding: 32}")
    assert message.startswith("model.embeding: not a setting of the lstm family (its settings: layers, hidden,")
    assert message.endswith("did you mean 'model.embedding'?")
    assert _error(tmp_path, "{family: ngram, colour: red}").startswith("model.colour: not a setting of the ngram")


def test_unknown_family_names_the_known_ones(tmp_path):
    assert (
        _error(tmp_path, "{family: rnn}")
        == "model.family: unknown model family 'rnn' (known: transformer, lstm, ngram)"
    )
    assert _error(tmp_path, "7") == "model: a bundled alias, a folder or a spec {family: ...} (got 7)"


def test_the_family_picks_the_spec_and_transformer_is_the_default():
    assert load_config(None, [DATA]).model == "minilm"  # a bare string stays an alias or folder
    assert load_config(None, [DATA, "model={path: minilm}"]).model == TransformerSpec(path="minilm")
    assert type(load_config(None, [DATA, "model={arch: bert}"]).model) is TransformerSpec
    assert load_config(None, [DATA, "model={family: lstm, embedding: 32}"]).model == LstmSpec(embedding=32)
    assert load_config(None, [DATA, "model={family: ngram, order: 5}"]).model == NgramSpec(order=5)


def test_wrong_values_inside_a_family_still_name_the_key():
    with pytest.raises(ConfigError, match=r"model.hidden: Input should be a valid integer.*\(got 'wide'\)"):
        load_config(None, [DATA, "model={family: lstm, hidden: wide}"])


@pytest.mark.parametrize(
    "model,message",
    [
        ("{family: transformer, hidden: 30, heads: 4}", "model.hidden (30) must be a multiple of model.heads (4)"),
        ("{family: lstm, segmenter: [jieba, jieba]}", "model.segmenter: a segmenter is named twice"),
        ("{family: ngram, char_ngrams: [5, 2]}", "model.char_ngrams: [5, 2] must be [min, max] with 1 <= min <= max"),
        (
            "{family: ngram, word_ngrams: null, char_ngrams: null}",
            "model.word_ngrams and model.char_ngrams cannot both be null",
        ),
    ],
)
def test_each_family_checks_its_own_settings(model, message):
    expected = f"override 'model={model}': {message}"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        load_config(None, [DATA, f"model={model}"])


@pytest.mark.parametrize("family", list(MODEL_SPECS))
def test_a_resolved_config_loads_again(family):
    config = JobConfig(data={"train": "a.jsonl"}, model={"family": family})
    again = JobConfig(**config_to_dict(config))
    assert again.model == config.model and type(again.model) is MODEL_SPECS[family]


def test_a_flat_spec_written_before_per_family_specs_loads():
    """A run folder's config.yaml from an older lmforge spells out every family's keys."""
    flat = {
        "family": "lstm", "path": None, "arch": None, "layers": 1, "hidden": 32, "embedding": 16,
        "bigram_buckets": 0, "tie_embeddings": True, "char_cnn": 0, "lexicon": None, "segmenter": None,
        "char_vectors": None, "embedding_init": None, "heads": 2, "intermediate": None, "vocab_size": 200,
        "max_position": 512, "lowercase": True, "extend_vocab": False, "classifier": "logreg",
        "word_ngrams": [1, 2], "char_ngrams": [2, 5], "min_df": 2, "max_features": None, "C": 1.0, "c1": 0.1,
        "c2": 0.05, "max_iterations": 100, "window": 2, "unit": "word", "order": 3, "discount": None,
        "min_count": 1,
    }  # fmt: skip
    model = JobConfig(data={"train": "a.jsonl"}, model=flat).model
    assert model == LstmSpec(layers=1, hidden=32, embedding=16, vocab_size=200)
    with pytest.raises(ConfigError, match="model.classifier: not a setting of the lstm family"):
        load_config(None, [DATA, "model={family: lstm, classifier: logreg}"])  # a user's spec is not migrated


def test_reference_has_a_table_per_family():
    text = markdown()
    for family, spec in MODEL_SPECS.items():
        table = text.split(f"`model: {{family: {family}, …}}`")[1].split("\n\n`")[0]
        keys = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
        assert keys == [f"model.{name}" for name in spec.model_fields if name != "family"]
    assert "| `model.classifier` |" not in text.split("`model: {family: transformer")[0]
