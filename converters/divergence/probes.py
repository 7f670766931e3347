"""Backend probes: an ONNX (sub-)model and its inputs -> its outputs computed through a cell's own converter and
runtime (onnx2tf -> TFLite / SavedModel, onnx-tf -> SavedModel / TFLite, ONNX Runtime's fp16 conversion -> ONNX
Runtime). The TF backends run in a warm worker of the backend's interpreter (the harness's worker pool), the ORT one
in this process; both through :mod:`~export_harness.converters.divergence.standalone`, the code every reproducer's
``repro.py`` carries."""

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


class Probe(Protocol):
    """An ONNX model + inputs -> outputs through one backend (``expected`` only resolves layouts)."""

    backend: str
    precision: str
    label: str
    keep_shape: tuple[str, ...]

    def __call__(self, model: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
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

    def __call__(self, model: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        work = Path(tempfile.mkdtemp(prefix="harness-probe-"))
        try:
            onnx.save(model, str(work / "model.onnx"))
            path = standalone.convert(self.backend, self.precision, str(work / "model.onnx"), str(work / "out"), [])
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

    def __call__(self, model: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        python = self.backend_spec.python()
        if python is None:
            raise NoProbe(self.backend_spec.unavailable_reason() or f"{self.backend}: no interpreter")
        work = Path(tempfile.mkdtemp(prefix="harness-probe-"))
        try:
            onnx.save(model, str(work / "model.onnx"))
            np.savez(work / "inputs.npz", **dict(inputs))
            np.savez(work / "expected.npz", **dict(expected))
            names = {i.name for i in model.graph.input}
            result = pool().call(python, WORKER_MODULE, "probe", env=self.backend_spec.worker_env(),
                                 name=f"{self.backend}-divergence", timeout=PROBE_TIMEOUT, stage="run",
                                 backend=self.backend, precision=self.precision, onnx_path=str(work / "model.onnx"),
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
    if backend == "litert-torch":
        raise NoProbe("litert-torch converts the PyTorch module (torch.export), not an ONNX graph: there is no ONNX "
                      "sub-graph to hand it, and its FX nodes have no ONNX counterpart to bisect against")
    if precision not in ("fp32", "fp16", "savedmodel"):
        raise NoProbe(f"{target.name}: the finder explains fp32 / fp16 artifacts; {target.precision} differs from "
                      "fp32 by design (the quantized layer table localises it)")
    raise NoProbe(f"{target.name}: no divergence probe for this target's converter ({backend or target.format})")
