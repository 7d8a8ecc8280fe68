"""Explanations of a token-classification (NER) run: for one predicted entity, which words of the
sentence raised or lowered the model's probability of the entity's tags.

The score explained is the mean probability of the predicted tags at the entity's words (each word's
first subword, as the tagger reads it; for a CRF run, the softmax of its emissions). Subword
attributions are summed into words, so the tokens are the sentence's words with their character
offsets. A sentence is explained up to the run's ``max_length`` subwords.
"""

import torch

from lmforge.data.tagging import to_spans
from lmforge.errors import DataError, ModelError
from lmforge.explain.attribution import GRADIENT_METHODS, Attribution, attribute, check_method
from lmforge.inference.predictor import RunPredictor, entity_examples
from lmforge.models.one_pass import is_one_pass

ENTITY_METHODS = (*GRADIENT_METHODS, "occlusion")


class EntityExplainer:
    def __init__(self, predictor: RunPredictor):
        if predictor.backend != "torch" or is_one_pass(predictor.model):
            raise ModelError(
                f"{predictor.folder}: explain for NER needs a PyTorch tagger (transformer or lstm run), "
                "not an exported or CRF-suite model"
            )
        self.predictor = predictor
        self.model = predictor.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.labels = predictor.labels.names
        self.scheme = getattr(predictor.task, "scheme", "bio")
        self.methods = ENTITY_METHODS

    def explain(
        self, text: str, method: str | None = None, entity: str | None = None, steps: int = 50
    ) -> list[Attribution]:
        """One attribution per predicted entity (or for the entity whose text is ``entity``)."""
        method = method or self.methods[0]
        check_method(method, self.methods, "NER runs")
        example = entity_examples([text], None)[0]
        row = self.predictor.predict_entities(texts=[text])[0]
        spans = to_spans(row["tags"], self.scheme)
        found = list(zip(row["entities"], spans))
        if entity is not None:
            chosen = [(e, s) for e, s in found if e["text"] == entity]
            if not chosen:
                names = ", ".join(repr(e["text"]) for e, _ in found) or "none"
                raise DataError(f"--entity {entity!r}: not an entity found in the text (found: {names})")
            found = chosen
        if not found:
            return []
        enc = self.predictor.tokenizer(
            example.tokens,
            is_split_into_words=True,
            truncation=True,
            max_length=self.predictor.max_length,
            return_special_tokens_mask=True,
        )
        word_ids = enc.word_ids()
        device = self.predictor.device
        ids = torch.tensor([enc["input_ids"]], device=device)
        special = torch.tensor([enc["special_tokens_mask"]], dtype=torch.bool, device=device) | torch.tensor(
            [[w is None for w in word_ids]], device=device
        )
        first: dict[int, int] = {}
        for pos, w in enumerate(word_ids):
            if w is not None and w not in first:
                first[w] = pos
        pad = self.predictor.tokenizer.pad_token_id or 0
        out = []
        for ent, (label, start, end) in found:
            if any(w not in first for w in range(start, end)):
                raise DataError(
                    f"entity {ent['text']!r} lies beyond the run's max_length ({self.predictor.max_length} "
                    "subwords): explain a shorter sentence"
                )
            positions = torch.tensor([first[w] for w in range(start, end)], device=device)
            tags = torch.tensor([self.labels.index(t) for t in row["tags"][start:end]], device=device)

            def forward(batch_ids, positions=positions, tags=tags):
                logits = self.model(input_ids=batch_ids, attention_mask=torch.ones_like(batch_ids)).logits.float()
                probs = logits[:, positions].softmax(-1)  # (B, words, labels)
                return probs.gather(2, tags[None, :, None].expand(len(batch_ids), -1, 1))[..., 0].mean(1)

            scores, info = attribute(forward, self.model.get_input_embeddings(), ids, special, pad, method, (), steps)
            words = [0.0] * len(example.tokens)
            for pos, w in enumerate(word_ids):
                if w is not None:
                    words[w] += float(scores[pos])
            with torch.no_grad():
                score = float(forward(ids)[0])
            extra = {"entity": ent, "entity_label": label, "entity_score": round(score, 6), **info}
            target = f"{label}: {ent['text']}"
            offsets = list(example.offsets) if example.offsets is not None else []
            out.append(Attribution(text, list(example.tokens), words, method, target, offsets, extra))
        return out
