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


def test_incomplete_types_is_refused_outside_token_classification(tmp_path):
    from lmforge.config.schema import DataConfig, DataSource
    from lmforge.data.examples import read_text_examples
    from lmforge.errors import ConfigError

    path = tmp_path / "t.txt"
    path.write_text("a line\n")
    with pytest.raises(ConfigError, match="incomplete_types applies to token_classification training data only"):
        read_text_examples(DataSource(path=str(path), incomplete_types=["ORG"]), DataConfig(), Problems(), False)


def test_train_limit_sample_is_seeded_and_class_balanced():
    from lmforge.data.examples import TextExample, limited_sample

    examples = [TextExample(f"t{i}", label_id=0 if i < 90 else (1 if i < 97 else 2)) for i in range(100)]
    picked = limited_sample(examples, 12, seed=3)
    counts = Counter(ex.label_id for ex in picked)
    assert counts == {2: 3, 1: 4, 0: 5}  # class 2 has 3 only; the shortfall is shared
    assert picked == limited_sample(examples, 12, seed=3) and picked != limited_sample(examples, 12, seed=4)
    assert [int(ex.text[1:]) for ex in picked] == sorted(int(ex.text[1:]) for ex in picked)
    unlabelled = [TextExample(f"u{i}") for i in range(10)]
    assert len(limited_sample(unlabelled, 4, seed=0)) == 4 and limited_sample(unlabelled, 40, 0) == unlabelled


def test_train_limit_end_to_end(tmp_path, run_cli, tiny_data):
    import json

    from conftest import tiny_overrides

    config = tmp_path / "c.yaml"
    config.write_text("task: classification\n")
    out = tmp_path / "run"
    code, _, err = run_cli(
        "train", str(config), *tiny_overrides(tiny_data, out, "train.epochs=1", "data.train_limit=8")
    )
    assert code == 0, err
    assert "data.train_limit: training on 8 examples" in err
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["examples"] == 8
