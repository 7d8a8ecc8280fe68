"""Score label verbalizers after a prompt by their log-likelihood under a causal LM.

The prefix all prompts share (the instruction and the few-shot examples, when they are the same
for every text) runs once and its KV cache is copied to every row. For each prompt the model runs
the rest of the prompt once (batched, left-padded, with the KV cache); the
first token of every verbalizer is scored from the prompt's last logits, and the rest of each
verbalizer is scored by feeding the verbalizers (all labels at once, right-padded) on a copy of
the prompt's cache expanded to one row per label. A naive scorer that runs the whole prompt once per
(prompt, label) is kept as the reference and the benchmark's baseline; the two agree to float
precision (tested).

Returns summed log-probabilities (N, L) and the verbalizer lengths in tokens (L,), from which the
caller length-normalizes (``mean``) or not (``sum``).
"""

import copy

import torch

from lmforge.models.decoding import left_pad


@torch.inference_mode()
def score_labels(
    model, prompts: list[list[int]], verbalizers: list[list[int]], pad: int = 0, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log p(verbalizer | prompt) for every prompt and label: (N, L) and lengths (L,)."""
    device = next(model.parameters()).device
    n_labels = len(verbalizers)
    lengths = torch.tensor([len(v) for v in verbalizers])
    if min(lengths) < 1:
        raise ValueError("a verbalizer has no tokens")
    rest = int(max(lengths)) - 1  # continuation tokens to feed: all but the last
    feed_rows = torch.full((n_labels, max(rest, 1)), pad, dtype=torch.long)
    target_rows = torch.full((n_labels, max(rest, 1)), pad, dtype=torch.long)
    for j, v in enumerate(verbalizers):
        feed_rows[j, : len(v) - 1] = torch.tensor(v[:-1], dtype=torch.long)
        target_rows[j, : len(v) - 1] = torch.tensor(v[1:], dtype=torch.long)
    firsts = torch.tensor([v[0] for v in verbalizers], device=device)
    scores = torch.zeros((len(prompts), n_labels))
    shared, prefix_cache = _shared_prefix(model, prompts, device)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = left_pad([prompts[i][shared:] for i in chunk], pad, device)
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if shared:  # the instruction and examples all prompts share: computed once, copied per row
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(chunk))
            mask = torch.cat([mask.new_ones((len(chunk), shared)), mask], dim=1)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=rest > 0 or cache is not None,
        )
        first = out.logits[:, -1, :].float().log_softmax(-1)[:, firsts]  # (B, L)
        total = first.clone()
        if rest > 0:
            b = len(chunk)
            cache = out.past_key_values
            cache.batch_repeat_interleave(n_labels)  # (B*L, ...)
            feed = feed_rows.to(device).repeat(b, 1)  # (B*L, rest)
            targets = target_rows.to(device).repeat(b, 1)
            real = (torch.arange(rest)[None, :] < (lengths - 1)[:, None]).to(device)  # (L, rest)
            fmask = torch.cat([mask.repeat_interleave(n_labels, 0), real.repeat(b, 1).long()], dim=1)
            fpos = positions[:, -1:].repeat_interleave(n_labels, 0) + 1 + torch.arange(rest, device=device)
            logits = (
                model(input_ids=feed, attention_mask=fmask, position_ids=fpos, past_key_values=cache, use_cache=False)
                .logits.float()
                .log_softmax(-1)
            )  # (B*L, rest, V)
            picked = logits.gather(-1, targets[..., None])[..., 0]  # (B*L, rest)
            total += (picked * real.repeat(b, 1)).sum(-1).view(b, n_labels)
        for row, i in enumerate(chunk):
            scores[i] = total[row].cpu()
    return scores, lengths


def _shared_prefix(model, prompts: list[list[int]], device, least: int = 8):
    """The token prefix every prompt shares (few-shot examples chosen once for all texts) and its
    KV cache, or (0, None) when it is shorter than ``least`` tokens. Each prompt keeps at least one
    token of its own, whose logits score the first answer token."""
    shared = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        k = 0
        while k < shared and p[k] == first[k]:
            k += 1
        shared = k
    if shared < least or len(prompts) < 2:
        return 0, None
    out = model(input_ids=torch.tensor([first[:shared]], device=device), use_cache=True)
    return shared, out.past_key_values


@torch.inference_mode()
def score_labels_naive(model, prompts: list[list[int]], verbalizers: list[list[int]]) -> torch.Tensor:
    """The reference: one forward pass of prompt + verbalizer per (prompt, label)."""
    device = next(model.parameters()).device
    scores = torch.zeros((len(prompts), len(verbalizers)))
    for i, prompt in enumerate(prompts):
        for j, verbalizer in enumerate(verbalizers):
            ids = torch.tensor([prompt + verbalizer], device=device)
            logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
            at = len(prompt) - 1
            scores[i, j] = sum(logp[at + k, t] for k, t in enumerate(verbalizer)).item()
    return scores


def label_probabilities(scores: torch.Tensor, lengths: torch.Tensor, normalize: str = "mean") -> torch.Tensor:
    """Softmax over labels of the (length-normalized) log-likelihoods."""
    values = scores / lengths[None, :] if normalize == "mean" else scores
    return values.softmax(-1)


def calibrate(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Contextual calibration (Zhao et al., 2021): divide out the label prior the prompt shows on a
    content-free input, then renormalize."""
    adjusted = probs / prior.clamp(min=1e-12)
    return adjusted / adjusted.sum(-1, keepdim=True)
