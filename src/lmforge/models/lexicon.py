"""Lexicon features for the character tagger: which dictionary words each character begins, continues,
ends or forms, and of what kind.

Chinese text has no spaces, so a character tagger must find word (and entity) edges by itself. A
dictionary tells it where words could be: for every character, the words of the lexicon that match
the text through it, sorted into four sets by the character's place in the word — Begin, Middle,
End, Single — as in SoftLexicon (Ma et al., 2020, "Simplify the Usage of Lexicon in Chinese NER").
SoftLexicon pools pretrained word embeddings over each set; with no pretrained embeddings here we keep
what generalises without them: a multi-hot vector over (set, part of speech of the word). jieba's
dictionary (349k words) tags place names ``ns``, person names ``nr`` and organisations ``nt``, so
"this character ends a place name the dictionary knows" is one input of the BiLSTM.

The lexicon is tokenized with the model's own tokenizer and kept as two integer buffers of the model
(word token ids, padded with -1, and a tag index per word), so it is saved in ``model.safetensors``
with the weights, and predict and the server match exactly the words training matched.
"""

from collections import Counter
from pathlib import Path

import torch
from torch import nn

from lmforge._optional import require
from lmforge.errors import ConfigError, DataError

MAX_WORD_TOKENS = 8  # longer lexicon words are skipped (0.2% of jieba's dictionary)
MAX_TAGS = 32  # the most frequent tags; rarer ones share one "other" tag
SETS = ("B", "M", "E", "S")  # the character's place in a matched word


def lexicon_file(value: str) -> Path:
    """``jieba`` (the dictionary that ships with the ``jieba`` package) or a word-list file."""
    if value == "jieba":
        jieba = require("jieba", purpose="model.lexicon: jieba")
        return Path(jieba.__file__).parent / "dict.txt"
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.lexicon: no such file: {value} (give a word list or 'jieba')")
    return path


def read_lexicon(path: Path) -> list[tuple[str, str]]:
    """(word, tag) pairs of a word list: one word a line, optionally followed by a frequency and a tag
    (jieba's ``dict.txt`` format: ``word freq tag``); a word without a tag gets ``word``. The first
    entry of a repeated word wins."""
    entries, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 3:
                raise DataError(
                    f"{path}:{number}: a lexicon line is 'word [frequency] [tag]', got {len(fields)} fields"
                )
            word = fields[0]
            if word in seen:
                continue
            seen.add(word)
            tag = fields[-1] if len(fields) == 3 or (len(fields) == 2 and not _is_number(fields[1])) else "word"
            entries.append((word, tag))
    if not entries:
        raise DataError(f"{path}: the lexicon has no words")
    return entries


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def lexicon_tensors(entries: list[tuple[str, str]], tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The words as token ids (N, MAX_WORD_TOKENS), padded with -1, their tag indices (N,) and the tag
    names. Words the tokenizer cannot spell (an unknown token) or that take more than MAX_WORD_TOKENS
    tokens are left out: they can never match the text as the model sees it."""
    counts = Counter(tag for _, tag in entries)
    tags = sorted(counts, key=lambda t: (-counts[t], t))[:MAX_TAGS]
    if len(tags) < len(counts):
        tags.append("other")
    index = {t: i for i, t in enumerate(tags)}
    encoded = tokenizer([w for w, _ in entries], add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    rows, row_tags = [], []
    for (_, tag), ids in zip(entries, encoded):
        if not ids or len(ids) > MAX_WORD_TOKENS or unk in ids:
            continue
        rows.append(ids + [-1] * (MAX_WORD_TOKENS - len(ids)))
        row_tags.append(index.get(tag, len(tags) - 1))
    if not rows:
        raise ConfigError("model.lexicon: none of the lexicon's words can be spelt with the model's vocabulary")
    return torch.tensor(rows, dtype=torch.int32), torch.tensor(row_tags, dtype=torch.int32), tags


class LexiconFeatures(nn.Module):
    """(B, T) token ids -> (B, T, 4 * tags) multi-hot lexicon features (see the module docstring).

    Matching runs in Python over a dictionary keyed by each word's id sequence (every prefix is a key
    too, so a scan stops as soon as no word can continue): about 7 lookups a character.
    """

    def __init__(self, words: int, tags: int, vocab_size: int):
        super().__init__()
        self.tags, self.base = tags, vocab_size + 1
        self.register_buffer("words", torch.full((words, MAX_WORD_TOKENS), -1, dtype=torch.int32))
        self.register_buffer("word_tags", torch.zeros(words, dtype=torch.int32))
        self._table: dict[int, int] | None = None

    @property
    def width(self) -> int:
        return len(SETS) * self.tags

    def load(self, words: torch.Tensor, word_tags: torch.Tensor) -> None:
        self.words.copy_(words)
        self.word_tags.copy_(word_tags)
        self._table = None

    def _build_table(self) -> dict[int, int]:
        """Key of an id sequence -> its tag index, or -1 for a prefix that is not itself a word."""
        table: dict[int, int] = {}
        for ids, tag in zip(self.words.tolist(), self.word_tags.tolist()):
            key = 0
            for position, token in enumerate(ids):
                if token < 0:
                    break
                key = key * self.base + token + 1
                last = position + 1 == MAX_WORD_TOKENS or ids[position + 1] < 0
                if last:
                    if table.get(key, -1) < 0:
                        table[key] = tag
                else:
                    table.setdefault(key, -1)
        return table

    def matches(self, ids: list[int]) -> list[tuple[int, int, int]]:
        """(start, end, tag) of every lexicon word in a token-id sequence, end exclusive."""
        if self._table is None:
            self._table = self._build_table()
        table, base, found = self._table, self.base, []
        for start in range(len(ids)):
            key = 0
            for end in range(start, min(len(ids), start + MAX_WORD_TOKENS)):
                key = key * base + ids[end] + 1
                tag = table.get(key)
                if tag is None:
                    break
                if tag >= 0:
                    found.append((start, end + 1, tag))
        return found

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        lengths = attention_mask.sum(1).tolist()
        b_idx, t_idx, f_idx = [], [], []
        for b, (row, n) in enumerate(zip(input_ids.tolist(), lengths)):
            for start, end, tag in self.matches(row[:n]):
                if end - start == 1:
                    places = [(start, 3)]  # S
                else:
                    places = [(start, 0), (end - 1, 2)] + [(t, 1) for t in range(start + 1, end - 1)]
                for t, s in places:
                    b_idx.append(b)
                    t_idx.append(t)
                    f_idx.append(s * self.tags + tag)
        out = torch.zeros(B, T, self.width, device=input_ids.device)  # (B, T, 4 * tags)
        if b_idx:
            index = torch.tensor([b_idx, t_idx, f_idx], device=input_ids.device)
            out[index[0], index[1], index[2]] = 1.0
        return out
