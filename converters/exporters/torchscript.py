"""TorchScript targets: ``torchscript:trace`` and ``torchscript:script``, run by the TorchScript runtime."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.target import ExportError, Target
from export_harness.converters.util.errors import error_head
from export_harness.models.spec import ModelSpec, to_torch

TRACE_BATCH = 2
"""Batch used for tracing; the matrix then runs batch 1 and 3, so a frozen batch shows up."""


def save_script_module(module: torch.jit.ScriptModule, path: Path) -> None:
    """``torch.jit.save`` into memory, then one Python write: on a full disk the C++ writer aborts the whole process
    (SIGABRT, no exception), while Python's write raises ``OSError`` (ENOSPC), which the cache reports and never
    records as the cell's failure."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    path.write_bytes(buffer.getbuffer())


def quiet_jit_warnings() -> None:
    """Silence torch 2.13's TorchScript deprecation notice and tracer warnings (call inside catch_warnings)."""
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.(trace|script).*deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)


class TorchScriptTarget(Target):
    format = "torchscript"
    tier = "fp32"

    def __init__(self, mode: str) -> None:
        if mode not in ("trace", "script"):
            raise ValueError(f"TorchScript mode must be 'trace' or 'script', got {mode!r}")
        self.mode = mode
        self.precision = mode

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "trace_batch": TRACE_BATCH if self.mode == "trace" else None}

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        with warnings.catch_warnings():
            quiet_jit_warnings()
            module = self._compile(spec, model)
        save_script_module(module, workdir / "model.pt")
        return {"main": "model.pt", "mode": self.mode, "versions": self.versions()}

    def _compile(self, spec: ModelSpec, model: nn.Module) -> torch.jit.ScriptModule:
        try:
            if self.mode == "trace":
                example = to_torch(spec.example_inputs(TRACE_BATCH, seed=1234), spec.input_names)
                with torch.no_grad():
                    return torch.jit.trace(model, example, check_trace=False)
            return torch.jit.script(model)
        except Exception as exc:
            if self.mode == "script":
                # A failed script leaves half-compiled class types cached; without a reset the next model of
                # the same class fails with "Can't redefine method" instead of its real error.
                torch.jit._recursive.concrete_type_store = torch.jit._recursive.ConcreteTypeStore()
            raise ExportError(f"torch.jit.{self.mode} failed: {error_head(exc)}") from exc

    def load(self, artifact: Artifact, spec: ModelSpec) -> TorchScriptRunner:
        return TorchScriptRunner(artifact.path, spec)


class TorchScriptRunner:
    """Runs a saved TorchScript module on named numpy inputs."""

    def __init__(self, path: Path, spec: ModelSpec) -> None:
        self.spec = spec
        self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.info = {"runtime": "torch.jit", "version": torch.__version__}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.module(*to_torch(dict(inputs), self.spec.input_names))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {o.name: t.numpy() for o, t in zip(self.spec.outputs, outs, strict=True)}


