"""Checks before loading weights: only safetensors, never pickles, never remote code."""

from pathlib import Path

from lmforge.errors import ModelError

PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "model.ckpt.index")


def check_model_folder(folder: Path, label: str) -> None:
    """Refuse folders that do not exist, hold no config, or hold only pickled weights."""
    if not folder.exists():
        raise ModelError(f"model '{label}': folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelError(f"model '{label}': {folder} is not a folder")
    if not (folder / "config.json").is_file():
        raise ModelError(f"model '{label}': {folder} has no config.json (not a Hugging Face model folder)")
    has_safe = any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file()
    if not has_safe:
        pickled = [name for name in PICKLE_FILES if (folder / name).exists()]
        if pickled:
            raise ModelError(
                f"model '{label}': {folder} holds only pickled weights ({pickled[0]}); "
                "lmforge loads safetensors only -- convert them where you trust the file"
            )
        raise ModelError(f"model '{label}': {folder} has no *.safetensors weights")


class quiet_transformers:
    """Silence transformers' load report while loading a folder whose extra tensors (a CRF's) are
    expected and restored separately."""

    def __enter__(self):
        import transformers

        self.level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        import transformers

        transformers.logging.set_verbosity(self.level)
        return False
