"""ONNX FP32 targets through both PyTorch exporters, checked with onnx.checker and run on ONNX Runtime.

``onnx:fp32`` uses the TorchScript-based exporter (``dynamo=False``), which honours the requested opset;
``onnx:fp32[dynamo]`` uses the torch.export-based exporter, which writes opset 18 whatever is asked. Both
record the exporter, the opset requested and the opset produced.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from converters.cache import Artifact
from converters.exporters.torchscript import error_head
from converters.target import ExportError, StructureError, Target
from models.spec import ModelSpec, to_torch

EXPORT_BATCH = 2


@contextlib.contextmanager
def export_mode() -> Iterator[None]:
    """Disable the fused TransformerEncoderLayer fast path, which the TorchScript exporter cannot export."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def onnx_opset(model: onnx.ModelProto) -> int:
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


class OnnxExportTarget(Target):
    """PyTorch -> ONNX (FP32) via the chosen exporter."""

    format = "onnx"
    precision = "fp32"
    tier = "fp32"
    packages = ("torch", "onnx", "onnxscript")

    def __init__(self, exporter: str = "torchscript", opset: int = 17) -> None:
        if exporter not in ("torchscript", "dynamo"):
            raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
        self.exporter = exporter
        self.opset = opset
        self.backend = "dynamo" if exporter == "dynamo" else None

    def config(self) -> dict[str, Any]:
        return {"exporter": self.exporter, "opset": self.opset, "export_batch": EXPORT_BATCH}

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        path = workdir / "model.onnx"
        args = to_torch(spec.example_inputs(EXPORT_BATCH, seed=1234), spec.input_names)
        log = io.StringIO()
        try:
            with export_mode(), contextlib.redirect_stdout(log):
                if self.exporter == "dynamo":
                    self._export_dynamo(spec, model, args, path)
                else:
                    torch.onnx.export(
                        model, args, str(path), input_names=spec.input_names, output_names=spec.output_names,
                        opset_version=self.opset, dynamo=False, do_constant_folding=True,
                        dynamic_axes=_dynamic_axes(spec),
                    )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export({self.exporter}) failed: {error_head(exc)}") from exc
        proto = onnx.load(str(path), load_external_data=False)
        return {
            "main": "model.onnx",
            "exporter": self.exporter,
            "opset_requested": self.opset,
            "opset_produced": onnx_opset(proto),
            "ir_version": proto.ir_version,
            "versions": self.versions(),
            "inputs": _signature(proto.graph.input),
            "outputs": _signature(proto.graph.output),
        }

    def _export_dynamo(self, spec: ModelSpec, model: nn.Module, args: tuple, path: Path) -> None:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = tuple({i.batch_axis: batch} if i.batch_axis is not None else None for i in spec.inputs)
        program = torch.onnx.export(
            model, args, input_names=spec.input_names, output_names=spec.output_names, opset_version=self.opset,
            dynamo=True, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
        )
        program.save(str(path), external_data=False)

    def check_structure(self, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
        return check_onnx_structure(artifact.path, spec)

    def load(self, artifact: Artifact, spec: ModelSpec) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(artifact.path, spec)


def check_onnx_structure(path: Path, spec: ModelSpec) -> dict[str, Any]:
    """onnx.checker (full), I/O names as declared, and declared-dynamic batch axes really symbolic."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise StructureError(f"onnx.checker rejected {path.name}: {error_head(exc)}") from exc
    proto = onnx.load(str(path), load_external_data=False)
    inputs = {vi.name: vi for vi in proto.graph.input}
    outputs = {vi.name: vi for vi in proto.graph.output}
    for names, found, kind in ((spec.input_names, inputs, "input"), (spec.output_names, outputs, "output")):
        missing = [n for n in names if n not in found]
        if missing:
            raise StructureError(f"{kind} {missing[0]!r} not in graph {kind}s {sorted(found)}")
    frozen = []
    for name, axis in [(i.name, i.batch_axis) for i in spec.inputs] + [(o.name, 0) for o in spec.outputs]:
        if axis is None:
            continue
        vi = inputs.get(name) or outputs[name]
        dims = vi.type.tensor_type.shape.dim
        if len(dims) > axis and dims[axis].HasField("dim_value"):
            frozen.append(f"{name}[{axis}]={dims[axis].dim_value}")
    if frozen:
        raise StructureError("declared-dynamic batch axis frozen in the graph: " + ", ".join(frozen))
    return {"opset": onnx_opset(proto), "nodes": len(proto.graph.node),
            "op_types": sorted({n.op_type for n in proto.graph.node})}


class OnnxRuntimeRunner:
    """ONNX Runtime CPU session on named numpy inputs (cast to the declared dtypes)."""

    def __init__(self, path: Path, spec: ModelSpec, threads: int = 0) -> None:
        import onnxruntime as ort

        self.spec = spec
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.info = {"runtime": "onnxruntime", "version": ort.__version__,
                     "providers": self.session.get_providers()}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {i.name: np.ascontiguousarray(inputs[i.name], dtype=i.dtype) for i in self.spec.inputs}
        values = self.session.run(self.spec.output_names, feed)
        return dict(zip(self.spec.output_names, values, strict=True))


def _dynamic_axes(spec: ModelSpec) -> dict[str, dict[int, str]]:
    axes = {i.name: {i.batch_axis: "batch"} for i in spec.inputs if i.batch_axis is not None}
    if spec.dynamic_batch:
        axes.update({o.name: {0: "batch"} for o in spec.outputs})
    return axes


def _signature(values: Any) -> list[dict[str, Any]]:
    out = []
    for vi in values:
        tt = vi.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tt.shape.dim]
        out.append({"name": vi.name, "elem_type": onnx.TensorProto.DataType.Name(tt.elem_type), "shape": dims})
    return out
