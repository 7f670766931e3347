"""ONNX Runtime compression methods as targets, each derived from the ``onnx:fp32`` artifact.

- ``onnx:fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`` (float I/O).
- ``onnx:int8-dynamic``: ``quantize_dynamic`` (int8 weights, activations quantized at run time).
- ``onnx:int8-static[minmax|entropy|percentile]``: ``quantize_static`` in QDQ format (S8S8, the documented default),
  per-channel weights, calibrated with a ``CalibrationDataReader`` over the spec's calibration inputs;
  ``[minmax-per-tensor]`` is the per-tensor control.

Calibration inputs come from ``spec.extra["calibration"]`` (the accuracy suite puts the proxy task's calibration
split there, disjoint from its eval split); without it, seeded ``spec.example_inputs`` (never the parity seeds).
Their identity is part of the cache key. Quantized artifacts are checked to really hold integer weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.checks.onnx_structure import check_onnx_structure
from export_harness.converters.exporters.onnx_runner import OnnxRuntimeRunner
from export_harness.converters.target import ExportError, StructureError, Target
from export_harness.converters.util.errors import error_head
from export_harness.models.spec import ModelSpec

FP32_TARGET = "onnx:fp32"
CALIBRATION_BATCH = 8
DEFAULT_CALIBRATION = 32
PERCENTILE = 99.999
"""ORT's default percentile (anchors: ORT Percentile calibration, Neural Compressor SmoothQuant)."""


def calibration_inputs(spec: ModelSpec, n: int = DEFAULT_CALIBRATION) -> tuple[dict[str, np.ndarray], str]:
    """(named calibration arrays, identity): ``spec.extra['calibration']`` or seeded example inputs."""
    if "calibration" in spec.extra:
        data = spec.extra["calibration"]
        return data, str(spec.extra.get("calibration_id", _arrays_hash(data)))
    samples = [spec.example_inputs(1, seed=10_000 + s) for s in range(n)]
    return {k: np.concatenate([s[k] for s in samples]) for k in samples[0]}, f"example_inputs:{n}"


