"""Sentence embeddings from an encoder: mean-pooled, L2-normalized last hidden states (as
sentence-transformers pools ``all-MiniLM-L6-v2``), batched dynamically."""

import functools

import torch

from lmforge.models.embedding import mean_pool


class Embedder:
    def __init__(self, model, tokenizer, max_length: int, device, owner, metrics):
        self.model, self.tokenizer, self.max_length, self.device = model, tokenizer, max_length, device
        self.batcher = owner.batcher_for(self.embed, metrics, suffix=":embeddings")

    def ids(self, item: str | list[int], cut: bool = False) -> list[int]:
        """What the model reads: a text tokenized, or token ids as given, with the model's special
        tokens around them ([CLS] ... [SEP]) either way; ``cut`` to ``max_length``."""
        if isinstance(item, str):
            return self.tokenizer(item, add_special_tokens=True, truncation=cut, max_length=self.max_length)[
                "input_ids"
            ]
        before, after = self._special
        room = self.max_length - len(before) - len(after) if cut else len(item)
        return [*before, *list(item)[:room], *after]

    @functools.cached_property
    def _special(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text's own."""
        whole = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        at = next(i for i in range(len(whole) - len(bare) + 1) if whole[i : i + len(bare)] == bare)
        return whole[:at], whole[at + len(bare) :]

    @property
    def vocab(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    @torch.inference_mode()
    def embed(self, items: list[str | list[int]]) -> list[torch.Tensor]:
        rows = [self.ids(item, cut=True) for item in items]
        pad = self.tokenizer.pad_token_id or 0
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state  # (B, T, H)
        return list(mean_pool(hidden, mask).cpu())

    def counts(self, items: list[str | list[int]]) -> list[int]:
        return [len(self.ids(item)) for item in items]
