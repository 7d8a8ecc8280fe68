"""Token classification: subword alignment, windows of long sentences, merging back."""

import random

import pytest
import torch

from lmforge.data.examples import LabelSet
from lmforge.data.tagged import TaggedExample
from lmforge.tasks.ner_windows import owners as _owners
from lmforge.tasks.ner_windows import windows as _windows
from lmforge.tasks.token_classification import IGNORE, TokenClassificationTask
from lmforge.tokenization.wordpiece import train_wordpiece

WORDS = [
    "john",
    "smith",
    "visited",
    "paris",
    "unbelievably",
    "in",
    "june",
    "acme",
    "corporation",
    "said",
    "on",
    "monday",
    "。",
    "北京",
    "上海",
]


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
    assert set(owner) == set(word_ids)  # every word has exactly one owning window
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
    assert len(feature["input_ids"]) > len(ex.tokens) + 2  # some words were split
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
    assert owned == list(range(len(tokens)))  # no word dropped, none twice

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
    from lmforge.tasks.ner_decoding import seen_unseen_recall

    train = {("PER", ("张", "三")), ("LOC", ("北", "京"))}
    examples = [TaggedExample(tokens=list("张三去北京")), TaggedExample(tokens=list("李四在上海"))]
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    # seen: 张三 found, 北京 missed; unseen: 李四 found, 上海 cut short (a boundary error is a miss)
    pred = [["B-PER", "I-PER", "O", "O", "O"], ["B-PER", "I-PER", "O", "B-LOC", "O"]]
    assert seen_unseen_recall(examples, gold, pred, "bio", train) == {
        "seen_recall": 0.5,
        "unseen_recall": 0.5,
        "unseen_entities": 2,
        "unseen_share": 0.5,
    }
    # the type counts: 北京 as an organisation was never seen
    assert (
        seen_unseen_recall(examples[:1], [["B-PER", "I-PER", "O", "B-ORG", "I-ORG"]], [["O"] * 5], "bio", train)[
            "unseen_entities"
        ]
        == 1
    )


class _Logits(torch.nn.Module):
    """A stand-in model whose logits are given."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.logits)


@pytest.mark.parametrize("crf", [False, True])
def test_partial_labels_sum_over_their_tag_set(crf):
    """An O of a source with incomplete_types [LOC] is trained towards {O, B-LOC, I-LOC}: its loss is
    -log of the set's probability (softmax) or of every path through the sets (CRF), while exact
    labels and the other sentences are unchanged."""
    from lmforge.models.crf_head import attach_crf
    from lmforge.tasks.token_classification import PARTIAL

    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    labels = LabelSet(names, {n: n for n in names})
    task = TokenClassificationTask()
    task.crf = crf
    train = [
        TaggedExample(["a", "b", "c"], ["B-PER", "O", "O"], incomplete=("LOC",)),
        TaggedExample(["a", "b"], ["B-PER", "O"]),
    ]
    kinds = task._partial_sets(train, ["LOC", "PER"], labels)
    assert kinds == [("LOC",)] and task.tag_sets.tolist() == [[True, True, True, False, False]]
    task._attach_ids(train, labels, None, kinds)
    assert train[0].tag_ids == [3, PARTIAL, PARTIAL] and train[1].tag_ids == [3, 0]

    torch.manual_seed(0)
    logits = torch.randn(1, 3, 5)
    model = _Logits(logits)
    if crf:
        attach_crf(model, names, "bio")
        with torch.no_grad():
            for p in model.crf.parameters():
                p.copy_(torch.randn(p.shape))
    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "labels": torch.tensor([train[0].tag_ids])}
    if crf:
        batch.update(heads=torch.tensor([[0, 1, 2]]), head_mask=torch.ones(1, 3, dtype=torch.bool))
    loss = task.loss(model, dict(batch)).item()
    allowed = [{3}, {0, 1, 2}, {0, 1, 2}]
    if not crf:
        logp = logits[0].log_softmax(-1)
        expected = -sum(torch.logsumexp(logp[t, sorted(s)], 0).item() for t, s in enumerate(allowed)) / 3
    else:
        import itertools

        from lmforge.data.tagging import allowed_transitions

        start_ok, trans_ok, end_ok = allowed_transitions(names, "bio")
        c = model.crf

        def score(path):
            s = (
                c.start_transitions[path[0]]
                + c.end_transitions[path[-1]]
                + sum(logits[0, t, y] for t, y in enumerate(path))
            )
            return float(s + sum(c.transitions[a, b] for a, b in zip(path, path[1:])))

        valid = [
            p
            for p in itertools.product(range(5), repeat=3)
            if start_ok[p[0]] and end_ok[p[-1]] and all(trans_ok[a][b] for a, b in zip(p, p[1:]))
        ]
        inside = [p for p in valid if all(y in allowed[t] for t, y in enumerate(p))]
        lse = lambda xs: torch.logsumexp(torch.tensor(xs, dtype=torch.float64), 0).item()  # noqa: E731
        expected = lse([score(p) for p in valid]) - lse([score(p) for p in inside])
    assert loss == pytest.approx(expected, abs=1e-4)
    # the same sentence with exact labels costs more: the set contains the exact O
    exact = dict(batch, labels=torch.tensor([[3, 0, 0]]))
    assert task.loss(model, exact).item() > loss


def test_partial_labels_name_a_known_type():
    from lmforge.errors import ConfigError

    names = ["O", "B-PER", "I-PER"]
    task = TokenClassificationTask()
    with pytest.raises(ConfigError, match="'LOC' is not an entity type of the training data"):
        task._partial_sets(
            [TaggedExample(["a"], ["B-PER"], incomplete=("LOC",))], ["PER"], LabelSet(names, {n: n for n in names})
        )


def test_softmax_head_decodes_the_best_valid_tag_sequence():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    model = type("M", (), {"config": type("C", (), {"id2label": dict(enumerate(names))})()})()
    # word 2's most likely tag is I-PER after an O: invalid in BIO
    probs = torch.tensor(
        [
            [0.70, 0.10, 0.05, 0.10, 0.05],
            [0.05, 0.20, 0.45, 0.05, 0.25],
            [0.20, 0.05, 0.40, 0.05, 0.30],
        ]
    )
    scores = [probs.log()]
    task = TokenClassificationTask()
    task.constrained = False
    assert task.decode(model, scores)[0] == [[0, 2, 2]]  # argmax: O I-PER I-PER
    task.constrained = True
    paths, confidence = task.decode(model, scores)
    # the valid path with the highest product: O B-PER I-PER (.7 * .2 * .4) beats O O O, O B-LOC I-LOC, ...
    assert paths == [[0, 1, 2]]
    assert torch.allclose(confidence[0], torch.tensor([0.70, 0.20, 0.40]))
    entity_bias = torch.tensor([0.0, -5.0, -5.0, 0.0, 0.0])  # a decision bias moves the path, validly
    assert task.decode(model, scores, bias=entity_bias)[0] == [[0, 3, 4]]
    assert task.head_options()["decode"] == "constrained"
    task.restore_head_options({"crf": False, "scheme": "bio"})  # a run saved before the option
    assert task.constrained is False
