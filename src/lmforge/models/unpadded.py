"""Padding-free ("unpadded") training batches for BERT-style encoders.

Even length-grouped, a batch of short texts computes part of its tokens on padding (SST-2, batches
of 32, groups of 8 batches: 28% more tokens than the texts hold). Here a batch's texts are
concatenated into one row: the embeddings, every linear layer, normalisation and dropout run on the
real tokens only. Attention, the one step that must keep the texts apart, scatters its queries, keys
and values into a padded (texts, longest) block for PyTorch's ``scaled_dot_product_attention``
(padding masked as usual) and gathers the result back. The encoder's output is scattered into the
usual (texts, longest, hidden) shape before the task's head, so a pooler and classifier, a token
classifier or a CRF see what they would have seen padded: the logits equal the padded model's
(tests/models/test_unpadded.py).

Both halves plug into transformers' own extension points: the attention is registered with
``AttentionInterface`` and set as the model's attention implementation (padded batches, as in
evaluation, go to SDPA as before), and the packing travels to it as a keyword argument, which the
model forwards to every attention call. Where a model cannot take packed rows (other architectures,
decoders, prompt-learning adapters that prepend virtual tokens) ``unpadded_reason`` says why and the
task keeps padded batches.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from lmforge.errors import ConfigError

ATTENTION = "lmforge_unpadded"
PACK_KEY = "lmforge_pack"
# Architectures whose embeddings take per-text position ids as given and whose attention goes through
# the attention interface with the model's keyword arguments (each checked against the padded model).
ARCHITECTURES = ("bert",)
# Packing moves each layer's queries, keys, values and attention output between the packed row and the
# padded blocks. Measured on SST-2 (MiniLM, 2 CPU threads, batches of 32): where padding adds 7% tokens
# packed rows are level with padded ones (50.6 against 49.4 samples/s), where it adds 32% they are 31%
# faster (45.7 against 34.9); ``auto`` packs from 15%, a judgement between the two.
PACKING_PAYS = 0.15
# A text joins an attention block whose longest text is at most this many times its length.
BLOCK_SPREAD = 1.5


@dataclass
class Block:
    """Texts of similar length that attention pads together: where their tokens sit in the packed row
    and in the (rows, width) block."""

    tokens: torch.Tensor  # (n,) long: positions in the packed row, text by text
    slots: torch.Tensor  # (n,) long: row * width + position in the block of each of those tokens
    rows: int
    width: int
    key_mask: torch.Tensor  # (rows, 1, 1, width) bool: True at real tokens

    def to(self, device) -> "Block":
        return Block(self.tokens.to(device), self.slots.to(device), self.rows, self.width, self.key_mask.to(device))


@dataclass
class Pack:
    """How a packed row maps back to the batch: ``index`` places each token in the (rows, width)
    padded batch (for the head), ``blocks`` group the texts for attention."""

    index: torch.Tensor  # (N,) long: row * width + position of each packed token
    rows: int
    width: int
    blocks: list[Block]

    def to(self, device) -> "Pack":
        return Pack(self.index.to(device), self.rows, self.width, [b.to(device) for b in self.blocks])


def pack_features(features: list[dict]) -> dict:
    """One packed row of the examples' ``input_ids`` (and ``token_type_ids`` when they have them):
    ``input_ids``, ``position_ids`` and ``token_type_ids`` of shape (1, N), N the real tokens, and the
    ``Pack`` under ``PACK_KEY``."""
    lengths = torch.tensor([len(f["input_ids"]) for f in features])
    width = int(lengths.max())
    ids = torch.tensor([i for f in features for i in f["input_ids"]], dtype=torch.long)[None]  # (1, N)
    positions = torch.cat([torch.arange(n) for n in lengths.tolist()])  # (N,)
    rows = torch.arange(len(features)).repeat_interleave(lengths)  # (N,)
    batch = {
        "input_ids": ids,
        "position_ids": positions[None],  # (1, N)
        PACK_KEY: Pack(rows * width + positions, len(features), width, _blocks(lengths.tolist())),
    }
    if "token_type_ids" in features[0]:
        types = [t for f in features for t in f["token_type_ids"]]
    else:
        types = [0] * ids.shape[1]
    batch["token_type_ids"] = torch.tensor(types, dtype=torch.long)[None]
    return batch


def _blocks(lengths: list[int]) -> list[Block]:
    """Texts grouped for attention, longest first: a block takes texts down to 1/BLOCK_SPREAD of its
    longest, so attention's (width x width) scores are not paid for short texts beside a long one."""
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    blocks, first = [], 0
    while first < len(order):
        width = lengths[order[first]]
        last = first
        while last + 1 < len(order) and lengths[order[last + 1]] * BLOCK_SPREAD >= width:
            last += 1
        members = order[first : last + 1]
        tokens = torch.cat([torch.arange(starts[i], starts[i] + lengths[i]) for i in members])
        slots = torch.cat([row * width + torch.arange(lengths[i]) for row, i in enumerate(members)])
        mask = _key_mask(torch.tensor([lengths[i] for i in members]), width)
        blocks.append(Block(tokens, slots, len(members), width, mask))
        first = last + 1
    return blocks


