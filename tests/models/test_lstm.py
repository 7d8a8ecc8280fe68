"""The BiLSTM family: padding never changes a sequence's scores; save and load round-trip."""

import pytest
import torch

from lmforge.models.lstm import (LstmConfig, LstmForSequenceClassification, LstmForTokenClassification,
                                 bigram_ids)


@pytest.mark.parametrize("buckets", [0, 97])
def test_padding_does_not_change_scores(tmp_path, buckets):
    torch.manual_seed(0)
    config = LstmConfig(vocab_size=30, embedding_size=8, hidden_size=8, num_layers=2, num_labels=3,
                        bigram_buckets=buckets)
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
