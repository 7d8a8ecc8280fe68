"""Character CNN features of each token (Ma & Hovy, 2016; Chiu & Nichols, 2016), for the lstm family.

A token's characters are embedded, convolved (width 3) and max-pooled into ``filters`` numbers that
are concatenated to its embedding: spelling, capitals, digits and suffixes then reach the BiLSTM
for every token, which is what a from-scratch English tagger lacks for rare words (the embedding of
a token seen twice has learned little; its shape says "capitalised name").

The characters come from the tokenizer's own tokens (a WordPiece continuation keeps its ``##``, a
mark that it continues a word): a table of every token's character ids, built once from the
vocabulary and saved with the weights, so the data pipeline stays as it is and a saved model needs
nothing beyond its folder.
"""

import torch
from torch import nn

PAD, UNKNOWN = 0, 1


def char_table(tokens: list[str], max_chars: int) -> tuple[torch.Tensor, int]:
    """(V, max_chars) character ids of each token (``tokens[i]`` is token id i), 0-padded and cut
    to ``max_chars``; and the number of character ids. Characters are numbered in sorted order, so
    the same vocabulary always gives the same table."""
    alphabet = sorted({ch for token in tokens for ch in token})
    ids = {ch: i + 2 for i, ch in enumerate(alphabet)}
    table = torch.zeros(len(tokens), max_chars, dtype=torch.long)
    for row, token in enumerate(tokens):
        chars = [ids.get(ch, UNKNOWN) for ch in token[:max_chars]]
        table[row, : len(chars)] = torch.tensor(chars, dtype=torch.long)
    return table, len(alphabet) + 2


class CharCNN(nn.Module):
    """Token ids -> (B, T, filters) features of their characters."""

    def __init__(
        self,
        vocab_size: int,
        char_vocab_size: int,
        max_chars: int,
        filters: int,
        char_embedding: int = 30,
        dropout: float = 0.5,
        width: int = 3,
    ):
        super().__init__()
        # Filled from the vocabulary by the loader (and restored from the weights file on load).
        self.register_buffer("table", torch.zeros(vocab_size, max_chars, dtype=torch.long))
        self.embeddings = nn.Embedding(char_vocab_size, char_embedding, padding_idx=PAD)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv1d(char_embedding, filters, width, padding=width // 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Each distinct token of the batch once: a batch repeats its tokens (and padding) a lot.
        unique, inverse = torch.unique(input_ids, return_inverse=True)
        chars = self.table[unique]  # (U, L)
        x = self.dropout(self.embeddings(chars)).transpose(1, 2)  # (U, C, L)
        x = self.conv(x)  # (U, F, L)
        x = x.masked_fill((chars == PAD)[:, None], float("-inf")).amax(-1)
        x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))  # a token without characters
        return x[inverse]  # (B, T, F)
