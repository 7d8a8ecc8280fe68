"""``lmforge attack``: the greedy word-substitution attack on a trained classification run."""

import json

import pytest

from conftest import NEG, POS, tiny_overrides
from lmforge.robustness.attack import AttackResult, summary


def test_summary_figures_by_hand():
    results = [
        AttackResult("a", "pos", "pos", True, True, "a2", "neg", [("x", "y")], words=4, queries=10),
        AttackResult("b", "pos", "pos", True, False, words=5, queries=20),
        AttackResult("c", "neg", "pos", False),
        AttackResult("d", "neg", "neg", True, True, "d2", "pos", [("x", "y"), ("z", "w")], words=8, queries=30),
    ]
    figures = summary(results)
    assert figures["clean_accuracy"] == 0.75
    assert figures["attacked_accuracy"] == 0.25
    assert figures["attack_success_rate"] == pytest.approx(2 / 3)
    assert figures["words_changed"] == pytest.approx((1 / 4 + 2 / 8) / 2)
    assert figures["queries_per_text"] == 20


def test_rates_with_nothing_to_count_are_none_not_zero():
    figures = summary([AttackResult("c", "neg", "pos", False), AttackResult("e", "pos", "neg", False)])
    assert figures["clean_accuracy"] == 0.0 and figures["attacked_accuracy"] == 0.0
    assert figures["attack_success_rate"] is None and figures["words_changed"] is None
    assert figures["queries_per_text"] is None
    held = summary([AttackResult("b", "pos", "pos", True, False, words=5, queries=20)])
    assert held["attack_success_rate"] == 0.0 and held["words_changed"] is None  # attacked, none flipped


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    from conftest import sentiment_rows, write_jsonl
    from lmforge.cli.main import main

    root = tmp_path_factory.mktemp("attack")
    data = {
        "train": write_jsonl(root / "train.jsonl", sentiment_rows(96, 0)),
        "dev": write_jsonl(root / "dev.jsonl", sentiment_rows(24, 1)),
    }
    config = root / "c.yaml"
    config.write_text("task: classification\n")
    out = root / "run"
    assert (
        main(["train", "--quiet", str(config), *tiny_overrides(data, out, "train.epochs=6", "train.precision=fp32")])
        == 0
    )
    return out, data["dev"], root


def test_attack_flips_predictions_within_the_budget(sentiment_run, run_cli):
    run, dev, root = sentiment_run
    # a "lexicon" that pairs each positive phrase word with a negative one: the attack must find flips
    pos_words = sorted({w for t in POS for w in t.split() if len(w) > 3})
    neg_words = sorted({w for t in NEG for w in t.split() if len(w) > 3})
    lexicon = root / "swap.txt"
    lexicon.write_text("".join(f"{a} {b}\n" for a, b in zip(pos_words, neg_words)))
    out = root / "attack.jsonl"
    code, stdout, err = run_cli(
        "attack",
        str(run),
        "--data",
        str(dev),
        "--source",
        str(lexicon),
        "--budget",
        "2",
        "--min-similarity",
        "0",
        "--output",
        str(out),
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    figures, results = rows[0]["summary"], rows[1:]
    assert len(results) == 24 and "accuracy under attack" in stdout
    assert figures["attacked_accuracy"] <= figures["clean_accuracy"]
    flips = [r for r in results if r["flipped"]]
    assert flips, "swapping sentiment words must flip some predictions"
    for r in flips:
        assert r["attacked"] and 1 <= len(r["changed"]) <= 2 and r["adversarial_label"] != r["gold"]
        before, after = r["text"].split(), r["adversarial"].split()
        assert len(before) == len(after)
        assert sum(a != b for a, b in zip(before, after)) == len(r["changed"])
    assert all(not r["flipped"] for r in results if not r["attacked"])
    assert all(r["changed"] == [] and r["adversarial"] is None for r in results if not r["flipped"])


def test_attack_errors_are_one_line(sentiment_run, run_cli, tmp_path):
    run, dev, _ = sentiment_run
    code, _, err = run_cli("attack", str(run), "--data", str(dev), "--budget", "0")
    assert code != 0 and "--budget" in err and err.count("\n") == 1
    code, _, err = run_cli("attack", str(run), "--data", str(tmp_path / "missing.jsonl"), "--min-similarity", "0")
    assert code != 0 and "missing.jsonl" in err and "Traceback" not in err
    for limit in ("0", "-3"):
        code, _, err = run_cli("attack", str(run), "--data", str(dev), "--limit", limit)
        assert code == 2 and err.strip() == f"lmforge: error: --limit {limit}: give 1 or more rows"
