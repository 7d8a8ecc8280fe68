from collections import Counter

import pytest

from lmforge.data.examples import LabelSet, stratified_split
from lmforge.data.readers import Problems
from lmforge.errors import DataError


def test_labels_collected_sorted_numerically():
    labels = LabelSet.build(["10", "2", "1", "2"], None)
    assert labels.names == ["1", "2", "10"]


def test_label_names_list_indexes_integer_labels():
    labels = LabelSet.build(["1", "0", "1"], ["negative", "positive"])
    assert labels.names == ["negative", "positive"] and labels.raw_to_name["1"] == "positive"


def test_label_names_list_for_string_labels_in_sorted_order():
    labels = LabelSet.build(["pos", "neg"], ["negative", "positive"])
    assert labels.raw_to_name == {"neg": "negative", "pos": "positive"}


def test_label_names_mapping_and_missing_raw_label():
    labels = LabelSet.build(["a", "b"], {"a": "alpha", "b": "beta"})
    assert labels.names == ["alpha", "beta"]
    with pytest.raises(DataError, match=r"no name for the raw label\(s\) 'c'"):
        LabelSet.build(["a", "c"], {"a": "alpha"})


def test_unseen_label_is_reported_with_place():
    labels = LabelSet.build(["neg", "pos"], None)
    with pytest.raises(DataError, match=r"dev.jsonl:7: label 'neutral' never appears in the training data"):
        labels.id_of("neutral", "dev.jsonl:7", Problems())
    assert labels.id_of("pos", "x", Problems()) == 1


def test_stratified_split_is_seeded_and_stratified():
    labels = [0] * 80 + [1] * 20
    train, held = stratified_split(labels, 0.1, seed=3)
    assert stratified_split(labels, 0.1, seed=3) == (train, held)
    assert stratified_split(labels, 0.1, seed=4) != (train, held)
    assert Counter(labels[i] for i in held) == {0: 8, 1: 2}
    assert sorted(train + held) == list(range(100))


def test_split_keeps_a_rare_class_in_both_parts():
    train, held = stratified_split([0] * 50 + [1] * 2, 0.1, seed=0)
    assert [i for i in held if i >= 50] and [i for i in train if i >= 50]


def test_a_source_limit_reads_only_the_first_rows(tmp_path):
    from lmforge.config.schema import DataConfig, DataSource
    from lmforge.data.examples import read_text_examples

    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    examples = read_text_examples(DataSource(path=str(path), limit=3), DataConfig(), Problems(), False)
    assert [ex.text for ex in examples] == ["line 0", "line 1", "line 2"]
    examples = read_text_examples(DataSource(path=str(path), offset=8, limit=3), DataConfig(), Problems(), False)
    assert [ex.text for ex in examples] == ["line 8", "line 9"]
