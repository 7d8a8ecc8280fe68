"""Token attributions of a score that a model computes from token ids, by captum's methods.

``forward(ids, *extra)`` returns one score per row (the target class's probability, an entity's
log-probability, ...). Gradient methods attribute through the model's input embedding layer
(captum's layer attributions: the ids stay integers); occlusion replaces one token at a time by the
baseline id and records how much the score falls. Special tokens ([CLS], [SEP], ...) stay as they are
in every baseline and get no attribution of their own.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from captum.attr import FeatureAblation, LayerGradientXActivation, LayerIntegratedGradients

from lmforge.errors import ConfigError

GRADIENT_METHODS = ("integrated_gradients", "gradient_x_input")
METHODS = (*GRADIENT_METHODS, "occlusion", "attention")
METHOD_HELP = {
    "integrated_gradients": "Integrated Gradients from a baseline of padding tokens (Sundararajan et al., 2017)",
    "gradient_x_input": "gradient of the score times the input embedding (one backward pass)",
    "occlusion": "how much the score falls when the token is replaced by padding",
    "attention": "the attention of the first token over the others, last layer, mean of the heads",
}


@dataclass
class Attribution:
    """One explained text: its tokens with their attributions (and character offsets into ``text``
    where the tokenizer gives them), what was explained and how."""

    text: str
    tokens: list[str]
    scores: list[float]
    method: str
    target: str
    offsets: list[tuple[int, int] | None] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    maps: dict | None = None  # attention: {"tokens": all tokens, "attention": (layers, heads, T, T)}

    def as_json(self) -> dict:
        rows = []
        for i, (token, score) in enumerate(zip(self.tokens, self.scores)):
            row: dict = {"token": token, "attribution": round(float(score), 6)}
            span = self.offsets[i] if i < len(self.offsets) else None
            if span is not None:
                row["start"], row["end"] = span
            rows.append(row)
        return {"text": self.text, **self.extra, "target": self.target, "method": self.method, "tokens": rows}


def check_method(method: str, allowed: tuple[str, ...], what: str) -> None:
    if method not in allowed:
        raise ConfigError(f"--method {method}: not available for {what}; choose from {', '.join(allowed)}")


def baseline_ids(ids: torch.Tensor, special: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The ids with every non-special token replaced by ``pad_id``."""
    return torch.where(special, ids, torch.full_like(ids, pad_id))


def attribute(
    forward: Callable[..., torch.Tensor],
    embeddings: torch.nn.Module,
    ids: torch.Tensor,
    special: torch.Tensor,
    pad_id: int,
    method: str,
    extra: tuple = (),
    steps: int = 50,
) -> tuple[torch.Tensor, dict]:
    """(T,) attributions of the one row ``ids`` (1, T) and facts about the computation (Integrated
    Gradients: its convergence delta, the error of the completeness axiom)."""
    baseline = baseline_ids(ids, special, pad_id)
    info: dict = {}
    if method == "integrated_gradients":
        ig = LayerIntegratedGradients(forward, embeddings)
        values, delta = ig.attribute(
            ids,
            baselines=baseline,
            additional_forward_args=extra,
            n_steps=steps,
            internal_batch_size=min(steps, 64),
            return_convergence_delta=True,
        )
        scores = values.sum(-1)[0]
        info["convergence_delta"] = round(float(delta.abs().max()), 6)
    elif method == "gradient_x_input":
        scores = LayerGradientXActivation(forward, embeddings).attribute(ids, additional_forward_args=extra).sum(-1)[0]
    elif method == "occlusion":
        ablation = FeatureAblation(forward)
        scores = ablation.attribute(ids, baselines=baseline, additional_forward_args=extra, perturbations_per_eval=16)[
            0
        ]
    else:
        raise ConfigError(f"--method {method}: not a gradient or occlusion method ({', '.join(METHODS)})")
    scores = scores.detach().float().cpu().masked_fill(special[0].cpu(), 0.0)
    return scores, info


def without_words(text: str, offsets: list[tuple[int, int]], keep: list[bool]) -> str:
    """``text`` with the words whose ``keep`` is False cut out (and the space after each)."""
    out, at = [], 0
    for (start, end), kept in zip(offsets, keep):
        if not kept:
            out.append(text[at:start])
            at = end
            while at < len(text) and text[at] == " ":
                at += 1
    out.append(text[at:])
    return "".join(out)


def word_occlusion(score: Callable[[list[bool]], float], count: int) -> list[float]:
    """For models that are not torch modules (n-gram): how much ``score`` (of which of the ``count``
    words are kept) falls when each word is left out, by captum's FeatureAblation over a presence mask."""
    if not count:
        return []

    def forward(mask: torch.Tensor) -> torch.Tensor:
        return torch.tensor([score([keep > 0.5 for keep in row]) for row in mask.tolist()])

    present = torch.ones((1, count))
    values = FeatureAblation(forward).attribute(present, baselines=0.0, perturbations_per_eval=32)
    return [float(v) for v in values[0]]
