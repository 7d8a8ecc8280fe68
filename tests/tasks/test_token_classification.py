"""Token classification: subword alignment, windows of long sentences, merging back."""

import random

import pytest
import torch

from lmforge.data.examples import LabelSet
from lmforge.data.tagged import TaggedExample
from lmforge.tasks.token_classification import IGNORE, TokenClassificationTask, _owners, _windows
from lmforge.tokenization.wordpiece import train_wordpiece

WORDS = ["john", "smith", "visited", "paris", "unbelievably", "in", "june", "acme", "corporation",
         "said", "on", "monday", "。", "北京", "上海"]


@pytest.fixture(scope="module")
def tokenizer():
    # A tiny vocabulary, so many words split into several subwords.
    return train_wordpiece([" ".join(WORDS)], vocab_size=60)


def labelled(tokens, tags, names):
    ex = TaggedExample(tokens, tags)
    ex.tag_ids = [names.index(t) for t in tags]
    return ex


@pytest.mark.parametrize("seed", range(20))
def test_windows_cover_every_subword_and_start_on_words(seed):
    rng = random.Random(seed)
    word_ids = []
    for w in range(rng.randint(1, 60)):
        word_ids += [w] * rng.randint(1, 4)
    body, stride = rng.randint(5, 20), rng.randint(0, 6)
    windows = _windows(word_ids, body, stride)
    covered = set()
    for start, end in windows:
        assert end - start <= body
        assert start == 0 or word_ids[start] != word_ids[start - 1]
        covered.update(range(start, end))
    assert covered == set(range(len(word_ids)))
    owner = _owners(word_ids, windows)
    assert set(owner) == set(word_ids)           # every word has exactly one owning window
    for word, w in owner.items():
        first = word_ids.index(word)
        assert windows[w][0] <= first < windows[w][1]


def test_labels_sit_on_first_subwords(tokenizer):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    ex = labelled(["john", "unbelievably", "visited", "paris"], ["B-PER", "O", "O", "B-LOC"], names)
    task = TokenClassificationTask()
    [feature] = task.encode(tokenizer, [ex], 64)
    labelled_positions = [i for i, t in enumerate(feature["labels"]) if t != IGNORE]
    assert labelled_positions == feature["heads"]
    assert [feature["labels"][i] for i in feature["heads"]] == ex.tag_ids
    assert len(feature["input_ids"]) > len(ex.tokens) + 2      # some words were split
    task.label_all_subwords = True
    [feature] = task.encode(tokenizer, [ex], 64)
    assert sum(t != IGNORE for t in feature["labels"]) == len(feature["input_ids"]) - 2


@pytest.mark.parametrize("crf", [False, True])
def test_long_sentence_splits_into_windows_and_merges_every_word(tokenizer, crf):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rng = random.Random(0)
    tokens = [rng.choice(WORDS) for _ in range(80)]
    tags = ["B-LOC" if t in ("paris", "北京", "上海") else "O" for t in tokens]
    ex = labelled(tokens, tags, names)
    task = TokenClassificationTask()
    task.crf, task.stride = crf, 4
    features = task.encode(tokenizer, [ex], 16)
    assert len(features) > 5
    assert all(len(f["input_ids"]) <= 16 for f in features)
    owned = sorted(w for f in features for w, own in zip(f["head_words"], f["owned"]) if own)
    assert owned == list(range(len(tokens)))                   # no word dropped, none twice

    class Oracle(torch.nn.Module):
        """Scores the gold tag of each input position highest, by reading it off the labels."""
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_labels": len(names)})()
            self.by_ids = {tuple(f["input_ids"]): f["labels"] for f in features}

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros((*input_ids.shape, len(names)))
            for b, row in enumerate(input_ids.tolist()):
                gold = self.by_ids[tuple(x for x, m in zip(row, attention_mask[b].tolist()) if m)]
                for i, t in enumerate(gold):
                    if t != IGNORE:
                        logits[b, i, t] = 5.0
            return type("Out", (), {"logits": logits})()

    model = Oracle()
    if crf:
        from lmforge.models.crf_head import attach_crf
        attach_crf(model, names, "bio")
    labels = LabelSet(names, {n: n for n in names})
    result = task.evaluate(model, tokenizer, features, [ex], 3, torch.device("cpu"), labels)
    assert result.predictions[0]["pred"] == tags
    assert result.metrics["f1"] == 1.0 and result.metrics["token_accuracy"] == 1.0


def test_recall_of_seen_and_unseen_entities():
    from lmforge.data.tagged import TaggedExample
    from lmforge.tasks.token_classification import seen_unseen_recall

    train = {("PER", ("张", "三")), ("LOC", ("北", "京"))}
    examples = [TaggedExample(tokens=list("张三去北京")), TaggedExample(tokens=list("李四在上海"))]
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    # seen: 张三 found, 北京 missed; unseen: 李四 found, 上海 cut short (a boundary error is a miss)
    pred = [["B-PER", "I-PER", "O", "O", "O"], ["B-PER", "I-PER", "O", "B-LOC", "O"]]
    assert seen_unseen_recall(examples, gold, pred, "bio", train) == {
        "seen_recall": 0.5, "unseen_recall": 0.5, "unseen_entities": 2, "unseen_share": 0.5}
    # the type counts: 北京 as an organisation was never seen
    assert seen_unseen_recall(examples[:1], [["B-PER", "I-PER", "O", "B-ORG", "I-ORG"]], [["O"] * 5],
                              "bio", train)["unseen_entities"] == 1
