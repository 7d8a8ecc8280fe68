"""A saved n-gram model folder: ``config.json`` (settings), ``state.json`` (vocabularies, label
names), ``model.safetensors`` (arrays) and, for the tagger, crfsuite's own model file. Nothing in it
is a pickle; loading reads JSON and safetensors only."""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from lmforge.errors import ModelError

CONFIG, STATE, ARRAYS = "config.json", "state.json", "model.safetensors"
MODEL_TYPE = "lmforge_ngram"


def save_folder(folder: Path, config: dict, state: dict, arrays: dict[str, np.ndarray]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps({"model_type": MODEL_TYPE, **config}, indent=1), encoding="utf-8")
    (folder / STATE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / ARRAYS))


def load_folder(folder: Path) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(config, state, arrays) of a saved folder; a missing or foreign file is a ``ModelError``."""
    folder = Path(folder)
    for name in (CONFIG, STATE, ARRAYS):
        if not (folder / name).is_file():
            raise ModelError(f"{folder}: not a saved n-gram model (no {name})")
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    if config.get("model_type") != MODEL_TYPE:
        raise ModelError(f"{folder / CONFIG}: model_type is {config.get('model_type')!r}, not {MODEL_TYPE}")
    state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    return config, state, load_file(str(folder / ARRAYS))
