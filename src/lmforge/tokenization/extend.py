"""Extend a pretrained WordPiece vocabulary with the characters of the user's texts.

MiniLM's (BERT uncased) vocabulary maps most Chinese characters to ``[UNK]``. Adding each unknown
character -- as a word start and as a ``##`` continuation, most frequent first, ties by code point so
the same texts always give the same vocabulary -- lets the model read them; the model's new
embedding rows are drawn around the mean of the existing rows (``resize_token_embeddings`` with
``mean_resizing``, Hewitt 2021), and continued masked-LM pre-training on text of the new language
then teaches them (``task: masked_lm``).
"""

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from lmforge.errors import ModelError


def unknown_characters(tokenizer, texts: Iterable[str], min_count: int = 1) -> list[str]:
    """Characters of ``texts`` the tokenizer's vocabulary lacks, most frequent first."""
    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab()
    counts: Counter = Counter()
    for text in texts:
        normal = backend.normalizer.normalize_str(text) if backend.normalizer else text
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(normal):
            counts.update(ch for ch in word if ch not in vocab or "##" + ch not in vocab)
    return [ch for ch, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= min_count]


def extend_wordpiece(tokenizer, texts: Iterable[str], min_count: int = 1) -> tuple[PreTrainedTokenizerFast, list[str]]:
    """A copy of a WordPiece ``tokenizer`` that also knows the unknown characters of ``texts``;
    returns it and the characters added. Existing token ids are unchanged."""
    backend = tokenizer.backend_tokenizer
    if not isinstance(backend.model, models.WordPiece):
        raise ModelError(
            f"model.extend_vocab works on WordPiece tokenizers (BERT-style); this model's "
            f"tokenizer is {type(backend.model).__name__}"
        )
    added = unknown_characters(tokenizer, texts, min_count)
    vocab = dict(backend.get_vocab(with_added_tokens=False))
    next_id = max(vocab.values()) + 1
    for ch in added:
        for token in (ch, "##" + ch):
            if token not in vocab:
                vocab[token], next_id = next_id, next_id + 1
    new = Tokenizer.from_str(backend.to_str())
    old_model = backend.model
    new.model = models.WordPiece(
        vocab,
        unk_token=old_model.unk_token,
        continuing_subword_prefix=old_model.continuing_subword_prefix,
        max_input_chars_per_word=old_model.max_input_chars_per_word,
    )
    special = {
        k: getattr(tokenizer, k)
        for k in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")
        if getattr(tokenizer, k, None) is not None
    }
    extended = PreTrainedTokenizerFast(tokenizer_object=new, model_max_length=tokenizer.model_max_length, **special)
    return extended, added
