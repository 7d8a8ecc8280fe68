"""The BiLSTM family: padding never changes a sequence's scores; save and load round-trip."""

import pytest
import torch

from lmforge.models.lstm_encoder import (
    LstmConfig,
    LstmForSequenceClassification,
    LstmForTokenClassification,
    bigram_ids,
)


@pytest.mark.parametrize("buckets", [0, 97])
def test_padding_does_not_change_scores(tmp_path, buckets):
    torch.manual_seed(0)
    config = LstmConfig(
        vocab_size=30, embedding_size=8, hidden_size=8, num_layers=2, num_labels=3, bigram_buckets=buckets
    )
    for cls in (LstmForTokenClassification, LstmForSequenceClassification):
        model = cls(config).eval()
        ids = torch.tensor([[5, 6, 7, 8]])
        alone = model(ids, torch.ones_like(ids)).logits
        padded_ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 0, 0, 0]])
        mask = (padded_ids != 0).long()
        batch = model(padded_ids, mask).logits
        got = batch[0, :4] if cls is LstmForTokenClassification else batch[0]
        assert torch.allclose(got, alone[0], atol=1e-6)
        model.save_pretrained(tmp_path / cls.__name__)
        again = cls.from_pretrained(tmp_path / cls.__name__).eval()
        assert torch.allclose(again(ids, torch.ones_like(ids)).logits, alone, atol=1e-6)


def test_bigram_ids_see_neighbours_only():
    ids = torch.tensor([[5, 6, 7, 0], [6, 7, 5, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    left, right = bigram_ids(ids, mask, 1000)
    # The bigram (6, 7) is the same bucket wherever it occurs: right of 6, left of 7.
    assert right[0, 1] == right[1, 0] and left[0, 2] == left[1, 1]
    # A sentence-final token's right bigram differs from the same token followed by another one.
    assert right[0, 2] != right[1, 1]
    # Left and right hashes of one pair differ (two separate views of the same characters).
    assert left[0, 2] != right[0, 1]


@pytest.mark.parametrize("layers", [1, 2])
def test_two_pass_cpu_path_equals_packed_sequences(layers):
    """The CPU path (two one-direction passes, the backward one over each sequence reversed within its
    length) gives what nn.LSTM gives on packed sequences, outputs and gradients."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from lmforge.models.lstm_encoder import LstmEncoder, reverse_within

    torch.manual_seed(0)
    config = LstmConfig(vocab_size=30, embedding_size=6, hidden_size=5, num_layers=layers, dropout=0.0)
    encoder = LstmEncoder(config).train()
    x = torch.randn(3, 7, 6, requires_grad=True)
    lengths = torch.tensor([7, 3, 1])
    ours = encoder._two_pass(x, lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    reference, _ = pad_packed_sequence(encoder.lstm(packed)[0], batch_first=True, total_length=7)
    assert torch.allclose(ours, reference, atol=1e-6)
    grad_ours = torch.autograd.grad(ours.square().sum(), [x, encoder.lstm.weight_hh_l0_reverse])
    grad_ref = torch.autograd.grad(reference.square().sum(), [x, encoder.lstm.weight_hh_l0_reverse])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grad_ours, grad_ref))
    assert reverse_within(torch.arange(4.0).view(1, 4, 1), torch.tensor([3])).flatten().tolist() == [2, 1, 0, 3]
    assert not any("skeleton" in k for k in encoder.state_dict())
