"""The LSTM family: a bidirectional LSTM over token embeddings (classification, token
classification) or a unidirectional LSTM language model (causal_lm), trained from scratch with a
vocabulary built from the training texts (WordPiece; on Chinese, characters; byte-level BPE for the
language model).

The small model to weigh against the transformers: for tagging, a character BiLSTM with a CRF on top
(``head: {crf: true}``) is the classic Chinese NER baseline (Huang et al., 2015; Lample et al.,
2016). The networks are in ``lstm_encoder.py`` and ``lstm_lm.py``; this module builds them from an
``LstmSpec`` and loads them from a run folder.
"""

import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer

from lmforge.config.model_spec import LstmSpec
from lmforge.errors import ModelError
from lmforge.models.char_cnn import char_table
from lmforge.models.char_vectors import char_vector_table, initialise_embeddings
from lmforge.models.family import FAMILIES, LoadedModel, ModelFamily
from lmforge.models.lexicon import lexicon_file, lexicon_tensors, read_lexicon
from lmforge.models.lstm_encoder import LstmConfig, LstmForSequenceClassification, LstmForTokenClassification
from lmforge.models.lstm_lm import LstmForCausalLM
from lmforge.models.safe_loading import check_model_folder, quiet_transformers
from lmforge.models.segmenter import check_segmenters, segmenter_names, segmenter_tags, token_codepoints
from lmforge.tracking.run_record import RunRecord

log = logging.getLogger("lmforge")
CHAR_MAX_LENGTH = 20  # characters of a token the character CNN reads (longer tokens are cut)

HEADS = {
    "token_classification": LstmForTokenClassification,
    "sequence_classification": LstmForSequenceClassification,
    "causal_lm": LstmForCausalLM,
}


def _head_class(head: str):
    if head not in HEADS:
        raise ModelError(f"the lstm family has no '{head}' head (known: {', '.join(HEADS)})")
    return HEADS[head]


def load_lstm(
    spec: LstmSpec,
    head: str,
    labels: list[str],
    texts: list[str],
    dropout: float | None = None,
    tokenizer_folder: Path | None = None,
) -> LoadedModel:
    head_class = _head_class(head)
    if tokenizer_folder is not None and (Path(tokenizer_folder) / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, trust_remote_code=False)
    else:
        tokenizer = head_class.build_tokenizer(texts, spec)
    generative = head == "causal_lm"
    extra = (
        {
            "bos_token_id": tokenizer.eos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "tie_word_embeddings": spec.tie_embeddings,
        }
        if generative
        else {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {n: i for i, n in enumerate(labels)},
        }
    )
    table = _char_table(spec, tokenizer, generative, extra)
    lexicon = _lexicon(spec, tokenizer, generative, extra)
    vectors = _char_vectors(spec, tokenizer, generative, extra)
    codepoints = _segmenter(spec, tokenizer, generative, extra)
    config = LstmConfig(
        vocab_size=len(tokenizer),
        embedding_size=spec.embedding,
        hidden_size=spec.hidden,
        num_layers=spec.layers,
        dropout=0.1 if dropout is None else dropout,
        bigram_buckets=spec.bigram_buckets,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    model = head_class(config)
    if table is not None:
        model.encoder.chars.table.copy_(table)
    if lexicon is not None:
        model.encoder.lexicon.load(*lexicon)
    if vectors is not None:
        model.encoder.vectors.copy_(vectors[0])
    if codepoints is not None:
        model.encoder.segmenter.load(codepoints)
    if spec.embedding_init:
        if generative:
            raise ModelError("model.embedding_init: applies to the lstm classifiers and taggers")
        counts = initialise_embeddings(model.encoder, spec.embedding_init, tokenizer, texts)
        log.info(
            "embeddings start from %s: %d of %d tokens%s",
            spec.embedding_init,
            counts["tokens"],
            counts["vocabulary"],
            f", {counts['bigrams']} of {counts['bigrams_seen']} training bigrams" if "bigrams" in counts else "",
        )
    arch = "lstm" if generative else "bilstm"
    log.info(
        "built a%s %s from scratch: %d layers, hidden %d, embeddings %d, vocabulary %d%s",
        "n" if generative else "",
        "LSTM language model" if generative else "BiLSTM",
        spec.layers,
        spec.hidden,
        spec.embedding,
        len(tokenizer),
        f", {spec.bigram_buckets} bigram buckets" if spec.bigram_buckets else "",
    )
    if table is not None:
        log.info("character CNN: %d filters over %d characters of each token", spec.char_cnn, CHAR_MAX_LENGTH)
    if lexicon is not None:
        log.info(
            "lexicon features: %d words of %s, %d tags (%s)",
            len(lexicon[0]),
            spec.lexicon,
            len(config.lexicon_tags),
            " ".join(config.lexicon_tags),
        )
    if codepoints is not None:
        log.info(
            "segmenter features: %s part-of-speech segmentation, %d tags",
            " + ".join(f"{n}'s" for n in segmenter_names(spec.segmenter)),
            len(config.segmenter_tags),
        )
    if vectors is not None:
        log.info(
            "fixed token vectors from %s: width %d, %s of %d tokens known",
            spec.char_vectors,
            vectors[0].shape[1],
            vectors[1],
            len(tokenizer),
        )
    info = {"family": "lstm", "source": "scratch", "arch": arch, "vocab_size": len(tokenizer)}
    return LoadedModel(model, tokenizer, info)


def _char_table(spec, tokenizer, generative: bool, config_kwargs: dict) -> torch.Tensor | None:
    """The characters of every token, for ``model.char_cnn`` (None when off); sets the config's
    character sizes in ``config_kwargs``."""
    if not spec.char_cnn:
        return None
    if generative:
        raise ModelError(
            "model.char_cnn: the lstm language model has no character features "
            "(they apply to classification and token_classification)"
        )
    table, char_vocab = char_table(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), CHAR_MAX_LENGTH)
    config_kwargs.update(char_cnn=spec.char_cnn, char_vocab_size=char_vocab, char_max_length=CHAR_MAX_LENGTH)
    return table


