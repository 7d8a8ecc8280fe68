"""Segmenter features for the character tagger: where a Chinese part-of-speech segmenter puts each
character, and what it calls the word.

The lexicon features (``model.lexicon``) show every dictionary word through a character; a segmenter
makes one choice among them, and its statistical model also cuts out words no dictionary has and
tags them — often a new person name or place, the very entities a tagger trained on one corpus
misses. Each character gets a one-hot vector over (its place in the chosen word: Begin, Middle, End,
Single) x (the word's tag), beside its embedding: the tagger learns how far to trust the segmenter.
Two segmenters are known (``model.segmenter``; a list puts their features side by side):

- ``jieba``: its dictionary and HMM part-of-speech tagger (``nr`` person, ``ns`` place, ``nt``
  organisation). On MSRA's development split, 95% of the entities that training never shows begin and
  end at edges of jieba's words.
- ``thulac``: Tsinghua's THULAC (``pip install thulac``; its model ships inside the package; free for
  research, commercial use needs its authors' licence), a discriminative segmenter and tagger
  trained on People's Daily-style news (``np`` person, ``ns`` place, ``ni`` organisation). Read as an
  entity tagger on MSRA dev, its tags score PER 78.6 and LOC 68.2 F1 against jieba's 43.9 and 57.0
  (ORG 8.8 against 25.0: ``ni`` marks short names only). It is pure Python and slow: 1,000-2,300
  characters a second, so what it cuts is kept on disk (below).

The model sees token ids, not text, so the vocabulary's characters are kept as a buffer of code
points (saved in ``model.safetensors`` with the weights); a token that is not one character (a
special token, a longer WordPiece) is a placeholder the segmenter reads as a symbol. Segmenting is
Python work (jieba on MSRA dev, 130k characters, takes about 3 s); each sentence's features are cached, so training pays
for it once, not once an epoch. The cache keeps ids and features as packed arrays (measured with
tracemalloc: about 470 bytes for a 47-character sentence, so MSRA train's 47k sentences take about
22 MB and a full cache under 100 MB), least recently used first out.

A slow segmenter's words are also kept on disk, in ``$LMFORGE_CACHE/segments/NAME-VERSION.sqlite``
(default ``~/.cache/lmforge``; plain text and JSON, nothing unpickled): segmenting MSRA train with
THULAC takes 16 to 40 minutes the first time (alone or beside another run) and seconds after, for
every later run, seed, ensemble member, evaluation and prediction on the same sentences, in any
process. Processes share the file (sqlite locks it); one that cannot write it goes on without it.

The saved tag list names the segmenters: jieba's tags bare (as models saved before there was a
choice have them), every other segmenter's prefixed with its name (``thulac:np``).
"""

import atexit
import contextlib
import functools
import importlib.metadata
import json
import logging
import sqlite3
import sys
import threading
from array import array
from collections import OrderedDict

import torch
from torch import nn

from lmforge._optional import require
from lmforge.paths import cache_root

log = logging.getLogger("lmforge")

SETS = ("B", "M", "E", "S")
# jieba.posseg's tags by frequency on MSRA dev (n noun, x punctuation, uj 的, nr person, ns place, ...)
TAGS = (
    "n",
    "x",
    "v",
    "uj",
    "m",
    "d",
    "p",
    "r",
    "vn",
    "c",
    "a",
    "nr",
    "ns",
    "f",
    "l",
    "ul",
    "t",
    "i",
    "nz",
    "nt",
    "b",
    "j",
    "u",
    "s",
    "ad",
    "q",
    "uv",
    "zg",
    "uz",
    "ng",
    "nrt",
    "z",
    "an",
    "k",
    "ud",
    "mq",
    "y",
    "ug",
    "vg",
    "nrfg",
    "eng",
    "df",
    "rz",
    "vd",
    "h",
    "g",
    "tg",
    "ag",
    "o",
    "dg",
    "e",
    "rr",
    "vq",
)
PLACEHOLDER = "\u25a1"  # what a token that is not a single character reads as
CACHE_SIZE = 200_000  # sentences whose features are kept


# THULAC's tags (its documentation's list): n noun, np person, ns place, ni organisation, nz other
# proper noun, m numeral, q measure, mq numeral+measure, t time, f direction, s place word, v verb,
# a adjective, d adverb, h prefix, k suffix, i idiom, j abbreviation, r pronoun, c conjunction,
# p preposition, u particle, y modal particle, e interjection, o onomatopoeia, g morpheme,
# w punctuation, x other.
THULAC_TAGS = (
    "n",
    "np",
    "ns",
    "ni",
    "nz",
    "m",
    "q",
    "mq",
    "t",
    "f",
    "s",
    "v",
    "a",
    "d",
    "h",
    "k",
    "i",
    "j",
    "r",
    "c",
    "p",
    "u",
    "y",
    "e",
    "o",
    "g",
    "w",
    "x",
)
SEGMENTERS = ("jieba", "thulac")


