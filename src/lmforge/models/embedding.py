"""Sentence embeddings from any encoder: the last hidden states mean-pooled over the real tokens and
L2-normalized, as sentence-transformers pools ``all-MiniLM-L6-v2`` (the bundled ``minilm``)."""

import torch
import transformers

from lmforge.models.transformer import resolve_source
from lmforge.runtime import resolve_device


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C) hidden states and (B, T) mask -> (B, C) unit vectors, pooled in float32."""
    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, C)
    return torch.nn.functional.normalize(pooled, dim=-1)


class SentenceEncoder:
    """A bundled alias or local encoder folder, loaded once on ``device`` (``auto`` | ``cpu`` | ``cuda`` |
    ``cuda:N``), embedding texts in length-sorted batches."""

    def __init__(self, source: str = "minilm", max_length: int = 256, device: str = "auto"):
        self.device = resolve_device(device)
        folder, _ = resolve_source(source)
        self.model = (
            transformers.AutoModel.from_pretrained(
                folder, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
            )
            .to(self.device)
            .eval()
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        out = torch.zeros((len(texts), self.model.config.hidden_size))
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            vectors = mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"]).cpu()
            for row, i in enumerate(chunk):
                out[i] = vectors[row]
        return out
