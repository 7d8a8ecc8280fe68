"""Sentence embeddings from an encoder: mean-pooled, L2-normalized last hidden states (as
sentence-transformers pools ``all-MiniLM-L6-v2``), batched dynamically."""

import torch

from lmforge.models.embedding import mean_pool
from lmforge.serving.services.inputs import token_counts


class Embedder:
    def __init__(self, model, tokenizer, max_length: int, device, owner, metrics):
        self.model, self.tokenizer, self.max_length, self.device = model, tokenizer, max_length, device
        self.batcher = owner.batcher_for(self.embed, metrics, suffix=":embeddings")

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> list[torch.Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state  # (B, T, H)
        return list(mean_pool(hidden, batch["attention_mask"]).cpu())

    def counts(self, texts: list[str]) -> list[int]:
        return token_counts(self.tokenizer, texts)
