"""The transformer family: any Hugging Face architecture, pretrained (bundled alias or local folder)
or built from a small config with a tokenizer trained on the user's texts."""

import logging
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer

from lmforge.config.model_spec import TransformerSpec
from lmforge.errors import ModelError
from lmforge.models.bundled import BUNDLED, bundled_path
from lmforge.models.family import FAMILIES, LoadedModel, ModelFamily
from lmforge.models.safe_loading import check_model_folder, quiet_transformers
from lmforge.tokenization.bpe import train_bpe
from lmforge.tokenization.extend import extend_wordpiece
from lmforge.tokenization.wordpiece import train_wordpiece
from lmforge.tracking.run_record import RunRecord

log = logging.getLogger("lmforge")

# Task head name -> the Auto class that puts that head on any architecture.
HEADS = {
    "sequence_classification": transformers.AutoModelForSequenceClassification,
    "token_classification": transformers.AutoModelForTokenClassification,
    "masked_lm": transformers.AutoModelForMaskedLM,
    "causal_lm": transformers.AutoModelForCausalLM,
    "seq2seq": transformers.AutoModelForSeq2SeqLM,
}

# From-scratch architectures: name -> (config class, how our spec maps onto it).
ARCHS = {
    "bert": lambda spec, vocab, pad: transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.intermediate or 4 * spec.hidden,
        max_position_embeddings=spec.max_position,
        pad_token_id=pad,
    ),
    # Decoder-only: the tokenizer's one special token is beginning, end and padding (GPT-2 style).
    "llama": lambda spec, vocab, pad: transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        intermediate_size=spec.intermediate or 8 * ((8 * spec.hidden // 3 + 7) // 8),
        max_position_embeddings=spec.max_position,
        pad_token_id=pad,
        bos_token_id=pad,
        eos_token_id=pad,
        tie_word_embeddings=True,
    ),
    "gpt2": lambda spec, vocab, pad: transformers.GPT2Config(
        vocab_size=vocab,
        n_embd=spec.hidden,
        n_layer=spec.layers,
        n_head=spec.heads,
        n_inner=spec.intermediate,
        n_positions=spec.max_position,
        pad_token_id=pad,
        bos_token_id=pad,
        eos_token_id=pad,
    ),
    # Encoder-decoder (T5): generation starts from the padding token, as in T5.
    "t5": lambda spec, vocab, pad: transformers.T5Config(
        vocab_size=vocab,
        d_model=spec.hidden,
        d_kv=spec.hidden // spec.heads,
        d_ff=spec.intermediate or 4 * spec.hidden,
        num_layers=spec.layers,
        num_decoder_layers=spec.layers,
        num_heads=spec.heads,
        pad_token_id=pad,
        eos_token_id=pad,
        decoder_start_token_id=pad,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
}
# Which architectures suit which head; generative ones get a byte-level BPE tokenizer, encoders WordPiece.
DEFAULT_ARCH = {"causal_lm": "llama", "seq2seq": "t5"}
ARCH_HEADS = {"llama": "causal_lm", "gpt2": "causal_lm", "t5": "seq2seq"}


def _head_class(head: str):
    if head not in HEADS:
        raise ModelError(f"the transformer family has no '{head}' head (known: {', '.join(HEADS)})")
    return HEADS[head]


def resolve_source(path: str) -> tuple[Path, str]:
    """A bundled alias or a local folder -> (folder, label for messages)."""
    if path in BUNDLED:
        return bundled_path(path), path
    folder = Path(path).expanduser()
    if not folder.exists() and "/" in path and not path.startswith((".", "/", "~")):
        raise ModelError(
            f"model '{path}': no such folder; lmforge does not download from a hub -- "
            f"download it yourself and give the local folder (bundled: {', '.join(BUNDLED)})"
        )
    check_model_folder(folder, path)
    return folder, path


def _label_kwargs(labels: list[str]) -> dict:
    if not labels:  # language-model heads have no labels
        return {}
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def set_dropout(config, rate: float) -> None:
    """Set every dropout probability the config defines (names differ between architectures)."""
    for name, value in vars(config).items():
        if "dropout" in name and isinstance(value, float):
            setattr(config, name, rate)


def load_transformer(
    spec: TransformerSpec,
    head: str,
    labels: list[str],
    texts: list[str],
    dropout: float | None = None,
    tokenizer_folder: Path | None = None,
) -> LoadedModel:
    head_class = _head_class(head)
    if spec.path is None:
        return _from_scratch(spec, head_class, labels, texts, dropout, tokenizer_folder)
    folder, label = resolve_source(spec.path)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False, **_label_kwargs(labels))
    if dropout is not None:
        set_dropout(config, dropout)
    # The new head starts random; transformers' "newly initialized" warning says so at length.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = head_class.from_pretrained(
            folder, config=config, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    info = {"family": "transformer", "source": label, "source_path": str(folder.resolve()), "arch": config.model_type}
    if spec.extend_vocab:
        tokenizer = _extend_vocab(model, tokenizer, texts, tokenizer_folder, info)
    return LoadedModel(model, tokenizer, info)


