"""The lstm family's networks: its config, the bidirectional LSTM encoder over token embeddings
(optionally with hashed bigrams, a character CNN, lexicon and segmenter features, fixed vectors),
and the classifier and tagger on it. The language model is in ``lstm_lm.py``; building either from a
spec is ``lstm.py``.

They are ``transformers`` ``PreTrainedModel``s, so saving, checkpoints and the run folder work as for
every other model; ``config.json`` names the model type ``lmforge_lstm``, which this module registers
with transformers' Auto classes (lmforge's own classes, never remote code).
"""

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from lmforge.models.char_cnn import CharCNN
from lmforge.models.lexicon import LexiconFeatures
from lmforge.models.segmenter import SegmenterFeatures
from lmforge.tokenization.wordpiece import train_wordpiece


class LstmConfig(PretrainedConfig):
    model_type = "lmforge_lstm"

    def __init__(
        self,
        vocab_size: int = 8000,
        embedding_size: int = 128,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.1,
        pad_token_id: int = 0,
        bigram_buckets: int = 0,
        tie_word_embeddings: bool = False,
        char_cnn: int = 0,
        char_vocab_size: int = 0,
        char_max_length: int = 0,
        lexicon_words: int = 0,
        lexicon_tags: list[str] | None = None,
        char_vectors_width: int = 0,
        segmenter_tags: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.embedding_size, self.hidden_size = vocab_size, embedding_size, hidden_size
        self.num_layers, self.dropout, self.bigram_buckets = num_layers, dropout, bigram_buckets
        self.tie_word_embeddings = tie_word_embeddings  # the language model's output layer
        self.char_cnn, self.char_vocab_size, self.char_max_length = char_cnn, char_vocab_size, char_max_length
        self.lexicon_words, self.lexicon_tags = lexicon_words, list(lexicon_tags or [])  # model.lexicon
        self.char_vectors_width = char_vectors_width  # model.char_vectors
        self.segmenter_tags = list(segmenter_tags or [])  # model.segmenter


class LstmPreTrainedModel(PreTrainedModel):
    config_class = LstmConfig
    base_model_prefix = "encoder"

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)

    def get_input_embeddings(self):
        """The token embeddings (what ``lmforge explain`` attributes through)."""
        return self.encoder.embeddings

    @staticmethod
    def build_tokenizer(texts: list[str], spec):
        """The vocabulary a head reads, built from the training texts (the language model overrides it)."""
        return train_wordpiece(texts, vocab_size=spec.vocab_size, lowercase=spec.lowercase)


