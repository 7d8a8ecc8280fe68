"""Lazy optional imports with an error that names what to install."""

import importlib
from types import ModuleType

from lmforge.errors import MissingDependencyError


def require(module: str, package: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an error naming the pip package that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"the package '{package or module}' is needed{what}: pip install {package or module}"
        ) from exc
