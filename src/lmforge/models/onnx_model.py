"""A model folder holding ``model.onnx`` (written by ``lmforge export --onnx``), run by ONNX Runtime.

``OnnxModel`` keeps the call contract of the PyTorch models the tasks use --
``model(input_ids=..., attention_mask=...) -> .logits`` (and ``.last_hidden_state`` with
``output_hidden_states=True``, for the server's embeddings) -- so ``predict``, ``eval`` and ``serve``
run it without knowing. It is an ``nn.Module`` with no parameters of its own, so what the tasks do
to a model (``.eval()``, ``.to(device)``, a CRF attached as a submodule) still works; a CRF's
tensors sit beside the graph in ``crf.safetensors``.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge._optional import require
from lmforge.errors import ModelError
from lmforge.models.family import SAVED_FORMATS, LoadedModel, SavedFormat
from lmforge.tracking.run_record import RunRecord

ONNX_FILE = "model.onnx"
EXTRA = "pip install 'lmforge[export]'"


@dataclass
class OnnxOutput:
    logits: torch.Tensor
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple | None = None  # kept None: callers then read last_hidden_state


def session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimization and ``threads`` (default: torch's)."""
    ort = require("onnxruntime", "onnxruntime", f"ONNX models ({EXTRA})")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(nn.Module):
    """``model.onnx`` behind the PyTorch model's call contract (CPU only)."""

    def __init__(self, path: Path, config, threads: int | None = None):
        super().__init__()
        self.path, self.config = Path(path), config
        self.session = session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False, **_
    ) -> OnnxOutput:
        ids = input_ids.cpu().numpy().astype(np.int64)  # (B, T)
        given = {"input_ids": ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.input_names:
            value = given.get(name)
            if value is None:  # the defaults the PyTorch model takes: all real tokens, segment 0
                value = np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
            elif isinstance(value, torch.Tensor):
                value = value.cpu().numpy().astype(np.int64)
            feed[name] = value
        hidden = output_hidden_states and "last_hidden_state" in self.output_names
        if output_hidden_states and not hidden:
            raise ModelError(f"{self.path}: this ONNX model was exported without hidden states")
        out = self.session.run(["logits", "last_hidden_state"] if hidden else ["logits"], feed)
        return OnnxOutput(torch.from_numpy(out[0]), torch.from_numpy(out[1]) if hidden else None)

    def num_parameters(self) -> int:
        """Elements of the graph's weights (initializers), as ``parameters()`` counts a torch model's."""
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return int(sum(int(np.prod(t.dims)) if t.dims else 1 for t in graph.initializer))


def is_onnx_folder(folder: Path) -> bool:
    return (Path(folder) / ONNX_FILE).is_file()


def load_saved_onnx(folder: Path, record: RunRecord) -> LoadedModel:
    from transformers import AutoTokenizer, PretrainedConfig

    folder = Path(folder)
    # A plain config (labels, sizes) is all the tasks read; the architecture is in the graph.
    config = PretrainedConfig.from_json_file(str(folder / "config.json"))
    model = OnnxModel(folder / ONNX_FILE, config)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    info = record.model.to_dict()
    info["backend"] = "onnxruntime"
    return LoadedModel(model, tokenizer, info)


SAVED_FORMATS.register("onnx", SavedFormat(is_onnx_folder, load_saved_onnx))
