"""One registry pattern for every kind of pluggable thing: tasks, model families, saved-model
formats, tuning methods, export steps, data readers.

A kind has one ``Registry`` instance, defined beside its contract (the Protocol or base class). Each
implementation registers itself in the module that defines it (``@TASKS.register("classification")``),
and the kind's package ``__init__`` imports its built-in modules, so importing the package is enough
to find them. A built-in that is slow to import is named instead (``register_module``): the registry
imports that module, by its name, the first time it is needed. The registry never imports an
implementation it was not told of: that is what keeps the layers free of import cycles.

Lookups keep registration order, so a registry also serves as an ordered dispatch list (first match
wins), as PEFT dispatches its layer types.
"""

from collections.abc import Callable, Iterator
from importlib import import_module
from typing import Generic, TypeVar, overload

from lmforge.errors import ConfigError, LmforgeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named implementations of one kind.

    ``kind`` names the kind in messages ("task", "model family"); ``key`` is the config field a user
    sets to choose one ("task", "model.family"), so an unknown name fails naming that field.
    """

    def __init__(self, kind: str, key: str, error: type[LmforgeError] = ConfigError):
        self.kind = kind
        self.key = key
        self.error = error
        self._items: dict[str, T] = {}
        self._modules: dict[str, str] = {}  # name -> module that registers it when first needed

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, item: T) -> T: ...

    def register(self, name: str, item: T | None = None):
        """Register ``item`` under ``name``; without ``item``, a decorator that does so."""
        if item is not None:
            return self._add(name, item)

        def decorate(obj: T) -> T:
            return self._add(name, obj)

        return decorate

    def _add(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def register_module(self, name: str, module: str) -> None:
        """Register ``name`` as implemented by ``module``, imported (and registering itself) the first
        time ``name`` is looked up or the registry is listed: a built-in whose dependencies are slow
        to import (the n-gram family's scikit-learn and SciPy, 1.5 s) costs a command that never
        uses it nothing."""
        if name not in self._items:
            self._modules[name] = module

    def _import(self, name: str) -> None:
        module = self._modules.pop(name, None)
        if module is not None:
            import_module(module)

    def _import_all(self) -> None:
        for name in list(self._modules):
            self._import(name)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test or plugin undoing its own registration)."""
        del self._items[name]

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; an unknown name is a one-line error naming the
        config field and the known names."""
        self._import(name)
        try:
            return self._items[name]
        except KeyError:
            raise self.error(
                f"{self.key}: unknown {self.kind} '{name}' (known: {', '.join(sorted(self.names()))})"
            ) from None

    def names(self) -> list[str]:
        return list(self._items) + [name for name in self._modules if name not in self._items]

    def items(self) -> Iterator[tuple[str, T]]:
        self._import_all()
        return iter(list(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._modules

    def __iter__(self) -> Iterator[T]:
        self._import_all()
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self.names())
