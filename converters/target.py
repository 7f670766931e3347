"""Target: one way to produce and run an artifact, named ``format:precision[backend]``.

A target converts ``(spec, model)`` into files in a work directory and loads them into a Runner that takes
and returns the spec's named numpy arrays in the PyTorch layout and dtype.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.util.versions import package_versions
from export_harness.models.spec import ModelSpec


class Runner(Protocol):
    """Runs an artifact on its own runtime: named numpy inputs -> named numpy outputs (PyTorch layout)."""

    info: dict[str, Any]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class StageError(Exception):
    """A cell failed at a named stage (export, structure, load, run, parity)."""

    stage = "export"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class ExportError(StageError):
    stage = "export"


class StructureError(StageError):
    stage = "structure"


class Target(ABC):
    """Base class of all targets. Subclasses set the naming fields and implement convert/load."""

    format: str
    precision: str
    backend: str | None = None
    tier: str = "fp32"
    """Threshold tier its parity is judged with (see baselines/thresholds.toml)."""
    depends_on: tuple[str, ...] = ()
    """Names of targets whose artifacts ``convert`` receives in ``deps``."""
    packages: tuple[str, ...] = ("torch",)
    """Distributions whose versions are part of the artifact's identity."""
    variant: str = ""
    """Name suffix of a copy of this target in another chain (``@opset12``), made by
    ``export_harness.converters.variants``."""
    variant_deps: tuple[tuple[str, str], ...] = ()
    """A copy's dependencies that are not "the same name plus ``variant``": (name in ``depends_on``, target)."""
    opset_variant: int | None = None
    """The ONNX opset of a copy's chain (None: the default chain)."""
    chain: str = ""
    """The chain a copy belongs to beyond its opset (``guide-int8``: built from the guide-quantized ONNX)."""

    @property
    def name(self) -> str:
        suffix = f"[{self.backend}]" if self.backend else ""
        return f"{self.format}:{self.precision}{suffix}{self.variant}"

    def dependency(self, name: str) -> str:
        """The registered target that provides ``deps[name]``: the same chain as this target."""
        return dict(self.variant_deps).get(name, f"{name}{self.variant}")

    def config(self) -> dict[str, Any]:
        """Settings that change the artifact; part of the cache key."""
        return {}

    def versions(self) -> dict[str, str]:
        return package_versions(*self.packages)

    def cache_key(self, spec: ModelSpec, model_identity: str, deps: Mapping[str, Artifact]) -> str:
        """Content address: model weights and code, I/O contract, target config, converter versions and code."""
        identity = {
            "model": spec.name,
            "model_identity": model_identity,
            "inputs": [(i.name, i.shape, i.dtype) for i in spec.inputs],
            "outputs": spec.output_names,
            "target": self.name,
            "config": self.config(),
            "versions": self.versions(),
            "code": _source_hash(type(self)),
            "deps": {name: art.key for name, art in sorted(deps.items())},
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    @abstractmethod
    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        """Write the artifact into ``workdir``; return metadata with at least ``main`` (the main file's name)."""

    @abstractmethod
    def load(self, artifact: Artifact, spec: ModelSpec) -> Runner:
        """Open the artifact on its runtime."""

    def check_structure(self, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
        """Structural checks on the artifact; raise StructureError. Returns facts worth reporting."""
        return {}

    def is_deterministic_failure(self, exc: BaseException) -> bool:
        """Whether a conversion error would recur with identical inputs (then it is cached)."""
        return isinstance(exc, StageError)

    def __repr__(self) -> str:
        return f"<Target {self.name}>"


CONVERTERS_PACKAGE = __name__.rpartition(".")[0]
"""``export_harness.converters``: the modules whose source is part of an artifact's key."""


def _source_hash(cls: type) -> str:
    """Hash of the modules defining ``cls`` and its bases: editing converter code invalidates artifacts."""
    digest = hashlib.sha256()
    for klass in cls.__mro__:
        module = inspect.getmodule(klass)
        if module is None or not module.__name__.startswith(CONVERTERS_PACKAGE):
            continue
        try:
            digest.update(inspect.getsource(module).encode())
        except (OSError, TypeError):
            digest.update(module.__name__.encode())
    return digest.hexdigest()[:16]
