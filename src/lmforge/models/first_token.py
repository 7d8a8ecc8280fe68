"""The last encoder layer of a BERT-style sequence classifier computes the first token only.

A BERT classifier reads one vector: its pooler takes the last layer's output at the first token
([CLS]). The other positions of that layer are computed and thrown away. In the last layer only the
keys and values need every token; the query, the attention output, its projection and the
feed-forward block are needed at the first token alone. For MiniLM-L6 that leaves about 10/12 of one
layer in six undone: ~14% of the forward and backward arithmetic of a training step, with the same
logits, loss and gradients (tests/models/test_first_token.py).

It applies while the model trains, on padded batches and on packed rows (``models/unpadded.py``: the
first tokens' outputs go back to their places in the row, which the encoder scatters to the rows
its pooler reads). Evaluation, prediction and saved models run the untouched layer, so ``lmforge
eval`` and the end of a run compute the same thing. Architectures other than BERT's, models whose head does not read the pooler,
and prompt-learning adapters (their virtual tokens come first) keep the whole layer:
``first_token_reason`` says why. Under ``train.gradient_checkpointing`` the shortened layer is not
recomputed in the backward pass: it keeps the first token's activations and the keys and values.
"""

import types

import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from lmforge.models.unpadded import PACK_KEY, Pack, hf_model, scatter_rows

# Heads whose logits are computed from the pooler's first-token vector and nothing else.
POOLED_HEADS = ("BertForSequenceClassification",)


def first_token_reason(model) -> str | None:
    """Why the last layer of ``model`` must compute every token while it trains, or None."""
    inner = hf_model(model)
    name = type(inner).__name__
    if name not in POOLED_HEADS:
        return f"{name} (first-token last layer: {', '.join(POOLED_HEADS)})"
    config = inner.config
    if config.is_decoder or config.add_cross_attention:
        return "a decoder"
    peft_config = getattr(model, "peft_config", None)
    if peft_config and any(c.is_prompt_learning for c in peft_config.values()):
        return "a prompt-learning adapter (its virtual tokens come before [CLS])"
    if getattr(inner.bert, "pooler", None) is None:
        return "no pooler"
    return None


def enable_first_token(model) -> bool:
    """Make the last layer of ``model`` compute the first token only while training on padded
    batches; False (nothing changed) where ``first_token_reason`` gives a reason."""
    if first_token_reason(model) is not None:
        return False
    layer = hf_model(model).bert.encoder.layer[-1]
    # a method of the layer (not a closure over it): a deep copy of the model gets its own
    layer.forward = types.MethodType(_forward, layer)
    return True


def _forward(layer, hidden_states, attention_mask=None, encoder_hidden_states=None, *rest, **kwargs):
    cross = encoder_hidden_states is not None or rest or kwargs.get("encoder_hidden_states") is not None
    if not layer.training or cross:
        full = type(layer).forward.__get__(layer)
        return full(hidden_states, attention_mask, encoder_hidden_states, *rest, **kwargs)
    attention = layer.attention.self
    pack: Pack | None = kwargs.get(PACK_KEY)

    def heads(states: torch.Tensor) -> torch.Tensor:  # (rows, length, hidden) -> (rows, H, length, D)
        return states.view(*states.shape[:2], -1, attention.attention_head_size).transpose(1, 2)

    dropout = attention.dropout.p if attention.training else 0.0
    if pack is None:  # padded (rows, width, hidden): the attention the model is set up with
        first = hidden_states[:, :1]
        if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
            attention_mask = attention_mask[:, :, :1]  # the first query's row of the mask
        kwargs.pop("encoder_attention_mask", None)
        kwargs.pop("cache", None)
        implementation = attention.config._attn_implementation
        compute = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        context, _ = compute(
            attention,
            heads(attention.query(first)),
            heads(attention.key(hidden_states)),
            heads(attention.value(hidden_states)),
            attention_mask,
            dropout=dropout,
            scaling=attention.scaling,
            **kwargs,
        )  # (rows, 1, H, D)
    else:  # a packed row (1, N, hidden): each text's first token attends to that text's tokens
        starts = torch.nonzero(pack.index % pack.width == 0).squeeze(1)  # (rows,) in text order
        first = hidden_states[0, starts].unsqueeze(1)  # (rows, 1, hidden)
        lengths = torch.bincount(pack.index // pack.width, minlength=pack.rows)
        mask = (torch.arange(pack.width, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]
        context = F.scaled_dot_product_attention(
            heads(attention.query(first)),
            heads(scatter_rows(attention.key(hidden_states), pack)),
            heads(scatter_rows(attention.value(hidden_states), pack)),
            attn_mask=mask,
            dropout_p=dropout,
            scale=attention.scaling,
        ).transpose(1, 2)  # (rows, 1, H, D)
    output = layer.feed_forward_chunk(layer.attention.output(context.reshape(first.shape[0], 1, -1), first))
    if pack is None:
        return output  # (rows, 1, hidden)
    # back in the packed row at the first tokens (the encoder scatters it to rows for the pooler)
    row = output.new_zeros((1, hidden_states.shape[1], output.shape[-1]))
    return row.index_copy(1, starts, output.transpose(0, 1))