def _extend_vocab(model, tokenizer, texts, tokenizer_folder, info: dict):
    """Add the unknown characters of the training texts; a resumed run reuses its saved tokenizer."""
    if tokenizer_folder is not None and (Path(tokenizer_folder) / "tokenizer.json").is_file():
        tokenizer, added = AutoTokenizer.from_pretrained(tokenizer_folder, trust_remote_code=False), None
    else:
        tokenizer, added = extend_wordpiece(tokenizer, texts)
        log.info(
            "extended the vocabulary by %d characters of the training texts (%s...): %d tokens",
            len(added),
            "".join(added[:12]),
            len(tokenizer),
        )
    # New rows are drawn around the mean of the old ones (transformers' mean_resizing).
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    info["vocab_size"] = len(tokenizer)
    if added is not None:
        info["added_characters"] = len(added)
    return tokenizer


def _from_scratch(spec: TransformerSpec, head_class, labels, texts, dropout, tokenizer_folder) -> LoadedModel:
    if spec.extend_vocab:
        raise ModelError(
            "model.extend_vocab extends a pretrained model's vocabulary; a model built "
            "from scratch already gets a vocabulary from your texts (set model.path)"
        )
    head = next(name for name, cls in HEADS.items() if cls is head_class)
    arch = spec.arch or DEFAULT_ARCH.get(head, "bert")
    if arch not in ARCHS:
        raise ModelError(f"model.arch: cannot build '{arch}' from scratch (known: {', '.join(ARCHS)})")
    generative = arch in ARCH_HEADS
    if ARCH_HEADS.get(arch) != (head if head in DEFAULT_ARCH else None):
        suits = [a for a, h in ARCH_HEADS.items() if h == head] or [a for a in ARCHS if a not in ARCH_HEADS]
        raise ModelError(f"model.arch: {arch} does not suit this task (use {' or '.join(suits)})")
    if tokenizer_folder is not None and (Path(tokenizer_folder) / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, trust_remote_code=False)
    elif generative:
        tokenizer = train_bpe(texts, vocab_size=spec.vocab_size)
    else:
        tokenizer = train_wordpiece(texts, vocab_size=spec.vocab_size, lowercase=spec.lowercase)
    config = ARCHS[arch](spec, len(tokenizer), tokenizer.pad_token_id)
    for key, value in _label_kwargs(labels).items():
        setattr(config, key, value)
    if dropout is not None:
        set_dropout(config, dropout)
    model = head_class.from_config(config)
    info = {"family": "transformer", "source": "scratch", "arch": arch, "vocab_size": len(tokenizer)}
    log.info(
        "built a %s from scratch: %d layers, hidden %d, vocabulary %d trained on %d texts",
        arch,
        spec.layers,
        spec.hidden,
        len(tokenizer),
        len(texts),
    )
    return LoadedModel(model, tokenizer, info)


def load_saved_transformer(folder: Path, record: RunRecord) -> LoadedModel:
    """Load a model a run saved (plain ``save_pretrained`` layout)."""
    check_model_folder(folder, str(folder))
    head_class = _head_class(record.head)
    with quiet_transformers():  # a CRF's tensors are restored by the task, not by transformers
        model = head_class.from_pretrained(folder, use_safetensors=True, trust_remote_code=False, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return LoadedModel(_with_prompts(model, folder), tokenizer, record.model.to_dict())


def _with_prompts(model, folder: Path):
    """Put back trained virtual tokens (prefix/prompt/P-tuning), which live beside the weights in
    ``adapter/``; merged adapters (LoRA, IA3) are already in the weights."""
    adapter = folder / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        return model
    import peft

    if not peft.PeftConfig.from_pretrained(adapter).is_prompt_learning:
        return model
    return peft.PeftModel.from_pretrained(model, adapter, is_trainable=False)


def check_transformer(spec: TransformerSpec) -> None:
    if spec.path is not None:
        resolve_source(spec.path)


def transformer_input_embeddings(model):
    """The token embedding module (``word_embeddings`` of a BERT): Hugging Face's accessor, which a
    ``peft`` wrapper hands on to the model it wraps."""
    return model.get_input_embeddings()


FAMILIES.register(
    "transformer",
    ModelFamily(load_transformer, load_saved_transformer, check_transformer, transformer_input_embeddings),
)
