"""The model registry: the bundled zoo plus user specs from entry points or explicit registration."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import re
from collections.abc import Iterable, Sequence

from export_harness.models.spec import ModelSpec

BUILTIN_FAMILIES = (
    "export_harness.models.bst",
    "export_harness.models.tiny_ladeda",
    "export_harness.models.sign_language",
    "export_harness.models.alphazero_chess",
    "export_harness.models.gcode",
)
"""The bundled zoo's family modules, each with a ``specs()`` returning its ModelSpecs (their ``task`` and ``training``
declared on them, as a user's): adding a zoo family is its module plus one line here (docs/extending.md)."""
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""Model names: they become file names (saved batches, exported files) and test ids (``MODEL-TARGET``)."""
ENTRY_POINT_GROUP = "export_harness.models"
"""Installed packages may register models: the entry point names a callable returning ModelSpecs."""


class Registry:
    """Ordered name -> ModelSpec map; duplicate names are an error, not a silent override."""

    def __init__(self) -> None:
        self._specs: dict[str, ModelSpec] = {}

    def register(self, spec: ModelSpec) -> ModelSpec:
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"register() expects a ModelSpec, got {type(spec).__name__}")
        if not SAFE_NAME.fullmatch(spec.name):
            raise ValueError(f"model name {spec.name!r} (family {spec.family}): use letters, digits, '_', '-' and '.' "
                             "only, starting with a letter or digit (it names cache files, report files and test ids)")
        if spec.name in self._specs and self._specs[spec.name] is not spec:
            raise ValueError(f"model {spec.name!r} is already registered (family {self._specs[spec.name].family})")
        self._specs[spec.name] = spec
        return spec

    def extend(self, specs: Iterable[ModelSpec]) -> None:
        for spec in specs:
            self.register(spec)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; registered: {', '.join(self._specs)}") from None

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)


def builtin_specs(zoo: str | Sequence[str] = "all") -> list[ModelSpec]:
    """The bundled zoo's variants that ``zoo`` selects, in family order: ``"all"``, or variant names and ``*`` globs
    (``["tiny_ladeda", "sign_*"]``); an empty selection gives none. A name that selects nothing is an error."""
    patterns = parse_zoo(zoo)
    if not patterns:
        return []
    out: list[ModelSpec] = []
    for module_name in BUILTIN_FAMILIES:
        out.extend(importlib.import_module(module_name).specs())
    if patterns == ["all"]:
        return out
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(s.name, p) for s in out)]
    if unmatched:
        raise ValueError(f"zoo model {unmatched[0]!r} selects nothing; the zoo has {', '.join(s.name for s in out)} "
                         "(or 'all')")
    return [s for s in out if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def parse_zoo(zoo: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"a,b"``, ``"a b"`` or a list of names -> the list of patterns (``[]``: no zoo model)."""
    items = zoo.replace(",", " ").split() if isinstance(zoo, str) else [str(z) for z in zoo]
    return ["all"] if "all" in items else items


def entry_point_specs() -> list[ModelSpec]:
    out: list[ModelSpec] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        provided = ep.load()
        out.extend(provided() if callable(provided) else provided)
    return out


def default_registry(include_entry_points: bool = True, zoo: str | Sequence[str] = "all") -> Registry:
    """The bundled zoo's variants ``zoo`` selects (:func:`builtin_specs`), plus whatever installed packages declare
    under ``export_harness.models``."""
    reg = Registry()
    reg.extend(builtin_specs(zoo))
    if include_entry_points:
        reg.extend(entry_point_specs())
    return reg
