"""``--onnx``: an encoder run's model (transformer family) as ONNX, with dynamic batch and sequence axes, checked against
PyTorch before anything is kept.

The graph comes from ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript; the older
TorchScript exporter froze the attention mask's shape and disagreed by ~1 on MiniLM's hidden
states). Its inputs are ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for BERT-style
models); its outputs ``logits`` and, for transformers, ``last_hidden_state`` (the server's
embeddings). The check runs the ONNX Runtime session and the PyTorch model on random token ids at
batch sizes and lengths the export never saw (rows padded to random lengths) and on real texts in
batches of 16: the export fails unless the largest logit difference, and the largest hidden-state
difference on real tokens, are within ``TOLERANCE``.
"""

import contextlib
import io
import logging
import re
import shutil

import torch
from torch import nn

from lmforge._optional import require
from lmforge.errors import ModelError
from lmforge.export.base import STEPS, ExportStep
from lmforge.export.compare import ENCODER_TASKS
from lmforge.inference.predictor import RunPredictor
from lmforge.models.crf_head import PREFIX, find_crf
from lmforge.models.onnx_model import ONNX_FILE, OnnxModel

TOLERANCE = 1e-4
RANDOM_SHAPES = [(1, 3), (3, 17), (7, 41), (5, 64)]  # (batch, length): export sees (2, a few tokens)


class _Graph(nn.Module):
    """The model with positional inputs and a tuple out, as the exporter wants it."""

    def __init__(self, model, types: bool, hidden: bool):
        super().__init__()
        self.model, self.types, self.hidden = model, types, hidden

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.types:
            kwargs["token_type_ids"] = token_type_ids
        if self.hidden:
            out = self.model(**kwargs, output_hidden_states=True)
            return out.logits, out.hidden_states[-1]  # (B, L) or (B, T, L); (B, T, C)
        return (self.model(**kwargs).logits,)


def check_onnx(context) -> None:

    task, family = context.record.task, context.record.family
    if task not in ENCODER_TASKS:
        raise ModelError(
            f"--onnx: {context.run_dir} is a {task} run; ONNX export is for encoder runs "
            f"(classification, token_classification)"
        )
    if family == "lstm":  # its encoder packs padded sequences (pack_padded_sequence), which torch.export refuses
        raise ModelError(
            "--onnx: the lstm family packs padded sequences, which torch.onnx cannot export; "
            "ONNX export covers transformer runs"
        )
    if family != "transformer":
        raise ModelError(f"--onnx: the {family} family has no ONNX export (transformer runs only)")

    for module in ("onnx", "onnxruntime", "onnxscript"):
        require(module, module, "--onnx (pip install 'lmforge[export]')")


def _inputs(ids: torch.Tensor, mask: torch.Tensor, types: bool) -> tuple:
    return (ids, mask, torch.zeros_like(ids)) if types else (ids, mask)


def _random_batches(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for batch, length in RANDOM_SHAPES:
        ids = torch.randint(0, vocab, (batch, length), generator=g)  # (B, T)
        lengths = torch.randint(2, length + 1, (batch,), generator=g) if length > 2 else torch.full((batch,), length)
        lengths[0] = length  # one full row
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, T)
        yield ids * mask, mask


