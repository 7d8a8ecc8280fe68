"""Verbalizer scoring: the shared-prefix scorer equals the one-pass-per-label reference on a tiny
Llama, picks the label whose log-likelihood is highest, and calibration divides out the prior."""

import torch
import transformers

from conftest import tiny_llama
from lmforge.prompting.scoring import calibrate, label_probabilities, score_labels, score_labels_naive


def test_shared_prefix_scores_equal_one_pass_per_label():
    model = tiny_llama(max_position_embeddings=64)
    prompts = [[1, 5, 7, 9, 11], [2, 3], [4, 8, 15, 16, 23, 42, 7]]
    verbalizers = [[10], [20, 21, 22], [30, 31]]  # one, three and two tokens
    fast, lengths = score_labels(model, prompts, verbalizers, pad=0, batch_size=2)
    slow = score_labels_naive(model, prompts, verbalizers)
    assert torch.allclose(fast, slow, atol=1e-4), (fast, slow)
    assert lengths.tolist() == [1, 3, 2]


def test_the_label_with_the_highest_likelihood_wins_and_calibration_divides_the_prior():
    scores = torch.tensor([[-1.0, -3.0], [-2.0, -2.2]])  # log-likelihoods, 1-token verbalizers
    probs = label_probabilities(scores, torch.tensor([1, 1]))
    assert probs.argmax(-1).tolist() == [0, 0]
    prior = torch.tensor([0.7, 0.3])  # the prompt alone leans to label 0
    calibrated = calibrate(probs, prior)
    assert calibrated.argmax(-1).tolist() == [0, 1]  # the close call flips once the lean is removed
    assert torch.allclose(calibrated.sum(-1), torch.ones(2))
    mean = label_probabilities(torch.tensor([[-2.0, -3.0]]), torch.tensor([1, 3]), "mean")
    assert mean.argmax(-1).item() == 1  # -1 per token beats -2


def test_a_prefix_shared_by_all_prompts_is_computed_once_and_changes_nothing():
    model = tiny_llama(seed=1, max_position_embeddings=64)
    shared = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # instruction + examples, 10 tokens
    prompts = [shared + [20, 21], shared + [22], shared + [23, 24, 25, 26]]
    verbalizers = [[30], [31, 32]]
    fast, _ = score_labels(model, prompts, verbalizers, pad=0, batch_size=2)
    assert torch.allclose(fast, score_labels_naive(model, prompts, verbalizers), atol=1e-4)