MAX_STORED = 2_000_000  # sentences per store file (MSRA train is 47k); beyond, new ones are not kept
_servers = [0]  # servers running in this process that keep what clients send off the disk


def hold_segment_store() -> None:
    """A server starts (``serve``, without ``--store-segments``): from now until it stops, newly
    segmented sentences are not written to the on-disk stores, so nothing a client sends is stored.
    Training and evaluation write them (the store is what makes a second run fast)."""
    _servers[0] += 1


def release_segment_store() -> None:
    _servers[0] = max(0, _servers[0] - 1)


class SegmentStore:
    """(text -> [(word, tag)]) of one segmenter version, in a sqlite file shared by processes.

    New entries are written in batches (and when the process exits); a lookup is one indexed
    SELECT. Thread-safe, for callers that tag from several threads."""

    BATCH = 500

    def __init__(self, name: str, version: str):
        self.path = cache_root() / "segments" / f"{name}-{version}.sqlite"
        self._pending: dict[str, str] = {}
        self._lock = threading.Lock()
        self._db = None
        self._stored, self._full_told = 0, False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            db.execute("CREATE TABLE IF NOT EXISTS segments (text TEXT PRIMARY KEY, words TEXT NOT NULL)")
            db.commit()
            self._stored = int(db.execute("SELECT count(*) FROM segments").fetchone()[0])
            self._db = db
        except (OSError, sqlite3.Error) as exc:
            log.warning("segmenter cache %s: %s; segmenting without it", self.path, exc)
        atexit.register(self.flush)

    def get(self, text: str) -> list[tuple[str, str]] | None:
        with self._lock:
            raw = self._pending.get(text)
            if raw is None and self._db is not None:
                try:
                    row = self._db.execute("SELECT words FROM segments WHERE text = ?", (text,)).fetchone()
                except sqlite3.Error:
                    row = None
                raw = row[0] if row else None
        if raw is None:
            return None
        try:
            return [(str(w), str(t)) for w, t in json.loads(raw)]
        except (ValueError, TypeError):
            return None  # a damaged entry: cut the sentence again

    def put(self, text: str, words: list[tuple[str, str]]) -> None:
        if self._db is None or _servers[0]:
            return  # no file (or a server's texts): the features' own in-memory cache still works
        if self._stored + len(self._pending) >= MAX_STORED:
            if not self._full_told:
                self._full_told = True
                log.warning(
                    "segmenter cache %s holds %d sentences, its most: new ones are not kept", self.path, MAX_STORED
                )
            return
        with self._lock:
            self._pending[text] = json.dumps(words, ensure_ascii=False)
            full = len(self._pending) >= self.BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._pending or self._db is None:
                return
            rows, self._pending = list(self._pending.items()), {}
            try:
                self._db.executemany("INSERT OR IGNORE INTO segments (text, words) VALUES (?, ?)", rows)
                self._db.commit()
                self._stored += len(rows)
            except sqlite3.Error as exc:
                log.warning("segmenter cache %s: %s; entries not kept", self.path, exc)


def _stored(name: str, cut):
    """``cut`` with its answers kept in the segmenter's on-disk store."""
    store = SegmentStore(name, importlib.metadata.version(name))

    def run(text: str) -> list[tuple[str, str]]:
        words = store.get(text)
        if words is None:
            words = cut(text)
            store.put(text, words)
        return words

    run.store = store
    return run


@functools.cache
def _jieba():
    require("jieba", purpose="model.segmenter: jieba")
    import jieba
    import jieba.posseg

    jieba.setLogLevel(60)
    return lambda text: [(w.word, w.flag) for w in jieba.posseg.cut(text)]


@functools.cache
def _thulac():
    """One THULAC model a process (ensemble members share it), its answers stored on disk."""
    thulac = require("thulac", purpose="model.segmenter: thulac")
    with contextlib.redirect_stdout(sys.stderr):  # it prints "Model loaded succeed" to stdout
        model = thulac.thulac()
    lock = threading.Lock()  # its decoder keeps state between calls

    def cut(text: str) -> list[tuple[str, str]]:
        with lock:
            return [(w, t) for w, t in model.cut(text)]

    return _stored("thulac", cut)


_FACTORIES = {"jieba": _jieba, "thulac": _thulac}


def check_segmenters(spec) -> None:
    """Fail now, in one line, when a segmenter ``model.segmenter`` names is not installed (the
    features load it lazily, at the first batch)."""
    for name in segmenter_names(spec):
        require(name, purpose=f"model.segmenter: {name}")


def segmenter_names(spec) -> list[str]:
    """``model.segmenter`` as a list of names (empty when off)."""
    if not spec:
        return []
    return [spec] if isinstance(spec, str) else list(spec)


def segmenter_tags(names=("jieba",)) -> list[str]:
    """The tags the features distinguish, saved with the model: for each segmenter the tags it gives,
    most frequent first (jieba's: as on MSRA's development split), then ``other``; tags of segmenters
    but jieba prefixed with the segmenter's name."""
    out = []
    for name in segmenter_names(names):
        if name == "jieba":
            out += list(TAGS) + ["other"]
        elif name == "thulac":
            out += [f"thulac:{t}" for t in THULAC_TAGS + ("other",)]
        else:
            raise ValueError(f"unknown segmenter {name!r} (known: {', '.join(SEGMENTERS)})")
    return out


