"""Checkpoints that resume exactly and are never half-written.

A checkpoint folder holds the model (safetensors), the optimizer's tensors (safetensors) and its
settings (JSON), the scheduler (JSON), the RNG states and the trainer state (step, epoch, position
in the epoch, early stopping). Nothing is pickled, so loading a checkpoint runs no code. It is
written to a hidden temporary folder, its files and the folder synced to disk, and renamed into
place (the parent synced too): a folder named ``step-N`` is complete, even after a power cut.
``checksums.json`` holds each file's SHA-256; resuming takes the newest checkpoint that verifies and
falls back to older ones, saying which it skipped and why.

At the end of a run the optimizer's state (two tensors per weight with AdamW: twice the model) is
dropped from the checkpoints unless ``train.keep_optimizer``; continuing such a run starts the
optimizer afresh, with a warning.
"""

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from lmforge.errors import RunFolderError

PREFIX = "step-"
CHECKSUMS = "checksums.json"
OPTIMIZER_FILES = ("optimizer.safetensors",)
log = logging.getLogger("lmforge")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def _fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk (folders: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a folder on a system that cannot sync one
    finally:
        os.close(fd)


def _seal(folder: Path) -> None:
    """Write ``checksums.json`` for the files in ``folder`` and sync everything to disk."""
    sums = {str(p.relative_to(folder)): _digest(p) for p in _files(folder)}
    _write_json(folder / CHECKSUMS, sums)
    for p in [*_files(folder), folder / CHECKSUMS]:
        _fsync(p)
    for sub in sorted({p.parent for p in _files(folder)}, key=lambda p: -len(p.parts)):
        _fsync(sub)


def verify_checkpoint(folder: Path) -> str | None:
    """Why ``folder`` cannot be trusted, or None. A checkpoint written before checksums existed is
    trusted as it is (it was renamed into place whole)."""
    path = folder / CHECKSUMS
    if not path.is_file():
        return None
    try:
        sums = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{CHECKSUMS} unreadable ({exc})"
    for name, digest in sums.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if _digest(file) != digest:
            return f"{name} does not match its checksum"
    return None


def drop_optimizer_states(root: Path) -> int:
    """Remove the optimizer's tensors from every checkpoint under ``root`` (checksums updated);
    returns the bytes freed."""
    freed = 0
    for folder in list_checkpoints(root):
        for name in OPTIMIZER_FILES:
            file = folder / name
            if file.is_file():
                freed += file.stat().st_size
                file.unlink()
        path = folder / CHECKSUMS
        if path.is_file():
            sums = json.loads(path.read_text(encoding="utf-8"))
            _write_json(path, {k: v for k, v in sums.items() if k not in OPTIMIZER_FILES})
    return freed


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def rng_state() -> tuple[dict, dict]:
    """(tensors, json) snapshot of every random generator the loop uses."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy form (the default): ("MT19937", keys, pos, ...)
    info = {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *map(_plain, np_state[2:])],
    }
    return tensors, info


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def set_rng_state(tensors: dict, info: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tuples(info["python"]))
    kind, keys, *rest = info["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))


def _optimizer_parts(optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, settings = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        settings["state"][str(pid)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.contiguous()
            else:
                settings["state"][str(pid)][key] = value
    return tensors, settings


def _optimizer_state(tensors: dict, settings: dict) -> dict:
    state: dict = {int(pid): dict(entry) for pid, entry in settings["state"].items()}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": settings["param_groups"]}


def has_flattened_rnn(model) -> bool:
    """Whether ``model`` holds an RNN whose weights cuDNN flattened into one buffer (on CUDA): each
    weight is then a view of a larger block, which safetensors refuses to save as it is."""
    return any(isinstance(m, torch.nn.RNNBase) and _is_view(m.get_parameter("weight_ih_l0")) for m in model.modules())


def _is_view(t: torch.Tensor) -> bool:
    return t.untyped_storage().nbytes() > t.numel() * t.element_size()


def independent_state(model) -> dict:
    """The state dict with each tensor copied to its own CPU storage (for a flattened RNN)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


FROZEN_FILE = "frozen.json"  # a checkpoint without the frozen weights: where they come from


def trained_state(model) -> dict:
    """The weights that training changes: trainable parameters (each tensor once, however many
    names it has) and the buffers a state dict keeps."""
    kept = {name for name, p in model.named_parameters() if p.requires_grad}
    kept |= {name for name, _ in model.named_buffers()}
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k in kept}


