"""``onnx:fp32[guide-quantizer-int8]``: guide 001's pipeline, quantize the weights then export to ONNX.

The guide's ImprovedDynamicRangeQuantizer settings (int8, per-channel, asymmetric, 99.9th-percentile clipping)
applied by the fixed quantizer in ``export_harness.converters.quantization.maths``; Linear/Conv weights become
fake-quantized floats
on the int8 grid, so the graph is an ordinary FP32 ONNX file whose parity against the *unquantized* PyTorch
model measures the quantization error. The per-layer report travels with the artifact and the cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from export_harness.converters.cache import Artifact
from export_harness.converters.exporters.onnx_export import OnnxExportTarget
from export_harness.converters.quantization.maths import quantization_report, quantize_model
from export_harness.models.spec import ModelSpec

GUIDE_SETTINGS = {"bits": 8, "per_channel": True, "symmetric": False, "percentile": 99.9}


class GuideQuantizerTarget(OnnxExportTarget):
    """Fake-quantize Linear/Conv weights with the guide's settings, then the TorchScript-based ONNX export."""

    tier = "guide-int8"

    def __init__(self) -> None:
        super().__init__("torchscript", opset=17)
        self.backend = "guide-quantizer-int8"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "quantizer": GUIDE_SETTINGS}

    def convert(self, spec: ModelSpec, model: nn.Module, workdir: Path, deps: Mapping[str, Artifact]) -> dict[str, Any]:
        quantized, reports = quantize_model(model, **GUIDE_SETTINGS)
        meta = super().convert(spec, quantized.eval(), workdir, deps)
        meta["quant_layers"] = {name: r.as_dict() for name, r in reports.items()}
        meta["report"] = quantization_report(reports)
        return meta
