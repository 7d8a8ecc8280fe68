"""Explanations of a classification run's decision for one text: which tokens raised (positive) or
lowered (negative) the probability of the target label.

Transformer and LSTM runs are explained through captum on the model the run saved; n-gram runs by
occlusion of each word (captum's FeatureAblation over the words' presence) beside the linear model's
own weights: the n-grams of the text that add most to the target label's score.
"""

import torch

from lmforge.data.tagging import word_offsets
from lmforge.errors import DataError, ModelError
from lmforge.explain.attribution import (
    GRADIENT_METHODS,
    METHODS,
    Attribution,
    attribute,
    check_method,
    without_words,
    word_occlusion,
)
from lmforge.inference.predictor import RunPredictor
from lmforge.models.lstm_encoder import LstmConfig

NGRAM_METHODS = ("occlusion",)


class ClassificationExplainer:
    """Attributions for a loaded classification run (``RunPredictor``)."""

    def __init__(self, predictor: RunPredictor):
        if predictor.backend != "torch":
            raise ModelError(
                f"{predictor.folder}: an exported {predictor.backend} model; explain needs the PyTorch "
                "model (give the run folder, not the export)"
            )
        self.predictor = predictor
        self.labels = predictor.labels.names
        self.model = predictor.model
        self.ngram = predictor.one_pass
        self.tokenizer = predictor.tokenizer
        if not self.ngram:
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)  # gradients flow to the embeddings' output only

    @property
    def methods(self) -> tuple[str, ...]:
        if self.ngram:
            return NGRAM_METHODS
        return METHODS if self._attention_model() is not None else (*GRADIENT_METHODS, "occlusion")

    def target_index(self, target: str | None, probs: torch.Tensor) -> int:
        if target is None:
            return int(probs.argmax())
        if target not in self.labels:
            raise DataError(f"--target {target}: not a label of this run (labels: {', '.join(self.labels)})")
        return self.labels.index(target)

    def explain(
        self,
        text: str,
        pair: str | None = None,
        method: str | None = None,
        target: str | None = None,
        steps: int = 50,
    ) -> Attribution:
        method = method or self.methods[0]  # integrated_gradients; occlusion for n-gram runs
        check_method(method, self.methods, f"this {'n-gram' if self.ngram else 'model'} run")
        if self.ngram:
            return self._explain_ngram(text, pair, method, target)
        return self._explain_torch(text, pair, method, target, steps)

    # -- torch models ------------------------------------------------------------------------------
    def encode(self, text: str, pair: str | None = None) -> dict:
        tok = self.tokenizer
        fast = bool(getattr(tok, "is_fast", False))
        enc = tok(
            text,
            pair,
            truncation=True,
            max_length=self.predictor.max_length,
            return_special_tokens_mask=True,
            return_offsets_mapping=fast,
        )
        ids = torch.tensor([enc["input_ids"]], device=self.predictor.device)
        special = torch.tensor([enc["special_tokens_mask"]], dtype=torch.bool, device=ids.device)
        offsets: list = [None] * ids.shape[1]
        if fast:
            sequence = enc.sequence_ids() if hasattr(enc, "sequence_ids") else [0] * ids.shape[1]
            # Offsets into the first text only (a pair's tokens point into the second one).
            offsets = [
                tuple(o) if s == 0 and not sp else None
                for o, s, sp in zip(enc["offset_mapping"], sequence, enc["special_tokens_mask"])
            ]
        extra = {}
        if pair is not None and "token_type_ids" in enc:
            extra["token_type_ids"] = torch.tensor([enc["token_type_ids"]], device=ids.device)
        return {"ids": ids, "special": special, "offsets": offsets, "extra": extra}

    def probabilities(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids.expand(ids.shape[0], -1)
        return self.model(**inputs).logits.float().softmax(-1)

    def _explain_torch(self, text, pair, method, target, steps) -> Attribution:
        enc = self.encode(text, pair)
        ids, special = enc["ids"], enc["special"]
        token_type_ids = enc["extra"].get("token_type_ids")
        with torch.no_grad():
            probs = self.probabilities(ids, token_type_ids)[0].cpu()
        index = self.target_index(target, probs)
        info: dict = {}
        if method == "attention":
            maps = self.attention_maps(ids, token_type_ids)
            scores = maps[-1].mean(0)[0].cpu().masked_fill(special[0].cpu(), 0.0)  # last layer, first token's row
            info["attention_maps"] = maps
        else:

            def forward(batch_ids, *rest):
                return self.probabilities(batch_ids, *rest)[:, index]

            extra = (token_type_ids,) if token_type_ids is not None else ()
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            scores, info = attribute(
                forward, self.model.get_input_embeddings(), ids, special, pad, method, extra, steps
            )
        keep = [i for i, s in enumerate(special[0].tolist()) if not s]
        tokens = self.tokenizer.convert_ids_to_tokens(ids[0].tolist())
        result = Attribution(
            text=text,
            tokens=[tokens[i] for i in keep],
            scores=[float(scores[i]) for i in keep],
            method=method,
            target=self.labels[index],
            offsets=[enc["offsets"][i] for i in keep],
            extra=self._prediction(probs, pair),
        )
        maps = info.pop("attention_maps", None)
        if maps is not None:
            result.maps = {"tokens": tokens, "attention": maps}
        result.extra.update(info)
        return result

    def _prediction(self, probs: torch.Tensor, pair: str | None) -> dict:
        best = int(probs.argmax())
        out: dict = {"label": self.labels[best], "score": round(float(probs[best]), 6)}
        if pair is not None:
            out["text_pair"] = pair
        out["probabilities"] = {name: round(float(p), 6) for name, p in zip(self.labels, probs)}
        return out

    def _attention_model(self):
        """The model when it can return attention weights (transformers), else None (LSTM)."""
        config = getattr(self.model, "config", None)
        if config is None or getattr(config, "model_type", "") == LstmConfig.model_type:
            return None
        return self.model

    def attention_maps(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(layers, heads, T, T) attention weights of one text (the eager attention computes them)."""
        model = self.model
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "output_attentions": True}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        with torch.no_grad():
            out = model(**inputs)
        if not getattr(out, "attentions", None):
            raise ModelError(f"{type(model).__name__} returns no attention weights; use another --method")
        return torch.stack([a[0].float().cpu() for a in out.attentions])

    # -- n-gram models -----------------------------------------------------------------------------
    def _explain_ngram(self, text, pair, method, target) -> Attribution:
        model = self.model
        pairs = [pair] if pair is not None else None
        probs = model.probabilities([text], pairs)[0]
        index = self.target_index(target, probs)
        offsets = word_offsets(text)
        words = [text[s:e] for s, e in offsets]

        def score(keep: list[bool]) -> float:
            return float(model.probabilities([without_words(text, offsets, keep)], pairs)[0, index])

        scores = word_occlusion(score, len(words))
        extra = self._prediction(probs, pair)
        extra["features"] = model.feature_contributions(text, pair, index)
        return Attribution(text, words, scores, method, self.labels[index], list(offsets), extra)
