"""A small per-process memo of the most recently used values (stdlib only)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Recent(Generic[V]):
    """The last ``size`` values by key: :meth:`get` returns the held value or makes it, and forgets the least
    recently used beyond ``size`` (dicts keep insertion order: a hit is moved to the end)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: dict[Hashable, V] = {}

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        value = self._held.pop(key) if key in self._held else make()
        self._held[key] = value
        while len(self._held) > self.size:
            del self._held[next(iter(self._held))]
        return value

    def clear(self) -> None:
        self._held.clear()
