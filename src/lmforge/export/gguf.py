"""A Llama-style causal LM as a GGUF file, the format llama.cpp serves (the fastest CPU path for
generation, DESIGN.md "Speed"), checked by loading it back through transformers.

What goes in, under llama.cpp's names (the ``gguf`` package's ``GGUFWriter`` and tensor name map):

- the architecture (``llama.*``: widths, layers, heads, RoPE base and dimension, norm epsilon);
- the tokenizer as llama.cpp's byte-level BPE (``tokenizer.ggml.model = gpt2``): the tokens in
  id order (in the byte alphabet, as ``tokenizer.json`` spells them), their types (special tokens
  are CONTROL), the merges, the special ids and the chat template;
- the tensors, with q and k permuted: llama.cpp applies rotary embeddings to interleaved pairs of
  each head (0,1), (2,3)... where transformers rotates the two halves (i, i + d/2), so every head's
  rows are reordered [r0, r(d/2), r1, r(d/2+1), ...] -- the inverse of the permutation
  transformers' GGUF loader (``LlamaTensorProcessor``) undoes. A tied output layer is not written
  (llama.cpp and transformers then reuse the embeddings).

Types: ``f32``; ``f16`` (matrices in half precision, norm vectors kept in f32 as llama.cpp does);
``q8_0`` (matrices in 8-bit blocks of 32 with one f16 scale each, gguf's own quantizer).
"""

import json
import logging
from pathlib import Path

import numpy as np

from lmforge.errors import MissingDependencyError, ModelError
from lmforge.export.base import STEPS, ExportStep
from lmforge.models.safe_loading import quiet_transformers
from lmforge.tracking.run_folder import RunFolder

log = logging.getLogger("lmforge")
TYPES = ("f32", "f16", "q8_0")
SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Who are you?",
    "def add(a, b):\n    return a + b",
    "Le chat est sur la table; 3.14159 != 2.71828",
]


def _gguf():
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("--gguf needs the gguf package: pip install gguf") from None
    return gguf


