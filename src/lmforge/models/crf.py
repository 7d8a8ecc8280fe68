"""A linear-chain conditional random field over per-token emission scores, for tagging.

Reference: Lafferty, McCallum & Pereira (2001), "Conditional Random Fields: Probabilistic Models for
Segmenting and Labeling Sequence Data". A path y_1..y_n over emissions E (n, L) scores

    s(y) = start[y_1] + sum_t E[t, y_t] + sum_{t>1} transitions[y_{t-1}, y_t] + end[y_n]

and p(y | E) = exp(s(y)) / Z, where Z sums exp(s) over all L^n paths. log Z comes from the forward
algorithm, the best path from Viterbi, per-position posteriors from forward-backward (Rabiner 1989).

Shapes: B batch, T padded length, L tags. A row's real tokens are the left-aligned prefix where
mask is True; its length n = mask.sum(1) may be 0 (a window with no labelled token).
"""

import torch
import torch.nn as nn

# Score added to a move the tag scheme forbids. Finite rather than -inf so that a position where
# every move is forbidden still gives a finite logsumexp (no nan in the loss or its gradient), yet far
# beyond any encoder logit: such paths get probability ~exp(-1e4) = 0 and never win Viterbi.
DISALLOWED = -1e4


class CRF(nn.Module):
    """Linear-chain CRF on top of emissions (B, T, L): NLL loss, Viterbi decoding, marginals.

    allowed, optional: (start_allowed (L,), trans_allowed (L, L) [from i to j], end_allowed (L,)) of
    bools from the tag scheme (BIO: I-X only after B-X or I-X, never first). Forbidden starts, moves
    and ends get DISALLOWED added, in the likelihood as well as in decoding.
    """

    def __init__(self, num_tags: int, allowed: tuple | None = None):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"CRF needs at least one tag, got num_tags={num_tags}")
        self.num_tags = num_tags
        # Zeros rather than random: an untrained, unconstrained CRF then adds nothing to the encoder
        # (decode = per-token argmax, marginals = per-token softmax), and results need no seed.
        # Zeros are no symmetry trap here: the emissions differ per tag, so the gradients do too.
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [i, j]: from tag i to tag j
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        # Constraints come from the tag scheme, not from training: keep them out of the state dict
        # so a checkpoint holds only the learned scores; call set_allowed() again after loading.
        L = num_tags
        self.register_buffer("start_allowed", torch.ones(L, dtype=torch.bool), persistent=False)
        self.register_buffer("trans_allowed", torch.ones(L, L, dtype=torch.bool), persistent=False)
        self.register_buffer("end_allowed", torch.ones(L, dtype=torch.bool), persistent=False)
        self.set_allowed(allowed)

    def extra_repr(self) -> str:
        free = all(bool(ok.all()) for ok in (self.start_allowed, self.trans_allowed, self.end_allowed))
        return f"num_tags={self.num_tags}, constrained={not free}"

    def set_allowed(self, allowed: tuple | None) -> None:
        """Install (start_allowed, trans_allowed, end_allowed) constraints; None allows everything."""
        L = self.num_tags
        if allowed is None:
            allowed = ([True] * L, [[True] * L] * L, [True] * L)
        if len(allowed) != 3:
            raise ValueError("CRF allowed must be (start_allowed, trans_allowed, end_allowed)")
        for name, value, shape in zip(("start_allowed", "trans_allowed", "end_allowed"), allowed, ((L,), (L, L), (L,))):
            value = torch.as_tensor(value, dtype=torch.bool)
            if value.shape != shape:
                raise ValueError(f"CRF {name} has shape {tuple(value.shape)}, expected {shape} for {L} tags")
            getattr(self, name).copy_(value)  # copy_ keeps the buffer on the module's device

    # ----------------------------------------------------------------------------------------------

    def forward(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        reduction: str = "mean",
        tag_sets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Negative log-likelihood -log p(tags | emissions) = log Z - s(tags).

        emissions (B, T, L), tags (B, T) long (values at masked positions are ignored, e.g. -100),
        mask (B, T) bool, a left-aligned prefix per row. Rows of length 0 contribute 0.
        reduction: "none" -> (B,); "sum"; "mean" over the rows of length >= 1 (0 if there are none).

        tag_sets, optional (B, T, L) bool: partial labels. Position t may carry any tag set in
        tag_sets[:, t] (``tags`` is then not read), and the likelihood is that of the set of paths
        through them: -log sum_{y consistent} p(y) = log Z - log sum_{y consistent} exp(s(y)), the
        numerator by the forward algorithm over the allowed tags only (Tsuboi et al., 2008, "Training
        Conditional Random Fields Using Incomplete Annotations"). A one-hot row is an exact tag.
        """
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"CRF reduction must be 'mean', 'sum' or 'none', got '{reduction}'")
        em, mask = self._prepare(emissions, mask)
        if tag_sets is None and tags.shape != mask.shape:
            raise ValueError(f"CRF tags have shape {tuple(tags.shape)}, expected {tuple(mask.shape)}")
        start, trans, end = self._scores(em.dtype)
        alphas = self._forward_alphas(em, mask, start, trans)  # (B, T, L)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)  # (B,)
        if tag_sets is None:
            gold = self._path_score(em, tags, mask, start, trans, end)  # (B,)
        else:
            if tag_sets.shape != em.shape:
                raise ValueError(f"CRF tag_sets have shape {tuple(tag_sets.shape)}, expected {tuple(em.shape)}")
            allowed = em + (~tag_sets.bool()).to(em.dtype) * DISALLOWED  # (B, T, L)
            gold = torch.logsumexp(self._forward_alphas(allowed, mask, start, trans)[:, -1] + end, dim=1)
        nonempty = mask[:, 0]  # (B,) a prefix mask is non-empty iff its first position is set
        nll = torch.where(nonempty, log_z - gold, 0.0)  # (B,)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        return nll.sum() / nonempty.sum().clamp(min=1)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi: the highest-scoring path per row, as a list of n tag ids (n = row's mask sum)."""
        em, mask = self._prepare(emissions, mask)
        start, trans, end = self._scores(em.dtype)
        B, T, L = em.shape
        score = start + em[:, 0]  # (B, L) best score of a path ending in each tag
        stay = torch.arange(L, device=em.device).expand(B, L)  # (B, L)
        backpointers = []
        for t in range(1, T):
            # (B, L, 1) + (L, L) + (B, 1, L): rows index the previous tag i, columns the next tag j
            cand = score[:, :, None] + trans + em[:, t, None, :]  # (B, L, L)
            # argmax + gather, not max(dim=1): on small CPU tensors torch 2.13's values-and-indices
            # max kernel measured ~1000x slower (ms per call) with more than one thread.
            prev = cand.argmax(dim=1)  # (B, L) best previous tag for each next tag
            best = cand.gather(1, prev[:, None, :]).squeeze(1)  # (B, L)
            score = torch.where(mask[:, t, None], best, score)
            # Past a row's end every tag points back at itself, so one backtrack from T-1 serves all
            # rows: it walks unchanged through the padding down to each row's real last tag.
            backpointers.append(torch.where(mask[:, t, None], prev, stay))
        tag = (score + end).argmax(dim=1)  # (B,)
        path = [tag]
        for prev in reversed(backpointers):
            tag = prev.gather(1, tag[:, None]).squeeze(1)  # (B,)
            path.append(tag)
        rows = torch.stack(path[::-1], dim=1).tolist()  # (B, T)
        return [row[:n] for row, n in zip(rows, mask.sum(1).tolist())]

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Posterior p(y_t = j | emissions) by forward-backward, (B, T, L); zeros at masked positions."""
        em, mask = self._prepare(emissions, mask)
        start, trans, end = self._scores(em.dtype)
        B, T, L = em.shape
        alphas = self._forward_alphas(em, mask, start, trans)  # (B, T, L)
        # beta[:, t, i] = log-sum of the scores of every continuation after tag i at position t
        beta = end.expand(B, L)  # (B, L)
        betas = [beta]
        for t in range(T - 2, -1, -1):
            # (L, L) + (B, 1, L) -> sum out the next tag j (dim 2)
            step = torch.logsumexp(trans + (em[:, t + 1] + beta)[:, None, :], dim=2)  # (B, L)
            # a row whose last real token is t ends here: only the end score lies beyond it
            beta = torch.where(mask[:, t + 1, None], step, end)
            betas.append(beta)
        betas = torch.stack(betas[::-1], dim=1)  # (B, T, L)
        # every position's alpha + beta sums to the same Z; normalising each position on its own
        # (not by the row's log Z) keeps float rounding on long, confident rows from putting a tag
        # above 1 (1.00002 was seen on MSRA) or a position's sum off 1
        probs = (alphas + betas).softmax(-1)  # (B, T, L)
        return probs.masked_fill(~mask[..., None], 0.0)

    # ----------------------------------------------------------------------------------------------

    def _prepare(self, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Check shapes and mask; emissions in at least float32 with the padding zeroed."""
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags or emissions.shape[1] == 0:
            raise ValueError(f"CRF emissions must be (B, T>=1, {self.num_tags}), got {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"CRF mask has shape {tuple(mask.shape)}, expected {tuple(emissions.shape[:2])}")
        mask = mask.bool()
        # The recursions carry a row's last state through its padding; a hole in the mask would
        # silently join two segments, so reject it.
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("CRF mask rows must be a left-aligned prefix of True values (no gaps)")
        # bf16/fp16 lose the small score differences the loss is made of over T steps of logsumexp.
        dtype = torch.promote_types(emissions.dtype, torch.float32)
        # Padding may hold anything (even nan); zero it so it cannot reach the loss or its gradient.
        em = emissions.to(dtype).masked_fill(~mask[..., None], 0.0)  # (B, T, L)
        return em, mask

    def _scores(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """start (L,), transitions (L, L), end (L,) with DISALLOWED added where the scheme forbids."""

        def penalised(score, ok):
            return score.to(dtype) + (~ok).to(dtype) * DISALLOWED

        return (
            penalised(self.start_transitions, self.start_allowed),
            penalised(self.transitions, self.trans_allowed),
            penalised(self.end_transitions, self.end_allowed),
        )

    @staticmethod
    def _forward_alphas(em, mask, start, trans) -> torch.Tensor:
        """alpha[:, t, j] = log-sum of the scores of all prefixes ending in tag j at t, (B, T, L).
        Past a row's end its last alpha is carried forward, so alpha[:, -1] is every row's final one."""
        alpha = start + em[:, 0]  # (B, L)
        alphas = [alpha]
        for t in range(1, em.shape[1]):
            # (B, L, 1) + (L, L) + (B, 1, L) -> sum out the previous tag i (dim 1)
            step = torch.logsumexp(alpha[:, :, None] + trans + em[:, t, None, :], dim=1)  # (B, L)
            alpha = torch.where(mask[:, t, None], step, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, dim=1)

    @staticmethod
    def _path_score(em, tags, mask, start, trans, end) -> torch.Tensor:
        """s(tags) per row, (B,). Padded tags (e.g. -100) become 0 and their terms are masked out."""
        tags = tags.long().masked_fill(~mask, 0)  # (B, T)
        on = mask.to(em.dtype)  # (B, T)
        emit = em.gather(2, tags[..., None]).squeeze(2)  # (B, T)
        move = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1) - 1).clamp(min=0)[:, None]).squeeze(1)  # (B,)
        return start[tags[:, 0]] + (emit * on).sum(1) + (move * on[:, 1:]).sum(1) + end[last]
