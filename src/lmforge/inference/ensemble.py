"""Ensembles of finished runs: average what the members believe, then decide once.

Classification: the mean of the members' class probabilities (soft voting). Tagging: the mean of each
member's per-word tag posteriors (a CRF's marginals by forward-backward, else the softmax), decoded
by Viterbi over their logarithms with only the tag scheme's transitions allowed, so the merged path
is never an invalid sequence even where the members disagree. Members may differ in family,
vocabulary and tokenizer: each reads the same sentences its own way and only word-level (or
text-level) probabilities are combined. They must share the task and the label set (for taggers: the
entity types). Taggers may also differ in tag scheme where one maps onto the other word by word:
BIO and IOBES members mix, each IOBES posterior added to the BIO tag it reads as (S-X to B-X, E-X to
I-X), and the ensemble decodes in BIO. IOB1 does not mix: whether its I-X begins an entity depends on
the word before.

Taggers can vote instead (``--combine vote``): each member decodes its own way (its CRF's Viterbi
path, with the entity bias if one is given) and the ensemble keeps every entity span that more than
half the members predict, with the share of members behind it as its score. Strict-majority spans
never overlap (one member's spans are disjoint, so two overlapping spans cannot both have more than
half the votes), so the result is always a valid tagging. Averaging trades votes for confidence:
a span two members are sure of can beat one five members see weakly; voting counts heads.

Classifiers vote too (hard voting): each member's most probable label is one vote; the ensemble's
score of a label is its share of the votes, smoothed by half a vote spread as the members' mean
probabilities: ``(votes + mean / 2) / (members + 1 / 2)``. The scores sum to one, the label with the
most votes always wins, and among labels with as many votes the one the members believe more.

Each member is also scored alone, decoded its own way, so the report shows what the ensemble adds.
"""

import copy
import math
from typing import cast

import torch

from lmforge.config.schema import DataConfig, DataSource, Fields
from lmforge.data.examples import LabelSet, TextExample
from lmforge.data.readers import Problems
from lmforge.data.tagging import allowed_transitions, from_spans, split_tag, tag_set, to_spans
from lmforge.errors import DataError, ModelError
from lmforge.evaluation.result import EvalResult
from lmforge.inference.predictor import entity_examples
from lmforge.models.crf import CRF
from lmforge.tasks.classification import prediction_rows
from lmforge.tasks.ner_decoding import entity_bias_row

TASKS = ("classification", "token_classification")
COMBINE = ("mean", "vote")
MIXABLE = ("bio", "iobes")


def check_members(predictors: list) -> None:
    """Same task and labels in every member (their order may differ); for taggers the same entity
    types, in one scheme or in BIO and IOBES."""
    first = predictors[0]
    if first.record.task not in TASKS:
        raise ModelError(f"{first.run.path}: ensembles combine {' and '.join(TASKS)} runs, not {first.record.task}")
    tagging = first.record.task == "token_classification"
    for other in predictors[1:]:
        if other.record.task != first.record.task:
            raise ModelError(
                f"{other.run.path}: a {other.record.task} run cannot join an ensemble of {first.record.task} runs"
            )
        if tagging and _types(other) != _types(first):
            raise ModelError(
                f"{other.run.path}: its entity types ({', '.join(_types(other)[:8])}) are not "
                f"those of {first.run.path} ({', '.join(_types(first)[:8])})"
            )
        if not tagging and sorted(other.labels.names) != sorted(first.labels.names):
            raise ModelError(
                f"{other.run.path}: its labels ({', '.join(other.labels.names[:8])}) are not "
                f"those of {first.run.path} ({', '.join(first.labels.names[:8])})"
            )
    if tagging:
        schemes = sorted({p.task.scheme for p in predictors})
        if len(schemes) > 1 and not set(schemes) <= set(MIXABLE):
            raise ModelError(
                f"ensemble members tag in schemes that do not mix ({', '.join(schemes)}): "
                f"only BIO and IOBES members combine (an IOBES tag reads as one BIO tag)"
            )
        one_pass = next((p for p in predictors if p.one_pass), None)
        if one_pass is not None:
            raise ModelError(
                f"{one_pass.run.path}: the ngram family's tagger gives no per-word probabilities to average"
            )