def llama_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head from transformers' half-split RoPE order to llama.cpp's interleaved order:
    (heads, 2, d/2, ...) -> (heads, d/2, 2, ...). ``weight`` is (heads * d, ...) (q, k or a bias)."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def check_llama(config) -> None:
    """Refuse what this writer cannot describe, naming it."""
    if getattr(config, "model_type", None) != "llama":
        raise ModelError(
            f"--gguf writes Llama-style causal LMs (from-scratch arch: llama, SmolLM2); this "
            f"model is {getattr(config, 'model_type', 'unknown')}"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ModelError(f"--gguf: RoPE scaling '{rope['rope_type']}' is not written to GGUF by lmforge")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ModelError("--gguf: Llama models with attention or MLP biases are not supported")


def _state_dict(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no safetensors weights to convert")
    tensors = {}
    for path in files:
        tensors.update(load_file(str(path)))
    return {name: value.astype(np.float32) for name, value in tensors.items()}


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _architecture(writer, config, name: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _tokenizer(writer, folder: Path, vocab_size: int, pre: str) -> dict:
    """Byte-level BPE tokens, types, merges and special ids from ``tokenizer.json``."""
    gguf = _gguf()
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no tokenizer.json (a byte-level BPE tokenizer is needed for GGUF)")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise ModelError(
            f"{path}: --gguf writes byte-level BPE tokenizers (GPT-2 style); this one is {model.get('type')}"
        )
    tokens = {index: token for token, index in model["vocab"].items()}
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    tokens.update({index: t["content"] for index, t in added.items()})
    if max(tokens) >= vocab_size:
        raise ModelError(f"{path}: token id {max(tokens)} is outside the model's vocabulary ({vocab_size})")
    names, types = [], []
    for index in range(vocab_size):
        if index not in tokens:  # rows the model has and the tokenizer never emits
            names.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            names.append(tokens[index])
            types.append(gguf.TokenType.CONTROL if added[index].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            names.append(tokens[index])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(names)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    config = {}
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
    ids = {content: index for index, content in tokens.items()}
    special = {}
    for key, add in (
        ("bos_token", writer.add_bos_token_id),
        ("eos_token", writer.add_eos_token_id),
        ("pad_token", writer.add_pad_token_id),
        ("unk_token", writer.add_unk_token_id),
    ):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if value in ids:
            add(ids[value])
            special[key] = ids[value]
    writer.add_add_bos_token(bool(config.get("add_bos_token", False)))
    template = config.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        writer.add_chat_template(template)
    return {"tokens": len(names), "merges": len(merges), **special}


def _tensors(writer, config, weights: dict[str, np.ndarray], dtype: str) -> int:
    gguf = _gguf()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    tied = getattr(config, "tie_word_embeddings", False)
    written = 0
    for hf_name, value in weights.items():
        if hf_name == "lm_head.weight" and tied:
            continue
        base, _, suffix = hf_name.rpartition(".")
        name = names.get_name(base)
        if name is None:
            raise ModelError(f"--gguf: no llama.cpp name for tensor {hf_name}")
        if base.endswith("self_attn.q_proj"):
            value = llama_permute(value, heads)
        elif base.endswith("self_attn.k_proj"):
            value = llama_permute(value, kv_heads)
        _add(writer, f"{name}.{suffix}", value, dtype)
        written += 1
    return written


def _add(writer, name: str, value: np.ndarray, dtype: str) -> None:
    gguf = _gguf()
    if value.ndim == 1 or dtype == "f32":  # norms stay f32 in every type, as in llama.cpp
        writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    elif dtype == "f16":
        writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float16))
    else:
        if value.shape[-1] % 32:
            raise ModelError(f"--gguf q8_0: {name} has rows of {value.shape[-1]} values, not a multiple of 32")
        quantized = gguf.quants.quantize(np.ascontiguousarray(value), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)


def write_gguf(
    model_dir: str | Path, path: str | Path, dtype: str = "f16", name: str = "lmforge", pre: str = "gpt-2"
) -> dict:
    """Write the Llama model saved in ``model_dir`` (``save_pretrained`` layout) as one GGUF file."""
    from transformers import AutoConfig

    gguf = _gguf()
    if dtype not in TYPES:
        raise ModelError(f"--gguf-type {dtype}: choose one of {', '.join(TYPES)}")
    folder, path = Path(model_dir), Path(path)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    check_llama(config)
    weights = _state_dict(folder)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        _architecture(writer, config, name)
        writer.add_file_type(int(file_type))
        tokenizer = _tokenizer(writer, folder, config.vocab_size, pre)
        count = _tensors(writer, config, weights, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    tmp.replace(path)
    return {"file": str(path), "type": dtype, "tensors": count, "bytes": path.stat().st_size, "tokenizer": tokenizer}


def compare_gguf(model_dir: str | Path, path: str | Path, texts: list[str] = SAMPLES) -> dict:
    """Load the GGUF back through transformers (``gguf_file=``) and compare its logits and token ids
    with the original model's on ``texts``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    with quiet_transformers():
        original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    difference, scale, tokens, agree, same_ids = 0.0, 0.0, 0, 0, True
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            same_ids &= gguf_tokenizer(text)["input_ids"] == ids[0].tolist()
            a, b = original(input_ids=ids).logits, loaded(input_ids=ids).logits  # (1, T, V)
            difference = max(difference, (a - b).abs().max().item())
            scale = max(scale, a.abs().max().item())
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            tokens += ids.numel()
    return {
        "max_abs_logit_difference": difference,
        "max_abs_logit": scale,
        "tokens_compared": tokens,
        "top1_agreement": agree / max(tokens, 1),
        "same_token_ids": bool(same_ids),
    }


# -- the export pipeline's step -------------------------------------------------------------------
def check_gguf(context) -> None:
    """Refuse ``--gguf`` before any step runs: a Llama-style causal LM in PyTorch weights only."""
    model = context.record.model
    if context.record.task != "causal_lm" or model.arch != "llama":
        raise ModelError(
            f"--gguf writes Llama-style causal LMs (arch: llama, SmolLM2); {context.run_dir} is a "
            f"{model.arch or model.family} {context.record.task} run"
        )
    if context.options.get("onnx") or context.options.get("quantize"):
        raise ModelError("--gguf converts the PyTorch weights; drop --onnx/--quantize (--gguf q8_0 is GGUF's int8)")


def gguf_step(current, context):
    """``--gguf [f32|f16|q8_0]``: the model folder plus ``model.<type>.gguf``, checked by loading
    the file back through transformers (logit difference in the notes)."""
    import shutil

    dtype = context.options.get("gguf") or "f16"
    source = RunFolder(current.folder).model_dir(current.checkpoint)
    pre = "smollm" if context.record.model.source == "smollm2" else "gpt-2"
    variant, model_dir = context.new_variant(f"gguf {dtype}", current.format, current)
    shutil.copytree(source, model_dir, dirs_exist_ok=True)
    report = write_gguf(source, variant.folder / f"model.{dtype}.gguf", dtype, name=context.run_dir.name, pre=pre)
    report.update(compare_gguf(source, report["file"]))
    log.info(
        "gguf %s: %s (%.1f MB), max logit difference %.2e against the original",
        dtype,
        report["file"],
        report["bytes"] / 1e6,
        report["max_abs_logit_difference"],
    )
    variant.notes = {
        "gguf": Path(report["file"]).name,
        "gguf_bytes": report["bytes"],
        "max_abs_logit_difference": report["max_abs_logit_difference"],
    }
    return variant


def add_arguments(p) -> None:
    """The flags that ask for the gguf step."""
    p.add_argument(
        "--gguf",
        nargs="?",
        const="f16",
        choices=["f32", "f16", "q8_0"],
        help="Llama-style causal LMs: also write model.<type>.gguf for llama.cpp (default f16), checked "
        "by loading it back through transformers",
    )


STEPS.register(
    "gguf",
    ExportStep("gguf", 50, add_arguments, lambda o: bool(o.get("gguf")), gguf_step, check_gguf),
)