def _arrays_hash(data: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for k in sorted(data):
        digest.update(k.encode() + np.ascontiguousarray(data[k]).tobytes())
    return digest.hexdigest()


class _DerivedOnnxTarget(Target):
    """A method applied to the FP32 ONNX artifact; the result runs on ONNX Runtime CPU."""

    format = "onnx"
    depends_on = (FP32_TARGET,)
    packages = ("torch", "onnx", "onnxruntime")
    integer_weights = True

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        src = deps[FP32_TARGET].path
        out = workdir / "model.onnx"
        try:
            extra = self.apply(spec, src, out) or {}
        except Exception as exc:
            raise ExportError(f"{self.name} failed: {error_head(exc)}") from exc
        proto = onnx.load(str(out), load_external_data=False)
        ops: dict[str, int] = {}
        for node in proto.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        return {"main": "model.onnx", "versions": self.versions(), "source_fp32": deps[FP32_TARGET].key,
                "op_counts": ops, **extra}

    def apply(self, spec: ModelSpec, src: Path, out: Path) -> dict[str, Any] | None:
        raise NotImplementedError

    def load(self, artifact: Artifact, spec: ModelSpec) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(artifact.path, spec)

    def check_structure(self, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
        facts = check_onnx_structure(artifact.path, spec)
        if self.integer_weights:
            proto = onnx.load(str(artifact.path), load_external_data=False)
            ints = [t.name for t in proto.graph.initializer if t.data_type in (onnx.TensorProto.INT8,
                                                                                onnx.TensorProto.UINT8)]
            if not ints:
                raise StructureError(f"{self.name}: no int8/uint8 initializer in the artifact (nothing quantized)")
            facts["int8_initializers"] = len(ints)
        return facts


class OrtFp16Target(_DerivedOnnxTarget):
    """``onnx:fp16``: float16 weights and compute, float32 graph inputs and outputs."""

    precision = "fp16"
    tier = "fp16"
    integer_weights = False

    def apply(self, spec: ModelSpec, src: Path, out: Path) -> dict[str, Any]:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        toposort(model.graph)  # the converter appends its input Casts at the end of the node list
        onnx.save(model, str(out))
        return {"method": "convert_float_to_float16(keep_io_types=True)"}

    def check_structure(self, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
        facts = super().check_structure(artifact, spec)
        proto = onnx.load(str(artifact.path), load_external_data=False)
        if not any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
            raise StructureError("onnx:fp16: no float16 initializer in the artifact")
        return facts


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` topologically in place (stable: keeps the original order where it is valid)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a missing input: leave the remainder as it was
            ordered.extend(rest)
            break
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


class OrtDynamicInt8Target(_DerivedOnnxTarget):
    """``onnx:int8-dynamic``: ORT ``quantize_dynamic`` with int8 weights."""

    precision = "int8-dynamic"
    tier = "int8-dynamic"

    def config(self) -> dict[str, Any]:
        return {"weight_type": "QInt8", "per_channel": False}

    def apply(self, spec: ModelSpec, src: Path, out: Path) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=False)
        return {"method": "quantize_dynamic(QInt8)"}


class _Reader:
    """CalibrationDataReader over named arrays, in batches of CALIBRATION_BATCH."""

    def __init__(self, data: Mapping[str, np.ndarray], spec: ModelSpec) -> None:
        self.batches = _batches(data, spec)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        pass


def _batches(data: Mapping[str, np.ndarray], spec: ModelSpec) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(data.values())))
    n = max(CALIBRATION_BATCH, n - n % CALIBRATION_BATCH)  # full batches only: ORT's histograms stack them
    for i in range(0, n, CALIBRATION_BATCH):
        yield {s.name: np.ascontiguousarray(data[s.name][i:i + CALIBRATION_BATCH], dtype=s.dtype) for s in spec.inputs}


class OrtStaticInt8Target(_DerivedOnnxTarget):
    """``onnx:int8-static[METHOD]``: QDQ S8S8 static quantization calibrated on the spec's calibration split."""

    precision = "int8-static"
    tier = "int8-static"
    METHODS = ("minmax", "entropy", "percentile")

    def __init__(self, method: str = "minmax", per_channel: bool = True) -> None:
        if method not in self.METHODS:
            raise ValueError(f"calibration method must be one of {self.METHODS}, got {method!r}")
        self.method = method
        self.per_channel = per_channel
        self.backend = method if per_channel else f"{method}-per-tensor"

    def config(self) -> dict[str, Any]:
        return {"method": self.method, "per_channel": self.per_channel, "format": "QDQ", "activations": "QInt8",
                "weights": "QInt8", "percentile": PERCENTILE if self.method == "percentile" else None,
                "calibration_batch": CALIBRATION_BATCH}

    def cache_key(self, spec: ModelSpec, model_identity: str, deps: Mapping[str, Artifact]) -> str:
        base = super().cache_key(spec, model_identity, deps)
        _, calib_id = calibration_inputs(spec)
        return hashlib.sha256(json.dumps([base, calib_id]).encode()).hexdigest()

    def apply(self, spec: ModelSpec, src: Path, out: Path) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        data, calib_id = calibration_inputs(spec)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.method]
        extra = {"CalibPercentile": PERCENTILE} if self.method == "percentile" else {}
        quantize_static(str(src), str(out), _Reader(data, spec), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=self.per_channel,
                        calibrate_method=method, extra_options=extra)
        self.postprocess(out)
        return {"method": f"quantize_static(QDQ, {self.method}, per_channel={self.per_channel})",
                "calibration_id": calib_id, "calibration_samples": len(next(iter(data.values())))}

    def postprocess(self, path: Path) -> None:
        """Hook for derived targets (the self-test's deliberately broken quantization)."""