def _types(predictor) -> list[str]:

    return sorted({kind for kind in (split_tag(n)[1] for n in predictor.labels.names) if kind is not None})


def _common_view(predictors: list):
    """The task and labels the ensemble reads, scores and decodes with: the first member's, or, when
    BIO and IOBES members mix, a copy of its task in BIO with BIO labels."""

    first = predictors[0]
    if first.record.task != "token_classification" or len({p.task.scheme for p in predictors}) == 1:
        return first.task, first.labels
    task = copy.copy(first.task)
    task.scheme = "bio"
    names = tag_set(_types(first), "bio")
    return task, LabelSet(names, {n: n for n in names})


def _as_bio(name: str) -> str:
    """The BIO tag an IOBES tag reads as: S-X begins an entity (B-X), E-X continues one (I-X)."""

    prefix, type_ = split_tag(name)
    return name if type_ is None else f"{ {'S': 'B', 'E': 'I'}.get(prefix, prefix) }-{type_}"


def evaluate_ensemble(
    predictors: list, path: str, fields: Fields | None = None, batch_size: int = 64, limit: int | None = None
) -> EvalResult:
    """The ensemble's metrics on a labelled file, with ``members``: each run's own headline metrics."""
    return EnsemblePredictor(predictors).evaluate(path, fields, batch_size, limit)


def _order(predictor, names: list[str]) -> torch.Tensor:
    """Column index, in ``predictor``'s label order, of each of ``names``."""
    return torch.tensor([predictor.labels.names.index(n) for n in names])


def _headline(run, metrics: dict) -> dict:
    keep = ("f1", "precision", "recall", "accuracy", "macro_f1", "seen_recall", "unseen_recall")
    return {"run": str(run.path), **{k: metrics[k] for k in keep if k in metrics}}


def _class_probabilities(p, examples, names: list[str], batch_size: int = 64) -> torch.Tensor:
    """(N, labels) class probabilities of one member, columns in ``names`` order."""
    if p.one_pass:
        pairs = [ex.text_pair for ex in examples] if examples[0].text_pair is not None else None
        probs = torch.as_tensor(p.model.probabilities([ex.text for ex in examples], pairs), dtype=torch.float32)
    else:
        features = p.task.encode(p.tokenizer, examples, p.max_length)
        with p.precision.autocast():  # each member computes as it does alone
            probs = p.task.logits(p.model, p.tokenizer, features, batch_size, p.device).softmax(-1)
    return probs[:, _order(p, names)]


def _targets(p, names: list[str]) -> torch.Tensor:
    """Per label of member ``p``, the index in ``names`` of the tag it reads as (itself, or its BIO
    reading when the ensemble mixes schemes)."""
    return torch.tensor([names.index(n) if n in names else names.index(_as_bio(n)) for n in p.labels.names])


class _Member:
    """One member's word scores on a list of sentences, its own word posteriors and those read in the
    ensemble's label order (an IOBES member's S-X and E-X mass added to B-X and I-X of a BIO ensemble)."""

    def __init__(self, p, examples, names: list[str], batch_size: int):
        self.p = p
        features = p.task.encode(p.tokenizer, examples, p.max_length)
        with p.precision.autocast():  # each member computes as it does alone
            self.scores = p.task.word_scores(p.model, p.tokenizer, features, examples, batch_size, p.device)
        self.target = _targets(p, names)
        self.raw = p.task.word_probabilities(p.model, self.scores)
        self.probs = [torch.zeros(len(q), len(names), dtype=q.dtype).index_add_(1, self.target, q) for q in self.raw]
        self._decoded: dict[float, tuple[list, list]] = {}

    def paths(self, bias: float = 0.0, idx: list[int] | None = None):
        """The member's own decoding of sentences ``idx`` (all by default), tags as ensemble ids, and
        the probability of each chosen tag. Each bias is decoded once for all sentences and kept:
        scoring the member alone and voting read the same Viterbi paths, and a bias search scores
        both halves of the data from one decoding."""

        if bias not in self._decoded:
            paths, confidence = self.p.task.decode(
                self.p.model, self.scores, self.raw, bias=entity_bias_row(self.p.labels.names, bias)
            )
            self._decoded[bias] = ([[int(self.target[t]) for t in path] for path in paths], confidence)
        paths, confidence = self._decoded[bias]
        if idx is None:
            return paths, confidence
        return [paths[i] for i in idx], [confidence[i] for i in idx]


