"""CRF parity with brute force: every quantity is checked against an enumeration of all L^n paths."""

import itertools
import math

import pytest
import torch

from lmforge.models.crf import CRF

# BIO over two entity types, written out by hand: I-X may only follow B-X or I-X and never starts.
O, B_PER, I_PER, B_LOC, I_LOC = range(5)
BIO_START = [True, True, False, True, False]
#              to: O     B-PER  I-PER  B-LOC  I-LOC
BIO_TRANS = [
    [True, True, False, True, False],  # from O
    [True, True, True, True, False],  # from B-PER
    [True, True, True, True, False],  # from I-PER
    [True, True, False, True, True],  # from B-LOC
    [True, True, False, True, True],
]  # from I-LOC
BIO_END = [True] * 5
BIO = (BIO_START, BIO_TRANS, BIO_END)


def random_crf(L: int, gen: torch.Generator, allowed=None) -> CRF:
    crf = CRF(L, allowed)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return crf


def random_allowed(L: int, gen: torch.Generator) -> tuple:
    """Random constraints on starts, moves and ends; tag 0 stays free so some path always exists."""
    start, trans, end = (torch.rand(shape, generator=gen) > 0.4 for shape in ((L,), (L, L), (L,)))
    start[0] = end[0] = True
    trans[0, :] = trans[:, 0] = True
    return start.tolist(), trans.tolist(), end.tolist()


def prefix_mask(lengths: list[int], T: int) -> torch.Tensor:
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)


def is_allowed(path, allowed) -> bool:
    if allowed is None:
        return True
    start, trans, end = allowed
    return start[path[0]] and end[path[-1]] and all(trans[a][b] for a, b in zip(path, path[1:]))


def brute_scores(crf: CRF, em: torch.Tensor, allowed) -> dict:
    """{path: s(path)} in float64 over every allowed path for one row's emissions (n, L)."""
    start, trans, end = (p.detach().double() for p in (crf.start_transitions, crf.transitions, crf.end_transitions))
    em = em.double()
    n, L = em.shape
    out = {}
    for path in itertools.product(range(L), repeat=n):
        if is_allowed(path, allowed):
            s = start[path[0]] + end[path[-1]] + sum(em[t, y] for t, y in enumerate(path))
            out[path] = float(s + sum(trans[a, b] for a, b in zip(path, path[1:])))
    return out


def log_z(scores: dict) -> float:
    top = max(scores.values())
    return top + math.log(sum(math.exp(s - top) for s in scores.values()))


def random_cases(seed: int, constrained: bool, shortest: int = 0):
    """(generator, crf, constraints, row lengths, emissions) for L in 3..4 and T in 1..4; the first
    row is full and the second empty."""
    gen = torch.Generator().manual_seed(seed)
    for L in (3, 4):
        for T in (1, 2, 3, 4):
            allowed = random_allowed(L, gen) if constrained else None
            crf = random_crf(L, gen, allowed)
            lengths = [T, 0] + [int(n) for n in torch.randint(shortest, T + 1, (3,), generator=gen)]
            yield gen, crf, allowed, lengths, torch.randn(len(lengths), T, L, generator=gen)


def brute_nll(crf, em, lengths, allowed, numerator) -> list[float]:
    """log Z - numerator(row, {path: score}) per row, by enumeration; 0 for an empty row."""
    out = []
    for b, n in enumerate(lengths):
        scores = brute_scores(crf, em[b, :n], allowed) if n else None
        out.append(log_z(scores) - numerator(b, scores) if n else 0.0)
    return out


@pytest.mark.parametrize("constrained", [False, True])
def test_nll_matches_brute_force(constrained):
    for gen, crf, allowed, lengths, em in random_cases(0, constrained):
        T = em.shape[1]
        tags = torch.full((len(lengths), T), -100)

        def gold_score(b, scores):
            gold = list(scores)[int(torch.randint(len(scores), (1,), generator=gen))]
            tags[b, : len(gold)] = torch.tensor(gold)
            return scores[gold]

        expected = brute_nll(crf, em, lengths, allowed, gold_score)
        nll = crf(em, tags, prefix_mask(lengths, T), reduction="none")
        assert torch.allclose(nll, torch.tensor(expected), atol=1e-5), (em.shape, nll, expected)


