"""Modules the plugin imports on first use: it loads in every pytest run of an environment where the harness is
installed, so numpy, torch and the registries wait until a harness item needs them."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

MODULE_DUNDERS = frozenset({"__version__", "__file__", "__name__", "__path__", "__spec__", "__all__"})


class LazyModule:
    """Stands for the module ``name``; the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") and attr not in MODULE_DUNDERS:  # pytest probes plugin attributes for markers
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r}, {'imported' if self._module else 'not imported'})"
