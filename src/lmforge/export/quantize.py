"""``--quantize int8|int4``: the current variant quantized in its own format.

* PyTorch model, int8: dynamic int8 linear layers and int8-stored embeddings (``models/int8.py``
  says what is stored and why it loads back exactly).
* ONNX model, int8: ONNX Runtime dynamic quantization (``onnxruntime.quantization.quantize_dynamic``):
  int8 weights per output channel for MatMul/Gemm and the embedding Gather, uint8 activations
  quantized at run time (U8S8). Without VNNI (AVX2 only), U8S8 products can saturate the 16-bit
  intermediate sums, so there the weights use 7 bits (``reduce_range``); with AVX512-VNNI or
  AVX-VNNI the full 8 bits are used.
* ONNX model, int4: ONNX Runtime's 4-bit block-wise weight-only MatMul (``MatMulNBits``, blocks of 32,
  symmetric), which has a CPU kernel. A PyTorch int4 model is refused: torchao's int4 weight-only
  path needs CUDA or its own CPU kernels (a torchao build matched to this torch), which lmforge does
  not depend on.
"""

import shutil
from pathlib import Path

from lmforge._optional import require
from lmforge.errors import ModelError
from lmforge.export.base import STEPS, ExportStep
from lmforge.export.compare import ENCODER_TASKS
from lmforge.export.onnx_export import _quiet_logs
from lmforge.inference.predictor import RunPredictor
from lmforge.models.int8 import quantize_int8, save_int8
from lmforge.models.onnx_model import ONNX_FILE

BLOCK_SIZE = 32


def check_quantize(context) -> None:

    kind, onnx = context.options.get("quantize"), bool(context.options.get("onnx"))
    record = context.record
    if kind == "int4" and not onnx:
        raise ModelError(
            "--quantize int4 needs --onnx: PyTorch has no maintained int4 CPU path here (torchao's "
            "int4 weight-only kernels need CUDA or a matching torchao build); ONNX Runtime has one"
        )
    if record.task not in ENCODER_TASKS:
        raise ModelError(
            f"--quantize: {context.run_dir} is a {record.task} run; quantization is for "
            "classification and token_classification runs"
        )
    family = record.family
    if family != "transformer":
        raise ModelError(
            f"--quantize: the {family} family is not quantized (int8 covers the linear layers of transformer runs)"
        )
    if onnx:
        require("onnxruntime.quantization", "onnxruntime", "--quantize with --onnx (pip install 'lmforge[export]')")


def has_vnni() -> bool:
    """True when the CPU has 8-bit dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize_step(current, context):
    kind = context.options["quantize"]
    if current.format == "onnx":
        return _onnx_step(current, context, kind)
    if current.format != "torch":
        raise ModelError(f"--quantize: cannot quantize a {current.format} model")
    return _torch_int8_step(current, context)


def _torch_int8_step(current, context):

    predictor = RunPredictor(current.folder, current.checkpoint, "cpu", "fp32")  # int8 kernels are CPU kernels
    model, tensors, metadata = quantize_int8(predictor.model.eval())
    variant, model_dir = context.new_variant("torch int8", "torch-int8", current)
    model.config.to_json_file(str(model_dir / "config.json"))
    predictor.tokenizer.save_pretrained(model_dir)
    save_int8(tensors, metadata, model_dir)
    return variant


def quantize_onnx(source: Path, target: Path, kind: str = "int8", weight_type: str | None = None) -> dict:
    """Quantize ``source`` (an fp32 ONNX file) into ``target``; returns the settings used."""
    import onnx

    if kind == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=BLOCK_SIZE, is_symmetric=True)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
        return {"weights": f"int4 blocks of {BLOCK_SIZE}"}
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight = weight_type or "qint8"
    reduce = weight == "qint8" and not has_vnni()
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8 if weight == "qint8" else QuantType.QUInt8,
        per_channel=True,
        reduce_range=reduce,
        op_types_to_quantize=["MatMul", "Gemm", "Gather"],
    )
    return {"weights": weight, "reduce_range": reduce, "vnni": has_vnni()}


def _onnx_step(current, context, kind: str):

    variant, model_dir = context.new_variant(f"onnx {kind}", f"onnx-{kind}", current)
    source = Path(current.folder) / "model"
    for item in source.iterdir():
        if item.name != ONNX_FILE and item.is_file():
            shutil.copyfile(item, model_dir / item.name)
    with _quiet_logs():  # onnxruntime.quantization logs its advice on the root logger
        variant.notes = quantize_onnx(
            source / ONNX_FILE, model_dir / ONNX_FILE, kind, context.options.get("onnx_weight_type")
        )
    return variant


def add_arguments(p) -> None:
    """The flags that ask for the quantize step."""
    p.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="int8: dynamic int8 linear layers (PyTorch, or ONNX Runtime with --onnx); int4: 4-bit "
        "weights, ONNX Runtime only (with --onnx)",
    )


STEPS.register(
    "quantize",
    ExportStep("quantize", 40, add_arguments, lambda o: bool(o.get("quantize")), quantize_step, check_quantize),
)
