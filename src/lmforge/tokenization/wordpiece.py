"""Train a WordPiece tokenizer on the user's texts, for transformers built from scratch.

The BERT normalizer and pre-tokenizer split every CJK character into its own word, so a vocabulary
trained on Chinese text is a character vocabulary -- which is what lets from-scratch models read
Chinese where the bundled MiniLM cannot.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
           "sep_token": "[SEP]", "mask_token": "[MASK]"}


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True,
                    min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer trained on ``texts`` ([CLS] a [SEP] b [SEP] templates)."""
    tok = Tokenizer(models.WordPiece(unk_token=SPECIAL["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, handle_chinese_chars=True,
                                                strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL.values()))
    tok.train_from_iterator(texts, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
