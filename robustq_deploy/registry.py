"""One registry type for every name -> thing table of the project.

Datasets, architectures, training methods, attacks, export formats, target backends, kernel
libraries, ... are each a :class:`Registry`: filled by a decorator (or :meth:`Registry.add`),
refusing a name registered twice (a programming error, :class:`ValueError`), listing its names
(for validation and the CLI's help), and refusing an unknown name with one
:class:`~robustq_deploy.errors.ConfigError` line that lists the choices::

    METHODS = Registry("training method", key="train.method")

    @METHODS.register("qat")
    class QAT(Method): ...

    METHODS.get("qta")   # ConfigError: train.method: unknown training method 'qta'; choose one of ...

A registry whose entries live in modules that must not be imported eagerly (they import the
package that owns the registry) takes ``load``: a function that imports them, called the first
time the registry is read.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, key: str | None = None, load: Callable[[], None] | None = None):
        self.what = what  # what an entry is, for messages: "training method"
        self.key = key  # the config key or option that names an entry, for messages: "train.method"
        self._entries: dict[str, T] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        return self._entries

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name``."""
        def deco(entry: T) -> T:
            return self.add(name, entry)
        return deco

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._loaded())

    def choices(self) -> str:
        """The names, sorted, as error messages list them."""
        return ", ".join(sorted(map(str, self.names())))

    def get(self, name: str, key: str | None = None) -> T:
        """The entry ``name``; an unknown name is a one-line ConfigError listing the choices
        (prefixed with ``key`` or the registry's own key)."""
        entries = self._loaded()
        if name not in entries:
            where = key or self.key
            raise ConfigError(f"{where + ': ' if where else ''}unknown {self.what} {name!r}; "
                              f"choose one of {self.choices()}")
        return entries[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._loaded())

    def copy(self) -> "Registry[T]":
        """A registry with the same entries (tests register into a copy, not the real one)."""
        other: Registry[T] = Registry(self.what, self.key)
        other._entries = dict(self._loaded())
        return other

    def items(self) -> list[tuple[str, T]]:
        return list(self._loaded().items())

    def values(self) -> list[T]:
        return list(self._loaded().values())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {self.choices()})"


def registry_of(entries: dict[str, Any], what: str, key: str | None = None) -> Registry:
    """A registry holding ``entries`` (for tables that are complete where they are written)."""
    reg: Registry = Registry(what, key)
    for name, entry in entries.items():
        reg.add(name, entry)
    return reg


__all__ = ["Registry", "registry_of"]
