"""The character CNN of the lstm family: the table of each token's characters, shapes, padding
invariance, a training step, and the loader building the table from the tokenizer."""

import pytest
import torch

from lmforge.config.model_spec import LstmSpec
from lmforge.errors import ModelError
from lmforge.models.char_cnn import CharCNN, char_table
from lmforge.models.lstm import load_lstm
from lmforge.models.lstm_encoder import LstmConfig, LstmForTokenClassification


def test_char_table_numbers_characters_in_sorted_order():
    table, size = char_table(["[PAD]", "ab", "##b", "Abcdef"], 4)
    # Sorted alphabet: # A D P [ ] a b c d e f -> ids from 2 (0 padding, 1 unknown).
    assert size == 2 + 12
    assert table[1].tolist() == [8, 9, 0, 0] and table[2].tolist() == [2, 2, 9, 0]
    assert table[3].tolist() == [3, 9, 10, 11]  # cut to 4 characters


def test_features_have_the_filters_width_and_ignore_padding():
    torch.manual_seed(0)
    table, size = char_table(["[PAD]", "ab", "b", "abc"], 5)
    cnn = CharCNN(4, size, 5, filters=6, char_embedding=4, dropout=0.0)
    cnn.table.copy_(table)
    ids = torch.tensor([[1, 2, 3], [3, 3, 0]])
    out = cnn(ids)
    assert out.shape == (2, 3, 6)
    assert torch.allclose(out[1, 0], out[0, 2]) and torch.allclose(out[1, 1], out[0, 2])  # same token, same features


def test_a_tagger_with_char_features_trains():
    torch.manual_seed(0)
    tokens = ["[PAD]", "Paris", "is", "big", "London", "rains"]
    table, size = char_table(tokens, 8)
    config = LstmConfig(
        vocab_size=len(tokens),
        embedding_size=8,
        hidden_size=8,
        num_layers=1,
        num_labels=2,
        dropout=0.0,
        char_cnn=5,
        char_vocab_size=size,
        char_max_length=8,
    )
    model = LstmForTokenClassification(config)
    model.encoder.chars.table.copy_(table)
    ids, tags = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([[1, 0, 0], [1, 0, 0]])
    mask = (ids != 0).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        logits = model(ids, mask).logits
        loss = torch.nn.functional.cross_entropy(logits[mask.bool()], tags[mask.bool()])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2
    assert model.encoder.chars.conv.weight.grad.abs().sum() > 0


def test_loader_builds_the_table_from_the_vocabulary():
    spec = LstmSpec(hidden=8, embedding=8, layers=1, vocab_size=100, char_cnn=4, lowercase=False)
    texts = ["Paris is big", "London rains", "Berlin is cold"] * 3
    loaded = load_lstm(spec, "token_classification", ["O", "B-LOC"], texts)
    tokens = loaded.tokenizer.convert_ids_to_tokens(list(range(len(loaded.tokenizer))))
    table = loaded.model.encoder.chars.table
    assert table.shape[0] == len(tokens) and (table[tokens.index("Paris"), :5] > 1).all()
    assert table[tokens.index("Paris"), 5:].eq(0).all()
    with pytest.raises(ModelError, match="model.char_cnn"):
        load_lstm(spec, "causal_lm", [], texts)
