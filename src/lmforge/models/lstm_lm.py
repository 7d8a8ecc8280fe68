"""The lstm family's language model: a unidirectional multi-layer LSTM over token embeddings with
a softmax over the vocabulary, optionally tied to the input embeddings (Press & Wolf, 2017; Inan et
al., 2017) -- the classic neural LM (Zaremba et al., 2014; Merity et al., 2018, without AWD's
regularisers).

It is a ``transformers`` ``GenerationMixin`` model, so ``lmforge generate`` and the server drive it
through HF ``generate``: greedy, sampling, beam search. The cache is the LSTM state: the prompt is
read once, and each new token costs one step of every layer (``use_cache=False`` recomputes the
whole prefix instead; a test checks both give the same logits).

Rows may be right-padded (training batches), left-padded (batched generation) or packed (several
sequences per row, told apart by ``position_ids`` restarting at 0, as SFT packing does): the LSTM
reads only each sequence's own tokens, in order, from a zero state, so padding and neighbours
never change a score.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModelForCausalLM, GenerationMixin
from transformers.utils import ModelOutput

from lmforge.models.lstm_encoder import LstmConfig, LstmPreTrainedModel
from lmforge.tokenization.bpe import train_bpe

IGNORE = -100


class LstmState:
    """The generation cache: (h, c) of every layer, each (layers, B, H), after the tokens read so far."""

    def __init__(self, h: torch.Tensor, c: torch.Tensor, length: int):
        self.h, self.c, self.length = h, c, length

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search keeps the rows of the surviving beams (in place, as HF caches do)."""
        self.h = self.h.index_select(1, beam_idx.to(self.h.device))
        self.c = self.c.index_select(1, beam_idx.to(self.c.device))

    batch_select_indices = reorder_cache  # the server drops finished rows the same way

    def get_seq_length(self, *_) -> int:
        return self.length


@dataclass
class LstmModelOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor | None = None
    cache: LstmState | None = None


@dataclass
class LstmCausalLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: LstmState | None = None

    @property
    def past_key_values(self) -> LstmState | None:
        """The older name of the cache (the server's decode loop reads it)."""
        return self.cache


def sequence_index(
    attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Where each sequence's tokens are: ``index`` (S, L) of flat positions into the (B*T) grid and
    ``lengths`` (S,); None when every row is one whole sequence (the fast path).

    With a mask, a row's sequence is its unmasked tokens in order (left or right padding alike).
    Without one, a position id of 0 after the first column starts a new (packed) sequence."""
    batch, width = shape
    if attention_mask is not None:
        if bool(attention_mask.all()):
            return None
        order = torch.argsort((attention_mask == 0).int(), dim=1, stable=True)  # real tokens first
        index = order + torch.arange(batch, device=order.device)[:, None] * width
        return index, attention_mask.sum(1).clamp(min=1)
    if position_ids is None or not bool((position_ids[:, 1:] == 0).any()):
        return None
    starts = position_ids == 0
    starts[:, 0] = True
    starts = starts.flatten()
    segment = starts.cumsum(0) - 1  # (B*T,)
    flat = torch.arange(batch * width, device=starts.device)
    offset = flat - flat[starts][segment]
    lengths = torch.bincount(segment)
    index = torch.zeros(len(lengths), int(lengths.max()), dtype=torch.long, device=starts.device)
    index[segment, offset] = flat
    return index, lengths


class LstmDecoder(nn.Module):
    """Embeddings -> dropout -> unidirectional LSTM -> dropout (-> projection to the embedding width
    when the output layer is tied to the embeddings and the widths differ)."""

    def __init__(self, config):
        super().__init__()
        # No padding_idx: the padding token is also the end-of-text token, which is a real target.
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        tied = getattr(config, "tie_word_embeddings", False)
        self.project = (
            nn.Linear(config.hidden_size, config.embedding_size)
            if tied and config.hidden_size != config.embedding_size
            else None
        )

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        cache: LstmState | None = None,
        use_cache: bool = False,
        **_,
    ) -> LstmModelOutput:
        batch, width = input_ids.shape
        if attention_mask is not None:
            attention_mask = attention_mask[:, -width:]  # generate passes the whole history's mask
        x = self.dropout(self.embeddings(input_ids))  # (B, T, E)
        state = (cache.h, cache.c) if cache is not None else None
        where = sequence_index(attention_mask, position_ids if cache is None else None, (batch, width))
        if where is None:
            out, (h, c) = self.lstm(x, state)  # (B, T, H)
        else:
            out, (h, c) = self._run_sequences(x, where, state)
        out = self.dropout(out)
        if self.project is not None:
            out = self.project(out)  # (B, T, E)
        new_cache = None
        if use_cache:
            new_cache = LstmState(h, c, (cache.length if cache is not None else 0) + width)
        return LstmModelOutput(last_hidden_state=out, cache=new_cache)

    def _run_sequences(self, x, where, state):
        """Run the LSTM over each sequence alone (packed), and put the outputs back in place."""
        index, lengths = where
        batch, width, _ = x.shape
        flat = x.reshape(batch * width, -1)
        if state is not None and len(lengths) != batch:
            raise ValueError("an LSTM state cannot continue packed rows")
        packed = pack_padded_sequence(flat[index], lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.lstm(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=index.shape[1])  # (S, L, H)
        real = torch.arange(index.shape[1], device=x.device)[None] < lengths.to(x.device)[:, None]
        placed = out.new_zeros(batch * width, out.shape[-1])
        placed[index[real]] = out[real]
        return placed.view(batch, width, -1), (h, c)


class LstmForCausalLM(LstmPreTrainedModel, GenerationMixin):
    base_model_prefix = "model"
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}
    _is_stateful = True  # the state cannot be rolled back (no assisted generation)

    def __init__(self, config):
        super().__init__(config)
        self.model = LstmDecoder(config)
        tied = getattr(config, "tie_word_embeddings", False)
        width = config.embedding_size if tied else config.hidden_size
        self.lm_head = nn.Linear(width, config.vocab_size)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the cache is an LstmState, not a key/value cache

    @staticmethod
    def build_tokenizer(texts: list[str], spec):
        """Byte-level BPE, as the from-scratch Llama: lossless (generation gives back exact text, no
        unknown token) and with the end-of-text token that pre-training blocks need."""
        return train_bpe(texts, vocab_size=spec.vocab_size)

    def get_input_embeddings(self):
        return self.model.embeddings

    def set_input_embeddings(self, value):
        self.model.embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        cache: LstmState | None = None,
        labels=None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: LstmState | None = None,
        **_,
    ) -> LstmCausalLMOutput:
        cache = cache if cache is not None else past_key_values
        out = self.model(input_ids, attention_mask, position_ids, cache, use_cache=bool(use_cache))
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)  # (B, T, V)
        loss = None
        if labels is not None:  # position t predicts token t+1
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
        return LstmCausalLMOutput(loss=loss, logits=logits, cache=out.cache)


AutoModelForCausalLM.register(LstmConfig, LstmForCausalLM, exist_ok=True)
