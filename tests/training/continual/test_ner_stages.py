"""NER continued with new entity types: the tags grow (B-/I- of the new type after the parent's), the
CRF with them; the stage matrix is in entity F1 and the grown run evaluates and predicts."""

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_ner_end_to_end import ner_overrides, ner_sentences, write_conll  # noqa: E402

COMPANIES = [["Acme"], ["Globex", "Corp"], ["Initech"], ["Umbrella", "Ltd"]]


def org_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choice(COMPANIES)
        tokens = ["Shares", "of", *words, "rose", "."]
        tags = ["O", "O", "B-ORG", *["I-ORG"] * (len(words) - 1), "O", "O"]
        out.append((tokens, tags))
    return out


@pytest.mark.slow
def test_a_new_entity_type_grows_the_tags_and_the_crf(tmp_path, run_cli):
    first, second = tmp_path / "s1", tmp_path / "s2"
    s1 = ner_overrides(
        write_conll(tmp_path / "s1.conll", ner_sentences(32, 0)),
        dev := write_conll(tmp_path / "s1_dev.conll", ner_sentences(12, 1)),
        first,
        "head.crf=true",
        "train.epochs=3",
    )
    assert run_cli("train", *s1, "--quiet")[0] == 0
    s2 = ner_overrides(
        write_conll(tmp_path / "s2.conll", org_sentences(32, 0)),
        write_conll(tmp_path / "s2_dev.conll", org_sentences(12, 1)),
        second,
        "head.crf=true",
        "train.epochs=2",
        "continual.method=replay",
    )
    code, _, err = run_cli("train", *s2, "--from", str(first), "--quiet")
    assert code == 0, err
    parent = json.loads((first / "lmforge.json").read_text())["labels"]["names"]
    record = json.loads((second / "lmforge.json").read_text())
    assert record["labels"]["names"] == parent + ["B-ORG", "I-ORG"]
    continual = record["continual"]
    assert continual["metric"] == "f1" and len(continual["matrix"]) == 2
    assert all(isinstance(v, float) for row in continual["matrix"] for v in row)
    # the grown run reads stage 1's data (its tags are a subset) and predicts the new type
    code, out, err = run_cli("eval", str(second), "--data", str(dev), "--json")
    assert code == 0, err
    assert json.loads(out)["f1"] == pytest.approx(continual["matrix"][1][0])
    code, out, err = run_cli("predict", str(second), "--text", "Shares of Acme rose .")
    assert code == 0, err
    assert "entities" in json.loads(out)
