"""n-gram family mistakes end in one line naming the key or the head, with a non-zero exit."""

import pytest


@pytest.mark.parametrize(
    "model,named",
    [
        ("{family: lstm, order: 5}", "model.order applies to the ngram family only"),
        ("{family: transformer, classifier: nbsvm}", "model.classifier applies to the ngram family only"),
        ("{family: ngram, classifer: nbsvm}", "classifer"),
        ("{family: ngram, classifier: svm}", "classifier"),
        ("{family: ngram, char_ngrams: [5, 2]}", "model.char_ngrams"),
        ("{family: ngram, word_ngrams: null, char_ngrams: null}", "cannot both be null"),
        ("{family: ngram, path: minilm}", "model.path: not a setting of the ngram family"),
    ],
)
def test_bad_model_spec_is_one_line(model, named, tiny_data, tmp_path, run_cli):
    config = tmp_path / "job.yaml"
    config.write_text("task: classification\n")
    code, out, err = run_cli(
        "train", str(config), f"data.train={tiny_data['train']}", f"model={model}", f"output={tmp_path / 'run'}"
    )
    assert code != 0 and named in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_ngram_has_no_masked_lm_head(tiny_data, tmp_path, run_cli):
    config = tmp_path / "job.yaml"
    config.write_text("task: masked_lm\n")
    code, _, err = run_cli(
        "train", str(config), f"data.train={tiny_data['train']}", "model={family: ngram}", f"output={tmp_path / 'run'}"
    )
    assert code != 0 and "the ngram family has no 'masked_lm' head" in err


def test_resolved_config_of_another_family_loads_again():
    """A run's config.yaml spells every model key out, ngram ones at their defaults included."""
    from lmforge.config.loader import config_to_dict
    from lmforge.config.schema import JobConfig

    config = JobConfig(data={"train": "a.jsonl"}, model={"family": "lstm"})
    assert JobConfig(**config_to_dict(config)).model.family == "lstm"