def _member_tags(p, examples, names: list[str], batch_size: int, own: bool = True):
    """One member's per-word posteriors (columns in ``names`` order) and, with ``own``, its own
    decoding (paths in ``names`` ids, confidence) for scoring it alone."""
    member = _Member(p, examples, names, batch_size)
    if not own:
        return None, None, member.probs
    paths, confidence = member.paths()
    return paths, confidence, member.probs


def vote_paths(member_paths: list[list[list[int]]], names: list[str], scheme: str):
    """Per sentence, the tags of the entity spans more than half the members predict (each member's
    paths as ids in ``names``), and per word the share of members behind its tag: a kept span's
    votes, or for an O word the members that tag it O."""
    from collections import Counter

    n, o = len(member_paths), names.index("O")
    paths, confidence = [], []
    for rows in zip(*member_paths):
        votes = Counter(span for row in rows for span in to_spans([names[t] for t in row], scheme))
        kept = [span for span, count in votes.items() if 2 * count > n]
        path = [names.index(tag) for tag in from_spans(kept, len(rows[0]), scheme)]
        share = torch.tensor([sum(row[j] == o for row in rows) / n for j in range(len(path))])
        for span in kept:
            share[span[1] : span[2]] = votes[span] / n
        paths.append(path)
        confidence.append(share)
    return paths, confidence


def _merged_tags(mean: list[torch.Tensor], names: list[str], scheme: str, bias: float = 0.0):
    paths = decode_posteriors(mean, names, scheme, bias)
    return paths, [m[torch.arange(len(path)), torch.tensor(path, dtype=torch.long)] for m, path in zip(mean, paths)]


class EnsemblePredictor:
    """Several runs that predict as one (``lmforge predict RUN --ensemble RUN2 ...``): the same
    ``predict`` / ``predict_entities`` as a ``RunPredictor``."""

    def __init__(self, predictors: list, combine: str = "mean"):
        check_members(predictors)
        if combine not in COMBINE:
            raise ModelError(f"combine {combine!r}: expected one of {', '.join(COMBINE)}")
        self.members, self.combine = predictors, combine
        first = predictors[0]
        self.record, self.folder = first.record, first.folder
        self.task, self.labels = _common_view(predictors)

    def evaluate(
        self, path: str, fields: Fields | None = None, batch_size: int = 64, limit: int | None = None
    ) -> EvalResult:
        """Metrics on a labelled file, with ``members``: each run's own headline metrics."""
        first = self.members[0]
        options = self.task.read_options()
        data = DataConfig(fields=fields or Fields(**first.record.fields), **options)
        examples = self.task.read_labelled(DataSource(path=path, limit=limit), data, self.labels, Problems())
        if not examples:
            raise DataError(f"{path}: no labelled rows to evaluate")
        if first.record.task == "classification":
            result, members = _classification(self.members, examples, self.combine)
        else:
            result, members = _tagging(self.members, self.task, self.labels, examples, batch_size, self.combine)
        result.metrics["members"] = members
        return result

    def predict(
        self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64, top_k: int = 3
    ) -> list[dict]:

        examples = [TextExample(t, pairs[i] if pairs else None) for i, t in enumerate(texts)]
        if not examples:
            return []
        names = self.labels.names
        probs = [_class_probabilities(p, examples, names, batch_size) for p in self.members]
        return prediction_rows(combine_classes(probs, self.combine), names, top_k)

    def predict_entities(
        self, texts: list[str] | None = None, tokens: list[list[str]] | None = None, batch_size: int = 64
    ) -> list[dict]:

        examples = entity_examples(texts, tokens)
        rows: list[dict] = [{"entities": [], "tags": []} for _ in examples]
        todo = [i for i, ex in enumerate(examples) if ex.tokens]
        if todo:
            chosen, names = [examples[i] for i in todo], self.labels.names
            # one member at a time: only its paths (vote) or posteriors (mean) outlive it
            if self.combine == "vote":
                own = [_Member(p, chosen, names, batch_size).paths(self.task.entity_bias)[0] for p in self.members]
                paths, confidence = vote_paths(own, names, self.task.scheme)
            else:
                posteriors = [_Member(p, chosen, names, batch_size).probs for p in self.members]
                mean = [sum(rows_) / len(posteriors) for rows_ in zip(*posteriors)]
                paths, confidence = _merged_tags(mean, names, self.task.scheme, self.task.entity_bias)
            for i, row in zip(todo, self.task.prediction_rows(chosen, paths, confidence, self.labels)):
                rows[i] = row
        return rows