def _real_batches(tokenizer, texts: list[str], max_length: int, size: int = 16):
    for start in range(0, len(texts), size):
        batch = tokenizer(
            texts[start : start + size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        yield batch["input_ids"], batch["attention_mask"]


@torch.inference_mode()
def parity(graph: _Graph, onnx_model, batches) -> dict:
    """Largest |ONNX - PyTorch| of the logits (all positions) and of the hidden states (real tokens)."""
    logits, hidden, shapes = 0.0, 0.0, set()
    for ids, mask in batches:
        args = _inputs(ids, mask, graph.types)
        want = graph(*args)
        got = onnx_model(*args[:2], token_type_ids=args[2] if graph.types else None, output_hidden_states=graph.hidden)
        logits = max(logits, (want[0] - got.logits).abs().max().item())
        if graph.hidden:
            real = mask.bool()[..., None]
            hidden = max(hidden, ((want[1] - got.last_hidden_state).abs() * real).max().item())
        shapes.add(tuple(ids.shape))
    return {"max_logit_difference": logits, "max_hidden_difference": hidden, "shapes": sorted(shapes)}


def _export(graph: _Graph, sample: tuple, path) -> None:
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if graph.types else [])
    batch, sequence = torch.export.Dim("batch", max=4096), torch.export.Dim("sequence", max=8192)
    dynamic = {name: {0: batch, 1: sequence} for name in names}
    outputs = ["logits"] + (["last_hidden_state"] if graph.hidden else [])
    printed = io.StringIO()
    try:  # the exporter reports its progress and missing optional packages (torchvision) at length
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), _quiet_logs():
            torch.onnx.export(
                graph,
                sample,
                str(path),
                dynamo=True,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=dynamic,
                optimize=True,
                external_data=False,
            )
    except Exception as exc:
        cause = exc
        while cause.__cause__ is not None:  # the exporter wraps the real reason
            cause = cause.__cause__
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        raise ModelError(f"--onnx: torch.onnx could not export this model ({first[:300]})") from None


@contextlib.contextmanager
def _quiet_logs():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def onnx_step(current, context):

    # On the CPU: the graph is traced with CPU inputs and checked against ONNX Runtime's CPU session.
    predictor = RunPredictor(current.folder, current.checkpoint, "cpu", "fp32")
    model, tokenizer = predictor.model.eval(), predictor.tokenizer
    family = predictor.record.family
    types = (
        family == "transformer"
        and getattr(model.config, "type_vocab_size", 0) > 0
        and "token_type_ids" in tokenizer.model_input_names
    )
    graph = _Graph(model, types, hidden=family == "transformer").eval()
    variant, model_dir = context.new_variant("onnx fp32", "onnx", current)
    texts = context.samples or ["The quick brown fox jumps over the lazy dog.", "Who are you?"]
    ids, mask = next(_real_batches(tokenizer, (texts * 2)[:2], predictor.max_length))
    if ids.shape[1] < 3:  # the exporter specializes sizes 0 and 1
        ids, mask = torch.cat([ids, ids[:, -1:], ids[:, -1:]], 1), torch.cat([mask, mask[:, -1:], mask[:, -1:]], 1)
    with torch.inference_mode(False), torch.no_grad():
        _export(graph, _inputs(ids, mask, types), model_dir / ONNX_FILE)
    model.config.to_json_file(str(model_dir / "config.json"))
    tokenizer.save_pretrained(model_dir)
    _save_crf(model, model_dir)
    onnx_model = OnnxModel(model_dir / ONNX_FILE, model.config)
    vocab = int(getattr(model.config, "vocab_size", len(tokenizer)))
    found = parity(
        graph, onnx_model, list(_random_batches(vocab)) + list(_real_batches(tokenizer, texts, predictor.max_length))
    )
    worst = max(found["max_logit_difference"], found["max_hidden_difference"])
    if not worst <= TOLERANCE:
        shutil.rmtree(variant.folder, ignore_errors=True)
        raise ModelError(f"--onnx: ONNX and PyTorch outputs differ by {worst:.2e} (> {TOLERANCE:.0e}); nothing written")
    variant.notes = {"parity_max_difference": worst, "parity_shapes": len(found["shapes"])}
    return variant


def _save_crf(model, folder) -> None:
    """A CRF head's tensors beside the graph (the task decodes with them in PyTorch)."""

    crf = find_crf(model)
    if crf is None:
        return
    from safetensors.torch import save_file

    save_file(
        {PREFIX + name: p.detach().contiguous() for name, p in crf.named_parameters()}, str(folder / "crf.safetensors")
    )


def add_arguments(p) -> None:
    """The flags that ask for the onnx step."""
    p.add_argument(
        "--onnx",
        action="store_true",
        help="export an encoder (classification, NER; embeddings included) to ONNX, dynamic batch and "
        "length, checked against PyTorch (max difference <= 1e-4); predict/eval/serve run it with "
        "ONNX Runtime",
    )


STEPS.register(
    "onnx",
    ExportStep("onnx", 30, add_arguments, lambda o: bool(o.get("onnx")), onnx_step, check_onnx),
)
