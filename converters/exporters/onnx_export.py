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

import onnx
import torch
from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.checks.onnx_structure import check_onnx_structure, onnx_opset
from export_harness.converters.exporters.onnx_runner import OnnxRuntimeRunner
from export_harness.converters.target import ExportError, Target
from export_harness.converters.util.errors import error_head
from export_harness.models.spec import ModelSpec, to_torch

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
                        dynamic_axes=spec.onnx_dynamic_axes(),
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
        dynamic_shapes = spec.export_dynamic_shapes()
        program = torch.onnx.export(
            model, args, input_names=spec.input_names, output_names=spec.output_names, opset_version=self.opset,
            dynamo=True, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
        )
        program.save(str(path), external_data=False)

    def check_structure(self, artifact: Artifact, spec: ModelSpec) -> dict[str, Any]:
        return check_onnx_structure(artifact.path, spec)

    def load(self, artifact: Artifact, spec: ModelSpec) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(artifact.path, spec)


def _signature(values: Any) -> list[dict[str, Any]]:
    out = []
    for vi in values:
        tt = vi.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tt.shape.dim]
        out.append({"name": vi.name, "elem_type": onnx.TensorProto.DataType.Name(tt.elem_type), "shape": dims})
    return out