def _groups(tags: list[str]) -> list[tuple[str, list[str]]]:
    """Saved tag list -> [(segmenter, its tags without prefix)] in order."""
    groups: list[tuple[str, list[str]]] = []
    for tag in tags:
        name, _, bare = tag.rpartition(":") if ":" in tag else ("jieba", "", tag)
        if not groups or groups[-1][0] != name:
            groups.append((name, []))
        groups[-1][1].append(bare)
    return groups


def word_places(text: str, words: list[tuple[str, str]]) -> list[tuple[int, str]]:
    """(place index in SETS, tag) of each character of ``text`` from a segmenter's (word, tag) list.
    Words are matched against the text, so a segmenter that drops or merges whitespace (THULAC turns
    two spaces into one) cannot shift the characters after it: an unmatched character is a single
    ``other``, and whatever follows a word that cannot be found is ``other`` too."""
    out: list[tuple[int, str]] = []
    pos = 0
    for word, tag in words:
        if not word:
            continue
        at = text.find(word, pos)
        if at < 0 or (at > pos and text[pos:at].strip()):
            if not word.strip():
                continue  # a whitespace word that is not in the text as given
            break
        out.extend((3, "") for _ in range(at - pos))  # skipped whitespace
        n = len(word)
        if n == 1:
            out.append((3, tag))
        else:
            out.extend([(0, tag)] + [(1, tag)] * (n - 2) + [(2, tag)])
        pos = at + n
    out.extend((3, "") for _ in range(len(text) - pos))
    return out


def token_codepoints(tokens: list[str]) -> torch.Tensor:
    """(V,) code point of each vocabulary token that is one character (a ``##`` continuation too),
    else the placeholder's."""
    out = []
    for token in tokens:
        text = token[2:] if token.startswith("##") and len(token) > 2 else token
        out.append(ord(text) if len(text) == 1 else ord(PLACEHOLDER))
    return torch.tensor(out, dtype=torch.int32)


class SegmenterFeatures(nn.Module):
    """(B, T) token ids -> (B, T, 4 * tags): for each segmenter a one-hot (place in its word, the
    word's tag)."""

    def __init__(self, vocab_size: int, tags: list[str]):
        super().__init__()
        self.tags = list(tags)
        self.groups = _groups(self.tags)
        unknown = [name for name, _ in self.groups if name not in _FACTORIES]
        if unknown:
            raise ValueError(
                f"segmenter features: unknown segmenter {unknown[0]!r} in the saved tags "
                f"(known: {', '.join(SEGMENTERS)})"
            )
        # each segmenter's first feature index and tag -> index
        self._offsets, self._index, offset = [], [], 0
        for _, names in self.groups:
            self._offsets.append(offset)
            self._index.append({t: i for i, t in enumerate(names)})
            offset += len(SETS) * len(names)
        self.register_buffer("codepoints", torch.full((vocab_size,), ord(PLACEHOLDER), dtype=torch.int32))
        self._cache: OrderedDict = OrderedDict()
        self._cutters: list | None = None
        self._chars: list[str] | None = None

    @property
    def width(self) -> int:
        return len(SETS) * len(self.tags)

    def load(self, codepoints: torch.Tensor) -> None:
        self.codepoints.copy_(codepoints)
        self._chars, self._cache = None, OrderedDict()

    def features(self, ids: list[int]) -> list[int]:
        """The active feature indices of one sentence: for each segmenter in turn, one a token
        (so ``len(ids) * segmenters`` values, segmenter-major)."""
        key = array("i", ids).tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit.tolist()
        if self._cutters is None:
            self._cutters = [_FACTORIES[name]() for name, _ in self.groups]
        if self._chars is None:
            self._chars = [chr(c) for c in self.codepoints.tolist()]
        text = "".join(self._chars[i] for i in ids)
        out: list[int] = []
        for cut, offset, index, (_, names) in zip(self._cutters, self._offsets, self._index, self.groups):
            other = index["other"]
            for place, tag in word_places(text, cut(text)):
                out.append(offset + place * len(names) + index.get(tag, other))
        self._cache[key] = array("H", out)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        k = len(self.groups)
        lengths = attention_mask.sum(1).tolist()
        b_idx, t_idx, f_idx = [], [], []
        for b, (row, n) in enumerate(zip(input_ids.tolist(), lengths)):
            feats = self.features(row[:n])
            b_idx.extend([b] * len(feats))
            t_idx.extend(list(range(n)) * k)
            f_idx.extend(feats)
        out = torch.zeros(B, T, self.width, device=input_ids.device)
        if b_idx:
            out[torch.tensor(b_idx), torch.tensor(t_idx), torch.tensor(f_idx)] = 1.0
        return out
