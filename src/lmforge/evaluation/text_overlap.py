"""Metrics of generated text against references: BLEU, ROUGE-1/2/L and exact match.

BLEU is corpus BLEU as ``sacrebleu`` computes it by default (Papineni et al., 2002; Post, 2018): the
13a tokenizer of the WMT mteval script, clipped n-gram precisions up to 4, exponential smoothing of
zero counts, brevity penalty, on a 0-100 scale. ROUGE is what Google's ``rouge-score`` computes
(Lin, 2004) without stemming: lowercased alphanumeric tokens, F-measure of n-gram overlap (1, 2) and
of the longest common subsequence (L), averaged over examples, on a 0-1 scale. Both are checked
against those packages in the tests.

Chinese: ``rouge-score`` drops every non-ASCII character (a Chinese summary scores 0), and 13a keeps
a run of Chinese characters as one token. With ``chinese=True`` (chosen automatically when the
references are mostly CJK), each CJK character is a token of its own for both metrics -- the usual
character-level ROUGE/BLEU for Chinese -- while Latin words and numbers stay whole.
"""

import math
import re
from collections import Counter

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")

# The 13a tokenizer: punctuation and symbols become tokens; periods and commas too, except between
# digits; a dash after a digit is split off.
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def tokenize_13a(line: str) -> list[str]:
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _split_cjk(tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        if CJK.search(token):
            out += [
                piece
                for piece in re.split(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef])", token)
                if piece
            ]
        else:
            out.append(token)
    return out


def is_mostly_chinese(texts: list[str]) -> bool:
    text = "".join(texts)
    letters = sum(ch.isalnum() for ch in text)
    return letters > 0 and len(CJK.findall(text)) / letters > 0.3


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(predictions: list[str], references: list[str], chinese: bool = False, max_n: int = 4) -> float:
    """Corpus BLEU (0-100), one reference per prediction."""
    matches, totals = [0] * max_n, [0] * max_n
    pred_len = ref_len = 0
    for pred, ref in zip(predictions, references):
        p, r = tokenize_13a(pred), tokenize_13a(ref)
        if chinese:
            p, r = _split_cjk(p), _split_cjk(r)
        pred_len, ref_len = pred_len + len(p), ref_len + len(r)
        for n in range(1, max_n + 1):
            pn, rn = _ngrams(p, n), _ngrams(r, n)
            matches[n - 1] += sum(min(c, rn[g]) for g, c in pn.items())
            totals[n - 1] += max(len(p) - n + 1, 0)
    if pred_len == 0:
        return 0.0
    log_precision, smooth = 0.0, 1.0
    for n in range(max_n):
        if totals[n] == 0:
            return 0.0
        if matches[n] == 0:
            smooth *= 2
            precision = 100.0 / (smooth * totals[n])
        else:
            precision = 100.0 * matches[n] / totals[n]
        log_precision += math.log(precision) / max_n
    penalty = 1.0 if pred_len >= ref_len else math.exp(1 - ref_len / pred_len)
    return penalty * math.exp(log_precision)


def rouge_tokens(text: str, chinese: bool = False) -> list[str]:
    text = text.lower()
    if chinese:
        return _split_cjk(re.sub(r"[^a-z0-9\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+", " ", text).split())
    return re.sub(r"[^a-z0-9]+", " ", text).split()


def _f_measure(overlap: int, pred_total: int, ref_total: int) -> float:
    precision = overlap / pred_total if pred_total else 0.0
    recall = overlap / ref_total if ref_total else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge(predictions: list[str], references: list[str], chinese: bool = False) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0-1)."""
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references):
        p, r = rouge_tokens(pred, chinese), rouge_tokens(ref, chinese)
        for n in (1, 2):
            pn, rn = _ngrams(p, n), _ngrams(r, n)
            overlap = sum((pn & rn).values())
            sums[f"rouge{n}"] += _f_measure(overlap, sum(pn.values()), sum(rn.values()))
        sums["rougeL"] += _f_measure(_lcs(p, r), len(p), len(r))
    count = max(len(predictions), 1)
    return {k: v / count for k, v in sums.items()}


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to their reference, ignoring case and surrounding/inner spacing."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references)) / max(len(predictions), 1)


def generation_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    chinese = is_mostly_chinese(references)
    return {
        "bleu": corpus_bleu(predictions, references, chinese),
        **rouge(predictions, references, chinese),
        "exact_match": exact_match(predictions, references),
        "chinese_tokenization": chinese,
    }