def _key_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < lengths[:, None])[:, None, None, :]  # (rows, 1, 1, width)


def scatter_rows(packed: torch.Tensor, pack: Pack) -> torch.Tensor:
    """(1, N, ...) packed -> (rows, width, ...) padded with zeros."""
    flat = packed[0]
    out = flat.new_zeros((pack.rows * pack.width, *flat.shape[1:]))
    return out.index_copy(0, pack.index, flat).view(pack.rows, pack.width, *flat.shape[1:])


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention over a packed row: (1, H, N, D) queries, keys and values -> (1, N, H, D), block by
    block of texts of similar length. A call without a ``Pack`` (a padded batch: evaluation) is
    PyTorch SDPA as transformers runs it."""
    pack: Pack | None = kwargs.get(PACK_KEY)
    if pack is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    heads, dim = query.shape[1], query.shape[3]
    q, k, v = (x[0].transpose(0, 1).reshape(-1, heads * dim) for x in (query, key, value))  # (N, H*D)
    out = q.new_zeros(q.shape)
    for block in pack.blocks:

        def padded(flat, block=block):  # (N, H*D) -> (rows, H, width, D)
            cells = flat.new_zeros(block.rows * block.width, heads * dim)
            cells = cells.index_copy(0, block.slots, flat.index_select(0, block.tokens))
            return cells.view(block.rows, block.width, heads, dim).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(
            padded(q), padded(k), padded(v), attn_mask=block.key_mask, dropout_p=dropout, scale=scaling
        )  # (rows, H, width, D)
        mixed = mixed.transpose(1, 2).reshape(block.rows * block.width, heads * dim).index_select(0, block.slots)
        out = out.index_copy(0, block.tokens, mixed)
    return out.view(1, -1, heads, dim), None


AttentionInterface.register(ATTENTION, _attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # padded batches get SDPA's masks, as before


def hf_model(model):
    """The transformers model inside PEFT and data-parallel wrappers (or the model itself)."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), torch.nn.Module):  # DDP, FSDP
            model = model.module
        else:
            return model


def unpadded_reason(model) -> str | None:
    """Why ``model`` cannot train on packed rows, or None when it can."""
    inner = hf_model(model)
    config = getattr(inner, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in ARCHITECTURES:
        return f"architecture {kind or type(inner).__name__} (packed rows: {', '.join(ARCHITECTURES)})"
    if config.is_decoder or config.is_encoder_decoder:
        return "a decoder"
    if config._attn_implementation not in ("sdpa", ATTENTION):
        return f"attention implementation {config._attn_implementation} (packed rows replace sdpa)"
    peft_config = getattr(model, "peft_config", None)
    if peft_config and any(c.is_prompt_learning for c in peft_config.values()):
        return "a prompt-learning adapter (its virtual tokens are prepended to each text)"
    return None


def enable_unpadded(model) -> None:
    """Make ``model`` accept packed batches as well as padded ones: its attention becomes this
    module's (SDPA for padded batches; it stays set, so recomputation under gradient checkpointing
    runs the same attention), and its encoder's output is scattered back to (rows, width, hidden) --
    and its pooler recomputed on the padded output -- whenever a ``Pack`` came with the call."""
    inner = hf_model(model)
    encoder = inner.base_model
    if getattr(encoder, "_lmforge_unpadded", False):
        return
    inner.config._attn_implementation = ATTENTION
    encoder.register_forward_hook(_restore_rows, with_kwargs=True)
    encoder._lmforge_unpadded = True


def _restore_rows(module, args, kwargs, output):
    pack = kwargs.get(PACK_KEY)
    if pack is None:
        return output
    hidden = scatter_rows(output.last_hidden_state, pack)  # (rows, width, hidden)
    output.last_hidden_state = hidden
    pooler = getattr(module, "pooler", None)
    if pooler is not None and getattr(output, "pooler_output", None) is not None:
        output.pooler_output = pooler(hidden)
    return output


def choose_padding_free(setting: str | bool, model, padding: float) -> tuple[bool, str]:
    """``train.padding_free`` for ``model`` whose padded batches would hold ``padding`` more tokens
    than real ones (0.3: 30% more): (train on packed rows?, the line for the run log). ``auto`` packs
    from ``PACKING_PAYS`` on; a model that packs is made ready (``enable_unpadded``); ``true`` for
    one that cannot is a ``ConfigError``."""
    added = f"padding would add {100 * padding:.0f}% tokens"
    if setting is False:
        return False, f"training batches: padded ({added}; train.padding_free: false)"
    reason = unpadded_reason(model)
    if reason is not None:
        if setting is True:
            raise ConfigError(f"train.padding_free: true, but this model cannot train on packed rows: {reason}")
        return False, f"training batches: padded ({added}; {reason}: no packed rows)"
    if setting == "auto" and padding < PACKING_PAYS:
        return False, f"training batches: padded ({added}; packed rows pay from {100 * PACKING_PAYS:.0f}%)"
    enable_unpadded(model)
    return True, f"training batches: packed rows without padding ({added})"
