"""Backend probes: an ONNX (sub-)model and its inputs -> its outputs computed through a cell's own converter and
runtime (onnx2tf -> TFLite / SavedModel, onnx-tf -> SavedModel / TFLite, ONNX Runtime's fp16 conversion -> ONNX
Runtime); for the converters that start from PyTorch, a ``torch.export`` (sub-)program instead (litert-torch ->
TFLite, the ONNX exporter -> ONNX Runtime). The TF backends and litert-torch run in a warm worker of the backend's
interpreter (the harness's worker pool), the ORT ones in this process; all through
:mod:`~export_harness.converters.divergence.standalone`, the code every reproducer's ``repro.py`` carries."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from export_harness.converters.divergence import standalone
from export_harness.converters.target import StageError, Target
from export_harness.converters.tf.isolation import pool
from export_harness.converters.util.versions import package_versions

WORKER_MODULE = "export_harness.converters.divergence.probe_worker"
PROBE_TIMEOUT = 900.0


class ProbeError(Exception):
    """The backend could not convert or run a sub-model (its error, one line)."""


class NoProbe(Exception):
    """The cell's backend has no probe (one line: why)."""


Source = Any
"""What a probe converts: an ``onnx.ModelProto``, or for the PyTorch backends a ``torch.export.ExportedProgram``."""


def save_source(model: Source, work: Path) -> Path:
    """``model`` written into ``work`` as ``model.onnx`` or ``model.pt2``; returns the file."""
    if isinstance(model, onnx.ModelProto):
        onnx.save(model, str(work / "model.onnx"))
        return work / "model.onnx"
    import torch

    torch.export.save(model, str(work / "model.pt2"))
    return work / "model.pt2"


class Probe(Protocol):
    """An ONNX model (or a ``torch.export`` program) + inputs -> outputs through one backend (``expected`` only
    resolves layouts)."""

    backend: str
    precision: str
    label: str
    keep_shape: tuple[str, ...]

    def __call__(self, model: Source, inputs: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def versions(self) -> dict[str, str]: ...


@dataclass
class LocalProbe:
    """A backend run in this process (ONNX Runtime's fp16 conversion, or plain ONNX Runtime)."""

    backend: str
    precision: str
    label: str
    keep_shape: tuple[str, ...] = ()
    packages: tuple[str, ...] = ("onnxruntime", "onnx")
    opset: int | None = None
    """The exporter's opset (``torch-onnx``)."""

    def __call__(self, model: Source, inputs: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        work = Path(tempfile.mkdtemp(prefix="harness-probe-"))
        try:
            source = save_source(model, work)
            path = standalone.convert(self.backend, self.precision, str(source), str(work / "out"), [], self.opset)
            return standalone.run(self.backend, self.precision, path, dict(inputs), dict(expected))
        except Exception as exc:
            raise ProbeError(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def versions(self) -> dict[str, str]:
        return package_versions(*self.packages)


@dataclass
class WorkerProbe:
    """A TF backend run in its warm worker (``backend_spec``: the harness's :class:`~...tf.tflite.Backend`)."""

    backend: str
    precision: str
    label: str
    backend_spec: Any
    keep_shape: tuple[str, ...] = ()
    calls: list[float] = field(default_factory=list)

    def __call__(self, model: Source, inputs: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        python = self.backend_spec.python()
        if python is None:
            raise NoProbe(self.backend_spec.unavailable_reason() or f"{self.backend}: no interpreter")
        work = Path(tempfile.mkdtemp(prefix="harness-probe-"))
        try:
            source = save_source(model, work)
            np.savez(work / "inputs.npz", **dict(inputs))
            np.savez(work / "expected.npz", **dict(expected))
            names = set(inputs)
            result = pool().call(python, WORKER_MODULE, "probe", env=self.backend_spec.worker_env(),
                                 name=f"{self.backend}-divergence", timeout=PROBE_TIMEOUT, stage="run",
                                 backend=self.backend, precision=self.precision, onnx_path=str(source),
                                 inputs=str(work / "inputs.npz"), expected=str(work / "expected.npz"),
                                 outputs=str(work / "outputs.npz"), workdir=str(work / "out"),
                                 keep_shape=[k for k in self.keep_shape if k in names])
            self.calls.append(float(result.get("convert_seconds", 0.0)) + float(result.get("run_seconds", 0.0)))
            with np.load(work / "outputs.npz") as f:
                return {k: f[k] for k in f.files}
        except StageError as exc:
            raise ProbeError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def versions(self) -> dict[str, str]:
        return self.backend_spec.versions()


TF_PRECISIONS = {"tf": "savedmodel", "tflite": None}
RUNTIME = {"savedmodel": "TensorFlow SavedModel", "fp32": "TFLite fp32 (ai-edge-litert)",
           "fp16": "TFLite fp16 (ai-edge-litert)"}


def exporter_probe(target: Target) -> Probe:
    """The ONNX exporter that made ``target`` (an ``onnx:fp32`` target), judged on ONNX Runtime: for the PyTorch side
    of the chain (:mod:`~export_harness.converters.divergence.torch_finder`)."""
    dynamo = getattr(target, "exporter", "torchscript") == "dynamo"
    return LocalProbe("torch-onnx-dynamo" if dynamo else "torch-onnx", "fp32",
                      "torch.onnx.export" + (" (dynamo)" if dynamo else f" (TorchScript-based, opset "
                                                                        f"{getattr(target, 'opset', 17)})")
                      + " -> ONNX Runtime", packages=("torch", "onnx", "onnxruntime"),
                      opset=getattr(target, "opset", None))


def probe_for(target: Target, keep_shape: tuple[str, ...] = ()) -> Probe:
    """The probe running ``target``'s converter and runtime; :class:`NoProbe` with the reason when there is none."""
    if target.format == "onnx" and target.precision == "fp16":
        return LocalProbe("ort-fp16", "fp16", "ONNX Runtime convert_float_to_float16 -> ONNX Runtime")
    backend = target.backend or ""
    precision = "savedmodel" if target.format == "tf" else target.precision
    if backend in ("onnx2tf", "onnx-tf") and precision in RUNTIME:
        if backend == "onnx2tf":
            from export_harness.converters.tf.tf_onnx2tf import ONNX2TF as spec
        else:
            from export_harness.converters.tf.tf_onnx_tf import ONNX_TF as spec
        reason = spec.unavailable_reason()
        if reason:
            raise NoProbe(reason)
        return WorkerProbe(backend, precision, f"{backend} -> {RUNTIME[precision]}", spec,
                           keep_shape=keep_shape if backend == "onnx2tf" else ())
    if backend == "litert-torch" and precision in ("fp32", "fp16"):
        from export_harness.converters.tf.tf_litert_torch import LITERT_TORCH

        reason = LITERT_TORCH.unavailable_reason()
        if reason:
            raise NoProbe(reason)
        return WorkerProbe("litert-torch", precision, f"litert-torch -> {RUNTIME[precision]}", LITERT_TORCH)
    if precision not in ("fp32", "fp16", "savedmodel"):
        raise NoProbe(f"{target.name}: the finder explains fp32 / fp16 artifacts; {target.precision} differs from "
                      "fp32 by design (the quantized layer table localises it)")
    raise NoProbe(f"{target.name}: no divergence probe for this target's converter ({backend or target.format})")