def save_checkpoint(
    folder: Path,
    model,
    optimizer,
    scheduler,
    trainer_state: dict,
    rng: tuple[dict, dict] | None = None,
    extra=None,
    optimizer_state: bool = True,
    frozen_from: str | None = None,
) -> Path:
    """Write a complete checkpoint atomically; returns its folder. ``extra(folder)``, if given,
    writes more files into it (the weight average of ``train.ema``) before it is complete.
    ``optimizer_state=False`` leaves out the optimizer's tensors, as ``drop_optimizer_states`` would
    remove them (the checkpoint of a run's last step when the end of the run drops them anyway).
    ``frozen_from``: the model's frozen weights are left out -- they are the ones loaded from this
    source, which a resumed job loads again -- so a LoRA checkpoint holds the adapter, not the base
    (SmolLM2, r 16 on every linear layer: 19.6 MB instead of 558 MB)."""
    folder = Path(folder)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if frozen_from is not None:
        save_file(trained_state(model), str(tmp / "model.safetensors"))
        _write_json(tmp / FROZEN_FILE, {"source": frozen_from})
    elif has_flattened_rnn(model):
        save_file(independent_state(model), str(tmp / "model.safetensors"))
    else:
        save_model(model, str(tmp / "model.safetensors"))  # tied weights stored once
    opt_tensors, opt_settings = _optimizer_parts(optimizer)
    if optimizer_state:
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    _write_json(tmp / "optimizer.json", opt_settings)
    _write_json(tmp / "scheduler.json", scheduler.state_dict())
    rng_tensors, rng_info = rng if rng is not None else rng_state()
    save_file({k: v.contiguous() for k, v in rng_tensors.items()}, str(tmp / "rng.safetensors"))
    _write_json(tmp / "rng.json", rng_info)
    if extra is not None:
        extra(tmp)
    _write_json(tmp / "trainer_state.json", trainer_state)
    _seal(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    _fsync(folder.parent)  # the rename itself
    return folder


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG from ``folder``; returns the trainer state."""
    try:
        if (folder / FROZEN_FILE).is_file():
            _load_trained(model, folder)
        else:
            load_model(model, str(folder / "model.safetensors"))
        settings = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
        if (folder / "optimizer.safetensors").is_file():
            optimizer.load_state_dict(_optimizer_state(load_file(str(folder / "optimizer.safetensors")), settings))
        else:
            log.warning(
                "%s: the optimizer's state was dropped when the run ended (train.keep_optimizer: false): "
                "continuing with a fresh optimizer state",
                folder,
            )
        scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text(encoding="utf-8")))
        set_rng_state(
            load_file(str(folder / "rng.safetensors")), json.loads((folder / "rng.json").read_text(encoding="utf-8"))
        )
        return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise RunFolderError(f"{folder}: cannot resume from this checkpoint ({str(exc).splitlines()[0]})") from None


def _load_trained(model, folder: Path) -> None:
    """The trained weights of a checkpoint saved with ``frozen_from`` into ``model``, whose frozen
    weights the job loaded again from their source; any other weight missing is an error."""
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k not in missing}
    params = dict(model.named_parameters(remove_duplicate=False))
    lost = [k for k in missing if k in params and params[k].requires_grad and params[k].data_ptr() not in loaded]
    lost += [k for k in missing if k not in params]  # a buffer
    if unexpected or lost:
        raise ValueError(f"weights that do not fit the model: {(unexpected or lost)[0]}")


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(PREFIX)
        and p.name[len(PREFIX) :].isdigit()
        and (p / "trainer_state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def prune_checkpoints(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp-*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)