@pytest.mark.parametrize("constrained", [False, True])
def test_viterbi_matches_brute_force_argmax(constrained):
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        L, T = int(torch.randint(3, 5, (1,), generator=gen)), 4
        allowed = random_allowed(L, gen) if constrained else None
        crf = random_crf(L, gen, allowed)
        lengths = [4, 3, 1, 0, 2]
        em = torch.randn(len(lengths), T, L, generator=gen) * 2
        paths = crf.decode(em, prefix_mask(lengths, T))
        for b, n in enumerate(lengths):
            if n == 0:
                assert paths[b] == []
                continue
            scores = brute_scores(crf, em[b, :n], allowed)
            assert tuple(paths[b]) == max(scores, key=scores.get)


def bio_valid(path: list[int]) -> bool:
    return is_allowed(path, BIO) if path else True


def test_bio_decoding_never_emits_an_invalid_transition():
    gen = torch.Generator().manual_seed(2)
    crf = random_crf(5, gen, BIO)
    free = random_crf(5, torch.Generator().manual_seed(2))  # same scores, no constraints
    B, T = 8, 10
    free_invalid = 0
    for _ in range(200):
        em = torch.randn(B, T, 5, generator=gen) * 20
        em[0, 0, I_PER] += 100  # the encoder insists on I-PER first
        em[1, 0, B_PER] += 100  # ... and on B-PER followed by I-LOC
        em[1, 1:, I_LOC] += 100
        lengths = [T, T] + torch.randint(0, T + 1, (B - 2,), generator=gen).tolist()
        mask = prefix_mask(lengths, T)
        paths = crf.decode(em, mask)
        assert [len(p) for p in paths] == lengths
        assert all(bio_valid(p) for p in paths), paths
        free_invalid += sum(not bio_valid(p) for p in free.decode(em, mask))
    assert free_invalid >= 400  # the rows above are invalid without constraints: the test has teeth


@pytest.mark.parametrize("constrained", [False, True])
def test_marginals_match_brute_force_and_sum_to_one(constrained):
    gen = torch.Generator().manual_seed(3)
    L, T = 4, 4
    allowed = random_allowed(L, gen) if constrained else None
    crf = random_crf(L, gen, allowed)
    lengths = [4, 2, 0, 1]
    em = torch.randn(len(lengths), T, L, generator=gen)
    mask = prefix_mask(lengths, T)
    probs = crf.marginals(em, mask)  # (B, T, L)
    assert probs.shape == (len(lengths), T, L)
    assert torch.allclose(probs.sum(-1)[mask], torch.ones(int(mask.sum())), atol=1e-5)
    assert (probs[~mask] == 0).all()
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        scores = brute_scores(crf, em[b, :n], allowed)
        z = log_z(scores)
        expected = torch.zeros(n, L, dtype=torch.float64)
        for path, s in scores.items():
            for t, y in enumerate(path):
                expected[t, y] += math.exp(s - z)
        assert torch.allclose(probs[b, :n].double(), expected, atol=1e-5)


