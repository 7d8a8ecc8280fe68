"""The BiLSTM family: padding never changes a sequence's scores; save and load round-trip."""

import torch

from lmforge.models.lstm import LstmConfig, LstmForSequenceClassification, LstmForTokenClassification


def test_padding_does_not_change_scores(tmp_path):
    torch.manual_seed(0)
    config = LstmConfig(vocab_size=30, embedding_size=8, hidden_size=8, num_layers=2, num_labels=3)
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