def _lexicon(spec, tokenizer, generative: bool, config_kwargs: dict):
    """(word ids, word tags) of ``model.lexicon`` (None when off); sets the config's lexicon sizes."""
    if not spec.lexicon:
        return None
    if generative:
        raise ModelError(
            "model.lexicon: the lstm language model has no lexicon features "
            "(they apply to classification and token_classification)"
        )
    words, word_tags, tags = lexicon_tensors(read_lexicon(lexicon_file(spec.lexicon)), tokenizer)
    config_kwargs.update(lexicon_words=len(words), lexicon_tags=tags)
    return words, word_tags


def _segmenter(spec, tokenizer, generative: bool, config_kwargs: dict):
    """The vocabulary's code points for ``model.segmenter`` (None when off); sets the config's tags."""
    if not spec.segmenter:
        return None
    if generative:
        raise ModelError(
            "model.segmenter: the lstm language model has no segmenter features "
            "(they apply to classification and token_classification)"
        )
    check_segmenters(spec.segmenter)
    config_kwargs.update(segmenter_tags=segmenter_tags(spec.segmenter))
    return token_codepoints(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))


def _char_vectors(spec, tokenizer, generative: bool, config_kwargs: dict):
    """(table, tokens covered) of ``model.char_vectors`` (None when off); sets the config's width."""
    if not spec.char_vectors:
        return None
    if generative:
        raise ModelError(
            "model.char_vectors: the lstm language model has no fixed token vectors "
            "(they apply to classification and token_classification)"
        )
    sources = [spec.char_vectors] if isinstance(spec.char_vectors, str) else list(spec.char_vectors)
    tables = [char_vector_table(source, tokenizer) for source in sources]
    table = torch.cat([t for t, _ in tables], dim=1)
    config_kwargs.update(char_vectors_width=table.shape[1])
    return table, ", ".join(str(c) for _, c in tables)


def load_saved_lstm(folder: Path, record: RunRecord) -> LoadedModel:
    check_model_folder(folder, str(folder))
    head_class = _head_class(record.head)
    # Quiet: a CRF's tensors are restored by the task, and transformers does not know the model
    # type when it reads the tokenizer's folder.
    with quiet_transformers():
        model = head_class.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return LoadedModel(model, tokenizer, record.model.to_dict())


def check_lstm(spec: LstmSpec) -> None:
    if spec.segmenter:
        check_segmenters(spec.segmenter)


def lstm_input_embeddings(model):
    """The token embeddings ``encoder.embeddings`` (not the bigram, character or lexicon features
    concatenated beside them)."""
    return model.get_input_embeddings()


FAMILIES.register("lstm", ModelFamily(load_lstm, load_saved_lstm, check_lstm, lstm_input_embeddings))