def test_reductions_and_empty_rows():
    gen = torch.Generator().manual_seed(4)
    crf = random_crf(3, gen)
    em = torch.randn(3, 4, 3, generator=gen)
    tags = torch.tensor([[0, 1, 2, 1], [2, -100, -100, -100], [-100] * 4])
    mask = prefix_mask([4, 1, 0], 4)
    per_row = crf(em, tags, mask, reduction="none")
    assert per_row.shape == (3,) and per_row[2] == 0 and (per_row[:2] > 0).all()
    assert torch.allclose(crf(em, tags, mask, reduction="sum"), per_row.sum())
    assert torch.allclose(crf(em, tags, mask), per_row.sum() / 2)  # mean over the 2 non-empty rows
    # a batch of windows with no labelled token: loss 0, and backward still works
    empty = crf(em, tags, torch.zeros(3, 4, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0 and torch.isfinite(crf.transitions.grad).all()


def test_low_precision_emissions_are_scored_in_float32():
    gen = torch.Generator().manual_seed(5)
    crf = random_crf(4, gen)
    em = torch.randn(2, 5, 4, generator=gen).bfloat16()
    tags = torch.randint(0, 4, (2, 5), generator=gen)
    mask = prefix_mask([5, 3], 5)
    loss = crf(em, tags, mask)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, crf(em.float(), tags, mask))
    assert crf.marginals(em, mask).dtype == torch.float32


def test_marginals_of_a_long_confident_row_are_probabilities():
    gen = torch.Generator().manual_seed(8)
    crf = random_crf(7, gen)
    em = torch.randn(2, 300, 7, generator=gen) * 12  # near-certain tags over a long sentence
    probs = crf.marginals(em, prefix_mask([300, 170], 300))
    assert (probs >= 0).all() and (probs <= 1).all()
    assert torch.allclose(probs[0].sum(-1), torch.ones(300), atol=1e-5)
    assert torch.allclose(probs[1, :170].sum(-1), torch.ones(170), atol=1e-5) and (probs[1, 170:] == 0).all()


def test_padding_garbage_does_not_leak():
    gen = torch.Generator().manual_seed(6)
    crf = random_crf(3, gen, (BIO_START[:3], [r[:3] for r in BIO_TRANS[:3]], BIO_END[:3]))
    em = torch.randn(2, 4, 3, generator=gen)
    mask = prefix_mask([4, 2], 4)
    dirty = em.clone()
    dirty[1, 2:] = float("nan")
    dirty.requires_grad_(True)
    tags = torch.tensor([[0, 1, 2, 0], [1, 2, -100, -100]])
    loss = crf(dirty, tags, mask)
    loss.backward()
    assert torch.allclose(loss, crf(em, tags, mask))
    assert torch.isfinite(dirty.grad).all() and (dirty.grad[1, 2:] == 0).all()
    assert crf.decode(dirty, mask) == crf.decode(em, mask)
    assert torch.isfinite(crf.marginals(dirty, mask)).all()


def test_gradients_flow_and_training_learns_the_gold_path():
    torch.manual_seed(0)
    crf = CRF(3)
    emissions = torch.zeros(2, 4, 3, requires_grad=True)  # stands in for an encoder's output
    tags = torch.tensor([[0, 1, 1, 2], [2, 0, 1, -100]])
    mask = prefix_mask([4, 3], 4)
    loss = crf(emissions, tags, mask)
    loss.backward()
    for grad in (emissions.grad, crf.transitions.grad, crf.start_transitions.grad, crf.end_transitions.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    opt = torch.optim.Adam([emissions, *crf.parameters()], lr=0.1)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = crf(emissions, tags, mask)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert crf.decode(emissions, mask) == [[0, 1, 1, 2], [2, 0, 1]]


def test_state_dict_holds_only_the_three_score_tensors():
    crf = random_crf(5, torch.Generator().manual_seed(7), BIO)
    state = crf.state_dict()
    assert set(state) == {"transitions", "start_transitions", "end_transitions"}
    again = CRF(5)
    again.load_state_dict(state)
    again.set_allowed(BIO)  # constraints are re-installed from the tag scheme, not from the checkpoint
    em = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(8)) * 10
    mask = prefix_mask([6, 5, 1, 0], 6)
    assert again.decode(em, mask) == crf.decode(em, mask)


def test_bad_inputs_raise_clear_errors():
    crf = CRF(3)
    em, tags = torch.zeros(1, 3, 3), torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="left-aligned prefix"):
        crf(em, tags, torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="reduction"):
        crf(em, tags, torch.ones(1, 3, dtype=torch.bool), reduction="avg")
    with pytest.raises(ValueError, match="trans_allowed"):
        crf.set_allowed(([True] * 3, [[True] * 2] * 3, [True] * 3))
    with pytest.raises(ValueError, match="emissions"):
        crf.decode(torch.zeros(1, 3, 4), torch.ones(1, 3, dtype=torch.bool))


@pytest.mark.parametrize("constrained", [False, True])
def test_partial_label_nll_matches_brute_force(constrained):
    """With tag sets, the numerator sums exp(s) over every allowed path through the sets; one-hot sets
    give the exact-tag likelihood."""
    for gen, crf, allowed, lengths, em in random_cases(7, constrained, shortest=1):
        (_, T, L) = em.shape
        sets = torch.rand(len(lengths), T, L, generator=gen) > 0.5
        sets[..., 0] = True  # tag 0 is free under random_allowed: a path exists
        expected = brute_nll(
            crf,
            em,
            lengths,
            allowed,
            lambda b, scores: log_z({p: s for p, s in scores.items() if all(sets[b, t, y] for t, y in enumerate(p))}),
        )
        tags = torch.zeros(len(lengths), T, dtype=torch.long)
        nll = crf(em, tags, prefix_mask(lengths, T), reduction="none", tag_sets=sets)
        assert torch.allclose(nll, torch.tensor(expected), atol=1e-4), (em.shape, nll, expected)
        # one-hot sets are exact tags
        gold = torch.zeros(len(lengths), T, dtype=torch.long)  # tag 0: allowed everywhere
        exact = crf(em, gold, prefix_mask(lengths, T), reduction="none")
        onehot = crf(
            em, gold, prefix_mask(lengths, T), reduction="none", tag_sets=torch.nn.functional.one_hot(gold, L).bool()
        )
        assert torch.allclose(exact, onehot, atol=1e-4)
        with pytest.raises(ValueError, match="tag_sets have shape"):
            crf(em, tags, prefix_mask(lengths, T), tag_sets=sets[:, :, :1])
