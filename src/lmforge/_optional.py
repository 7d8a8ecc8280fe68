"""Lazy optional imports with an error that names what to install."""

import importlib
from types import ModuleType

from lmforge.errors import MissingDependencyError
from lmforge.paths import private_dir


def require(module: str, package: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an error naming the pip package that provides it."""
    try:
        imported = importlib.import_module(module)
        if module == "jieba":
            _private_jieba_cache(imported)
        return imported
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"the package '{package or module}' is needed{what}: pip install {package or module}"
        ) from exc


def _private_jieba_cache(jieba: ModuleType) -> None:
    """jieba keeps its parsed dictionary in ``jieba.cache`` in the shared temporary folder by default
    and loads it with ``marshal``, which is not safe against a file another user planted there:
    point it at a folder of lmforge's cache that only this user can write."""
    tokenizer = getattr(jieba, "dt", None)
    if tokenizer is not None and tokenizer.tmp_dir is None:
        tokenizer.tmp_dir = str(private_dir("jieba"))
