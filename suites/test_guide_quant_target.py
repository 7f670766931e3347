"""The guide-quantizer matrix target really quantizes, exports, and carries its per-layer report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export_harness.converters.cache import ArtifactCache
from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.conformance import run_cell
from export_harness.converters.registry import default_target_registry
from export_harness.models import tiny_ladeda

SPEC = next(s for s in tiny_ladeda.specs() if s.name == "tiny_ladeda")


def test_guide_quantizer_cell_reports_layers_and_measures_quantization_error(tmp_path: Path) -> None:
    targets = default_target_registry(include_entry_points=False)
    target = targets.get("onnx:fp32[guide-quantizer-int8]")
    assert target.tier == "guide-int8"
    result = run_cell(SPEC, target, SPEC.build(), cache=ArtifactCache(tmp_path), thresholds=Thresholds.load(),
                      targets=targets)
    layers = result.artifact["quant_layers"]
    assert set(layers) == {"conv1", "conv2", "layer1.0.conv1", "layer1.0.conv2", "fc"}
    assert all(layer["bits"] == 8 and layer["per_channel"] and layer["percentile"] == 99.9 for layer in layers.values())
    assert "worst SQNR" in result.artifact["report"]
    # the quantization error is real (not an FP32 export in disguise) yet within the tier
    worst = result.worst()
    assert 0.999 <= worst["cosine"] < 1.0 - 1e-9 and worst["max_abs"] > 1e-4
    # the exported fc weight lies on its int8 grid: fc / scale is integral (zero point is an integer)
    entry = ArtifactCache(tmp_path).entry_dir(result.artifact["key"])
    proto = onnx.load(str(entry / result.artifact["main"]))
    fc = next(numpy_helper.to_array(t) for t in proto.graph.initializer if list(t.dims) == [1, 8])
    scale = layers["fc"]["scale_min"]
    assert layers["fc"]["scale_max"] == scale
    codes = fc.astype(np.float64) / scale
    assert np.allclose(codes, np.round(codes), atol=1e-3)
