"""Build a WordPiece tokenizer from the user's texts, for transformers built from scratch.

The vocabulary is the special tokens, every character seen (as a word start and as a ``##``
continuation), then the most frequent whole words, ties broken alphabetically. We build it
ourselves rather than with the ``tokenizers`` WordPiece trainer because that trainer breaks
frequency ties in hash order, so the same texts gave a different vocabulary in every process --
and a from-scratch run could then not be repeated or resumed exactly.

The BERT normalizer and pre-tokenizer split every CJK character into its own word, so on Chinese
text this is a character vocabulary -- which is what lets from-scratch models read Chinese where
the bundled MiniLM cannot.
"""

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def _vocabulary(words: Counter, vocab_size: int, min_frequency: int) -> list[str]:
    chars: Counter = Counter()
    for word, count in words.items():
        chars[word[0]] += count
        for ch in word[1:]:
            chars["##" + ch] += count
    by_count = lambda item: (-item[1], item[0])  # noqa: E731
    vocab = list(SPECIAL.values()) + [c for c, _ in sorted(chars.items(), key=by_count)]
    room = vocab_size - len(vocab)
    frequent = [w for w, n in sorted(words.items(), key=by_count) if n >= min_frequency and len(w) > 1]
    return vocab + frequent[: max(room, 0)]


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer for ``texts`` ([CLS] a [SEP] b [SEP] templates); the same
    texts always give the same vocabulary."""
    normalizer = normalizers.BertNormalizer(
        lowercase=lowercase, handle_chinese_chars=True, strip_accents=None, clean_text=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = _vocabulary(words, vocab_size, min_frequency)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=SPECIAL["unk_token"]))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