def combine_classes(probs: list[torch.Tensor], combine: str = "mean") -> torch.Tensor:
    """(N, labels) ensemble scores from each member's (N, labels) probabilities: their mean, or for
    ``vote`` the smoothed vote share (module docstring). Rows sum to one either way."""
    mean = cast(torch.Tensor, sum(probs)) / len(probs)  # a tensor: ``probs`` is never empty
    if combine != "vote":
        return mean
    votes = cast(
        torch.Tensor, sum(torch.nn.functional.one_hot(q.argmax(-1), q.shape[-1]).to(mean.dtype) for q in probs)
    )
    return (votes + mean / 2) / (len(probs) + 0.5)


def _classification(predictors, examples, combine: str = "mean"):
    first = predictors[0]
    probs, members = [], []
    for p in predictors:
        mine = _class_probabilities(p, examples, first.labels.names)
        members.append(_headline(p.run, first.task.result(mine.clamp_min(1e-12).log(), examples, first.labels).metrics))
        probs.append(mine)
    scores = combine_classes(probs, combine)
    result = first.task.result(scores.clamp_min(1e-12).log(), examples, first.labels)
    result.metrics["combine"] = combine
    return result, members


def decode_posteriors(mean: list[torch.Tensor], names: list[str], scheme: str, bias: float = 0.0) -> list[list[int]]:
    """Per sentence, the valid tag path with the highest sum of log posteriors: Viterbi with zero
    learned scores and only the scheme's constraints (e.g. no I-PER after O). ``bias`` is added to
    the log posterior of every tag but O (``--entity-bias``)."""

    judge = CRF(len(names), allowed_transitions(names, scheme))
    longest = max(len(m) for m in mean)
    logp = torch.zeros(len(mean), longest, len(names))
    mask = torch.zeros(len(mean), longest, dtype=torch.bool)
    for i, m in enumerate(mean):
        logp[i, : len(m)] = m.clamp_min(1e-12).log()
        mask[i, : len(m)] = True
    row = entity_bias_row(names, bias)
    return judge.decode(logp if row is None else logp + row, mask)


def _tagging(predictors, task, labels: LabelSet, examples, batch_size: int, combine: str = "mean"):
    names = labels.names
    members, heads = [_Member(p, examples, names, batch_size) for p in predictors], []
    for m in members:
        mine, confidence = m.paths()
        heads.append(_headline(m.p.run, task.result(examples, mine, confidence, labels, math.nan).metrics))
    mean = [sum(rows) / len(members) for rows in zip(*(m.probs for m in members))]
    gold = [torch.tensor(ex.tag_ids) for ex in examples]
    loss = -torch.cat([m[torch.arange(len(g)), g].clamp_min(1e-12).log() for m, g in zip(mean, gold)]).mean().item()

    def decode(b, idx):
        if combine == "vote":
            return vote_paths([m.paths(b, idx)[0] for m in members], names, task.scheme)
        return _merged_tags([mean[i] for i in idx], names, task.scheme, b)

    result = task.decoded_result(decode, examples, labels, loss)
    result.metrics["combine"] = combine
    return result, heads
