"""Int8 transformer models: dynamic int8 linear layers (PyTorch), saved as int8 tensors + scales.

``quantize_int8`` applies PyTorch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``,
per-output-channel symmetric int8 weights; activations are quantized per batch at run time, so no
calibration data is needed) to every ``nn.Linear`` but the task head, and stores the large embedding
tables (word and position) as int8 rows with one float scale each (weight-only: they are turned
back into float32 at load, because a lookup gains nothing from int8 arithmetic).
``torch.ao.quantization`` is deprecated in favour of torchao but still ships, and works, in torch
2.13; torchao is not a dependency.

A quantized model cannot be saved as a float model's safetensors, and lmforge never pickles, so the
folder holds ``model_int8.safetensors``: for each quantized linear ``<name>``, ``<name>.weight.int8``
(int8, out x in), ``<name>.weight.scale`` (float64, out) and ``<name>.weight.zero_point``; for each
quantized embedding ``<name>.weight.int8`` and ``.scale``; every other tensor in float32; and the
module lists in the file's metadata. ``load_saved_int8`` builds the architecture from
``config.json``, loads the float tensors, quantizes the same linears and sets exactly the stored
int8 weights and scales, so the loaded model computes what the exported one did, bit for bit.
Plain ``transformers`` cannot load this folder (it finds no ``model.safetensors``).
"""

import json
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import ModelError
from lmforge.models.family import SAVED_FORMATS, LoadedModel, SavedFormat
from lmforge.models.safe_loading import quiet_transformers
from lmforge.models.transformer import HEADS
from lmforge.tracking.run_record import RunRecord

INT8_FILE = "model_int8.safetensors"
HEAD_NAMES = ("classifier", "score", "lm_head")  # the task head stays float: tiny, and the most sensitive
MIN_EMBEDDING_ROWS = 256


def _quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (int8 rows, float32 scales) with ``weight ~= rows * scale``."""
    scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)  # (V,)
    rows = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (V, C)
    return rows, scale.float()


def _linear_names(model: nn.Module) -> list[str]:
    return [
        name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.split(".")[-1] not in HEAD_NAMES
    ]


def _embedding_names(model: nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Embedding) and m.num_embeddings >= MIN_EMBEDDING_ROWS
    ]


def _dynamic(model: nn.Module, linears: list[str]) -> nn.Module:
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # the deprecation notice of torch.ao: said once, in the docstring
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            model, {name: per_channel_dynamic_qconfig for name in linears}, dtype=torch.qint8, inplace=True
        )


def quantize_int8(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, str]]:
    """Quantize ``model`` in place; returns it with the tensors and metadata to save."""
    linears, embeddings = _linear_names(model), _embedding_names(model)
    if not linears:
        raise ModelError(
            "--quantize int8: the model has no linear layers outside its head to quantize "
            "(the lstm family's weights are in its LSTM, which lmforge does not quantize)"
        )
    tensors = {}
    for name in embeddings:
        module = model.get_submodule(name)
        rows, scale = _quantize_rows(module.weight.detach().float())
        tensors[f"{name}.weight.int8"], tensors[f"{name}.weight.scale"] = rows, scale
        with torch.no_grad():  # the exported model computes with what the folder will hold
            module.weight.copy_(rows.float() * scale[:, None])
    _dynamic(model, linears)
    skip, quantized = {f"{name}.weight" for name in embeddings}, tuple(f"{name}." for name in linears)
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor) and not key.startswith(quantized) and key not in skip:
            tensors[key] = (
                value.detach().float().contiguous().clone()
                if value.is_floating_point()
                else value.detach().contiguous().clone()
            )
    for name in linears:
        weight, bias = model.get_submodule(name)._weight_bias()
        tensors[f"{name}.weight.int8"] = weight.int_repr().contiguous()
        tensors[f"{name}.weight.scale"] = weight.q_per_channel_scales().contiguous()
        tensors[f"{name}.weight.zero_point"] = weight.q_per_channel_zero_points().contiguous()
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().float().contiguous().clone()
    metadata = {"format": "lmforge-int8", "linear": json.dumps(linears), "embedding": json.dumps(embeddings)}
    return model, tensors, metadata


def save_int8(tensors: dict[str, torch.Tensor], metadata: dict[str, str], folder: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(folder) / INT8_FILE
    save_file(tensors, str(path), metadata=metadata)
    return path


def is_int8_folder(folder: Path) -> bool:
    return (Path(folder) / INT8_FILE).is_file()


def load_saved_int8(folder: Path, record: RunRecord) -> LoadedModel:
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(folder)
    if record.family != "transformer":
        raise ModelError(f"{folder}: int8 folders hold transformer models only")
    with safe_open(str(folder / INT8_FILE), framework="pt") as handle:
        info = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if info.get("format") != "lmforge-int8":
        raise ModelError(f"{folder / INT8_FILE}: not an lmforge int8 file")
    linears, embeddings = json.loads(info["linear"]), json.loads(info["embedding"])
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    with quiet_transformers():
        model = HEADS[record.head].from_config(config)
    state = {k: v for k, v in tensors.items() if not k.endswith((".int8", ".scale", ".zero_point"))}
    for name in embeddings:
        state[f"{name}.weight"] = tensors[f"{name}.weight.int8"].float() * tensors[f"{name}.weight.scale"][:, None]
    for name in linears:  # placeholders: the real weights are set below, after quantize_dynamic
        state[f"{name}.weight"] = model.get_submodule(name).weight.detach()
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("crf.")]  # the task restores a CRF
    if missing or unexpected:
        raise ModelError(
            f"{folder / INT8_FILE}: does not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    _dynamic(model.eval(), linears)
    for name in linears:
        weight = torch._make_per_channel_quantized_tensor(
            tensors[f"{name}.weight.int8"], tensors[f"{name}.weight.scale"], tensors[f"{name}.weight.zero_point"], 0
        )
        model.get_submodule(name).set_weight_bias(weight, tensors.get(f"{name}.bias"))
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    out = record.model.to_dict()
    out["backend"] = "torch-int8"
    return LoadedModel(model, tokenizer, out)


def int8_parameters(model: nn.Module) -> int:
    """Parameters of a dynamically quantized model: float ones plus the packed int8 weights."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, DynamicLinear):
            weight, bias = module._weight_bias()
            total += weight.numel() + (bias.numel() if bias is not None else 0)
    return total


SAVED_FORMATS.register("int8", SavedFormat(is_int8_folder, load_saved_int8))