def bigram_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, buckets: int):
    """Hashed ids of each token's left bigram (previous, this) and right bigram (this, next).

    Hashing needs no bigram vocabulary, so the tokenizer and the data pipeline stay as they are; at a
    sentence's edges the missing neighbour is the padding id, so "first character" is a bigram of its
    own. Collisions at a few hundred thousand buckets cost little (character bigrams of a 2M-character
    corpus number a few hundred thousand)."""
    ids = (input_ids.long() + 1) * attention_mask.long()  # 0: outside the sentence
    left = torch.nn.functional.pad(ids, (1, 0))[:, :-1]
    right = torch.nn.functional.pad(ids, (0, 1))[:, 1:]
    mult = 1_000_003  # a prime above any vocabulary
    return (left * mult + ids) % buckets, ((ids * mult + right) * 7 + 3) % buckets


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence of (B, T, F) reversed within its own length, padding left in place (its own
    inverse)."""
    B, T = x.shape[:2]
    steps = torch.arange(T, device=x.device).expand(B, T)
    order = lengths[:, None] - 1 - steps
    order = torch.where(order >= 0, order, steps)
    return x.gather(1, order[..., None].expand_as(x))


class LstmEncoder(nn.Module):
    """Embeddings (and, optionally, hashed bigram embeddings, a character CNN and lexicon features)
    -> dropout -> bidirectional LSTM over
    the real (unpadded) tokens.

    Character bigrams are the strongest cheap feature for Chinese tagging: a character's meaning
    depends on its neighbours, and a word boundary shows in the bigram more than in either character.
    """

    def __init__(self, config: LstmConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.buckets = getattr(config, "bigram_buckets", 0)
        width = config.embedding_size
        if self.buckets:
            self.bigrams = nn.Embedding(self.buckets, config.embedding_size)
            width = 3 * config.embedding_size
        self.chars = None
        if getattr(config, "char_cnn", 0):
            self.chars = CharCNN(
                config.vocab_size,
                config.char_vocab_size,
                config.char_max_length,
                config.char_cnn,
                dropout=config.dropout,
            )
            width += config.char_cnn
        self.lexicon = None
        if getattr(config, "lexicon_words", 0):
            self.lexicon = LexiconFeatures(config.lexicon_words, len(config.lexicon_tags), config.vocab_size)
            width += self.lexicon.width
        self.segmenter = None
        if getattr(config, "segmenter_tags", None):
            self.segmenter = SegmenterFeatures(config.vocab_size, config.segmenter_tags)
            width += self.segmenter.width
        self.vectors_width = getattr(config, "char_vectors_width", 0)
        if self.vectors_width:
            # Fixed pretrained vectors (model.char_vectors): a buffer, saved with the weights, not trained.
            self.register_buffer("vectors", torch.zeros(config.vocab_size, self.vectors_width))
            width += self.vectors_width
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            width,
            config.hidden_size,
            num_layers=config.num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        # One-direction, one-layer LSTMs that run with self.lstm's weights (functional_call) in the
        # CPU path; a tuple, so they are not submodules and add nothing to the saved weights.
        self._skeletons = (
            nn.LSTM(width, config.hidden_size, batch_first=True),
            nn.LSTM(2 * config.hidden_size, config.hidden_size, batch_first=True),
        )

    def forward(self, input_ids, attention_mask=None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)  # (B, T, E)
        if self.buckets:
            left, right = bigram_ids(input_ids, attention_mask, self.buckets)
            x = torch.cat([x, self.bigrams(left), self.bigrams(right)], dim=-1)
        if self.chars is not None:
            x = torch.cat([x, self.chars(input_ids)], dim=-1)  # (B, T, E + F)
        if self.lexicon is not None:
            x = torch.cat([x, self.lexicon(input_ids, attention_mask)], dim=-1)  # (B, T, ... + 4 * tags)
        if self.segmenter is not None:
            x = torch.cat([x, self.segmenter(input_ids, attention_mask)], dim=-1)  # (B, T, ... + 4 * tags)
        if self.vectors_width:
            x = torch.cat([x, nn.functional.embedding(input_ids, self.vectors)], dim=-1)  # (B, T, ... + V)
        x = self.dropout(x)
        lengths = attention_mask.sum(1).clamp(min=1)
        if x.is_cuda:
            # cuDNN runs packed sequences fast; packing keeps padding out of the backward direction.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        else:
            out = self._two_pass(x, lengths)
        return self.dropout(out)  # (B, T, 2H)

    def _two_pass(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The bidirectional LSTM as two one-direction passes over the padded batch: the forward pass
        as is (padding comes after every real token, so it changes no real output), the backward pass
        over each sequence reversed within its own length. Same outputs as packing (a test checks),
        with the weights of ``self.lstm``; on the CPU a training step on packed sequences takes about
        2.3x as long (``bench/lstm_throughput.py``, MSRA batches as training draws them)."""
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
        for layer in range(self.lstm.num_layers):
            if layer:
                x = nn.functional.dropout(x, self.lstm.dropout, self.training)  # nn.LSTM's between layers
            skeleton = self._skeletons[min(layer, 1)]
            forward = functional_call(skeleton, self._weights(layer, ""), (x,))[0]
            backward = reverse_within(
                functional_call(skeleton, self._weights(layer, "_reverse"), (reverse_within(x, lengths),))[0], lengths
            )
            x = torch.cat([forward, backward], dim=-1) * mask  # (B, T, 2H), padding zero
        return x

    def _weights(self, layer: int, direction: str) -> dict:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return {f"{n}_l0": getattr(self.lstm, f"{n}_l{layer}{direction}") for n in names}


class LstmForTokenClassification(LstmPreTrainedModel):
    def __init__(self, config: LstmConfig):
        super().__init__(config)
        self.encoder = LstmEncoder(config)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **_) -> TokenClassifierOutput:
        return TokenClassifierOutput(logits=self.classifier(self.encoder(input_ids, attention_mask)))


class LstmForSequenceClassification(LstmPreTrainedModel):
    def __init__(self, config: LstmConfig):
        super().__init__(config)
        self.encoder = LstmEncoder(config)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **_) -> SequenceClassifierOutput:
        hidden = self.encoder(input_ids, attention_mask)  # (B, T, 2H)
        mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).bool()
        pooled = hidden.masked_fill(~mask[..., None], float("-inf")).amax(1)  # max over time
        return SequenceClassifierOutput(logits=self.classifier(pooled))


# transformers' Auto classes read a saved folder's config.json by model type: registering ours (never
# remote code) lets `lmforge generate` and the server load an lstm run as they load any model.
AutoConfig.register(LstmConfig.model_type, LstmConfig, exist_ok=True)
AutoModelForTokenClassification.register(LstmConfig, LstmForTokenClassification, exist_ok=True)
AutoModelForSequenceClassification.register(LstmConfig, LstmForSequenceClassification, exist_ok=True)
