"""A greedy word-substitution attack on a classification run, in the manner of TextFooler (Jin et al.
2020, "Is BERT Really Robust?"): rank the words of a correctly classified text by how much deleting
each lowers the gold label's probability, then, word by word in that order, put in the synonym that
lowers it most, until the prediction flips or ``budget`` words have changed.

Meaning-preserving constraints: a replacement comes from a synonym lexicon (WordNet or Cilin, the
sources of ``data.augment``) or from the run's own embedding neighbours; stop words, negations and
one-letter words are never replaced; and, for English, the changed text must keep a cosine similarity
of at least ``min_similarity`` to the original under the bundled MiniLM sentence encoder (mean-pooled,
as it was trained), the role the Universal Sentence Encoder plays in TextFooler.

Reported: clean accuracy, accuracy under attack, attack success rate (flipped / attacked, the
attacked being the correctly classified texts), the share of words changed, the model queries spent,
and every flip.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import transformers

from lmforge.augment.lexicons import EmbeddingSynonyms, Synonyms, lexicon_source
from lmforge.augment.operations import changeable
from lmforge.augment.units import Unit, language_of, text_units, units_text
from lmforge.errors import ModelError
from lmforge.inference.predictor import RunPredictor
from lmforge.models.bundled import bundled_path

log = logging.getLogger("lmforge")

CANDIDATES = 12  # synonyms tried per word


@dataclass
class AttackResult:
    text: str
    gold: str
    predicted: str  # on the clean text
    attacked: bool  # clean prediction right, so attacked
    flipped: bool = False
    adversarial: str | None = None
    adversarial_label: str | None = None
    changed_words: list[tuple[str, str]] = field(default_factory=list)
    words: int = 0
    queries: int = 0

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "gold": self.gold,
            "predicted": self.predicted,
            "attacked": self.attacked,
            "flipped": self.flipped,
            "adversarial": self.adversarial,
            "adversarial_label": self.adversarial_label,
            # the swaps of a flip; an attack that failed made none (``tried``: what it tried in vain)
            "changed": [list(pair) for pair in self.changed_words] if self.flipped else [],
            "tried": [] if self.flipped else [list(pair) for pair in self.changed_words],
            "words": self.words,
            "queries": self.queries,
        }


def summary(results: list[AttackResult]) -> dict:
    """The attack's figures; a rate with nothing to count (no text classified right, so none
    attacked; none flipped) is ``None``, not 0: an attack that had nothing to attack did not fail."""
    total = len(results)
    attacked = [r for r in results if r.attacked]
    flipped = [r for r in attacked if r.flipped]
    return {
        "count": total,
        "clean_accuracy": len(attacked) / total if total else None,
        "attacked_accuracy": (len(attacked) - len(flipped)) / total if total else None,
        "attack_success_rate": len(flipped) / len(attacked) if attacked else None,
        "words_changed": sum(len(r.changed_words) / max(r.words, 1) for r in flipped) / len(flipped)
        if flipped
        else None,
        "queries_per_text": sum(r.queries for r in attacked) / len(attacked) if attacked else None,
    }


class SentenceSimilarity:
    """Cosine similarity of mean-pooled MiniLM sentence embeddings (the bundled model)."""

    def __init__(self, device: torch.device):
        folder = bundled_path("minilm")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self.model = transformers.AutoModel.from_pretrained(folder, use_safetensors=True).to(device).eval()
        self.device = device

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(
            self.device
        )
        hidden = self.model(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def __call__(self, original: str, others: list[str]) -> list[float]:
        vectors = self.embed([original, *others])
        return (vectors[1:] @ vectors[0]).tolist()


class WordSubstitutionAttack:
    def __init__(
        self,
        predictor: RunPredictor,
        source: str = "auto",
        budget: int = 4,
        min_similarity: float = 0.8,
        language: str = "auto",
        batch_size: int = 64,
    ):
        if predictor.record.task != "classification":
            raise ModelError(f"lmforge attack: a {predictor.record.task} run; the attack is for classification runs")
        self.predictor, self.source, self.budget = predictor, source, budget
        self.min_similarity, self.language, self.batch_size = min_similarity, language, batch_size
        self.similarity: SentenceSimilarity | None = None

    def _synonyms(self, texts: list[str], language: str) -> Synonyms:
        found = lexicon_source(self.source, language, "--source")
        if found is not None:
            return found
        model = self.predictor.model
        if not isinstance(model, transformers.PreTrainedModel):
            raise ModelError("--source embedding needs a run of a pretrained transformer (its input embeddings)")
        weight: torch.Tensor = cast(Any, model).get_input_embeddings().weight
        words = [u.word for t in texts for u in text_units(t, language)[1]]
        return EmbeddingSynonyms(weight.detach().cpu(), self.predictor.tokenizer, words, lower=language != "zh")

    def _probs(self, texts: list[str]) -> list[dict[str, float]]:
        rows = self.predictor.predict(texts, batch_size=self.batch_size, top_k=len(self.predictor.labels.names))
        return [{t["label"]: t["score"] for t in row["top_k"]} | {"_label": row["label"]} for row in rows]

    def run(self, texts: list[str], gold: list[str]) -> list[AttackResult]:
        language = self.language if self.language != "auto" else language_of(texts)
        synonyms = self._synonyms(texts, language)
        if language == "en" and self.min_similarity > 0 and self.similarity is None:
            self.similarity = SentenceSimilarity(self.predictor.device)
        clean = self._probs(texts)
        results = []
        for i, (text, label, probs) in enumerate(zip(texts, gold, clean)):
            result = AttackResult(text, label, str(probs["_label"]), probs["_label"] == label)
            if result.attacked:
                self._attack(result, language, synonyms)
            results.append(result)
            if (i + 1) % 50 == 0:
                log.info("attack: %d of %d texts", i + 1, len(texts))
        return results

    def _attack(self, result: AttackResult, language: str, synonyms: Synonyms) -> None:
        head, units = text_units(result.text, language)
        result.words = sum(any(ch.isalnum() for ch in u.word) for u in units)
        places = [i for i, u in enumerate(units) if changeable(u, language) and synonyms(u.word)]
        if not places:
            return
        # word importance: the gold probability lost when the word is left out
        left_out = [units_text(head, units[:i] + units[i + 1 :]) for i in places]
        gold_now = self._probs([result.text])[0][result.gold]
        scores = [gold_now - p[result.gold] for p in self._probs(left_out)]
        result.queries += 1 + len(left_out)
        order = [places[j] for j in sorted(range(len(places)), key=lambda j: -scores[j])]
        current = list(units)
        for place in order[: self.budget * 3]:
            if len(result.changed_words) >= self.budget:
                break
            options = [w for w in synonyms(units[place].word)[:CANDIDATES] if w.lower() != units[place].word.lower()]
            variants = [
                units_text(head, current[:place] + [_swap(current[place], w)] + current[place + 1 :]) for w in options
            ]
            if not variants:
                continue
            probs = self._probs(variants)
            result.queries += len(variants)
            ranked = sorted(range(len(variants)), key=lambda j: probs[j][result.gold])
            for j in ranked:
                if probs[j][result.gold] >= gold_now:
                    break  # no option lowers the gold label's probability
                if not self._similar(result.text, variants[j]):
                    continue
                current[place] = _swap(current[place], options[j])
                result.changed_words.append((units[place].word, options[j]))
                gold_now = probs[j][result.gold]
                if probs[j]["_label"] != result.gold:
                    result.flipped = True
                    result.adversarial, result.adversarial_label = variants[j], str(probs[j]["_label"])
                    return
                break

    def _similar(self, original: str, changed: str) -> bool:
        if self.similarity is None:
            return True
        return self.similarity(original, [changed])[0] >= self.min_similarity


def _swap(unit: Unit, word: str) -> Unit:
    return Unit(word, unit.gap, unit.entity, unit.tokens)
