"""BLEU equals sacrebleu's, ROUGE equals rouge-score's, on real-looking English; Chinese is scored
character by character."""

import json
import random

import pytest

from conftest import SHARED_DATA
from lmforge.evaluation.text_overlap import corpus_bleu, exact_match, generation_metrics, rouge, tokenize_13a

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

SENTENCES = [
    "The cat sat on the mat.",
    "It costs $3.50, or 3,000 yen -- cheap!",
    'Dr. Smith\'s 2-year-old (aged 2) said "hi".',
    "AT&T &amp; friends: 10-20% off; e-mail me@x.org/now?",
    "Paris is the capital of France.",
    "A quick brown fox jumps over the lazy dog",
    "",
    "Numbers: 1.5, 2,000 and 3-4 items.",
]


def _pairs(seed: int, n: int = 60):
    rng = random.Random(seed)
    words = " ".join(SENTENCES).split()
    refs, preds = [], []
    for _ in range(n):
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))
        pred = " ".join(w for w in ref.split() if rng.random() > 0.3) + (
            " " + rng.choice(words) if rng.random() > 0.5 else ""
        )
        refs.append(ref)
        preds.append(pred.strip())
    return preds, refs


def test_13a_tokens_match_sacrebleu():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    for line in SENTENCES:
        assert tokenize_13a(line) == Tokenizer13a()(line).split()


@pytest.mark.parametrize("seed", range(5))
def test_bleu_equals_sacrebleu(seed):
    preds, refs = _pairs(seed)
    assert corpus_bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_rouge_equals_rouge_score(seed):
    preds, refs = _pairs(seed)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score(r, p) for p, r in zip(preds, refs)]
    ours = rouge(preds, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(sum(s[key].fmeasure for s in scores) / len(scores), abs=1e-12)


def test_real_alpaca_answers_bleu_and_rouge_parity():
    path = SHARED_DATA / "instructions" / "alpaca_en_demo.json"
    if not path.exists():
        pytest.skip("needs ../shared/data")
    rows = json.loads(path.read_text(encoding="utf-8"))[:80]
    refs = [r["output"] for r in rows]
    preds = [" ".join(r["output"].split()[: max(1, len(r["output"].split()) // 2)]) for r in rows]
    assert corpus_bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)) / len(refs)
    assert rouge(preds, refs)["rougeL"] == pytest.approx(expected, abs=1e-12)


def test_chinese_is_scored_by_character():
    refs, preds = ["今天天气很好"], ["今天天气不错"]
    scores = generation_metrics(preds, refs)
    assert scores["chinese_tokenization"] is True
    assert scores["rouge1"] == pytest.approx(4 / 6)  # 今 天 天 气 of six characters each
    assert rouge(preds, refs)["rouge1"] == 0.0  # rouge-score's own tokenizer sees nothing
    assert 0 < scores["bleu"] < 100 and exact_match(["Paris. "], ["paris."]) == 1.0
