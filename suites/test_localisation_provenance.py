"""Localisation compares the tensors that carry the same value, not the same name: ONNX Runtime's QDQ quantizer
removes a Clip (ReLU6) before a QuantizeLinear and gives the Clip's output name to the unclipped Conv output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export_harness.converters.checks.localize import counterparts, onnx_layer_report


def _conv_relu6_conv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 2.0).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32), "w2")
    lo, hi = numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["conv1_out"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
         helper.make_node("Clip", ["conv1_out", "lo", "hi"], ["relu6_out"], name="/act/Clip"),
         helper.make_node("Conv", ["relu6_out", "w2"], ["y"], name="/conv2/Conv", pads=[1, 1, 1, 1])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], [w1, w2, lo, hi])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _quantize_static(src: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return out


def test_a_removed_clip_is_compared_after_its_qdq_not_as_the_unclipped_conv(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    fp32 = _conv_relu6_conv(tmp_path / "fp32.onnx")
    int8 = _quantize_static(fp32, tmp_path / "int8.onnx", feeds)
    cand = onnx.load(str(int8))
    producer = {o: n.op_type for n in cand.graph.node for o in n.output}
    assert "Clip" not in producer.values() and producer.get("relu6_out") == "Conv"  # the renaming this guards

    pairs, unmatched = counterparts(onnx.load(str(fp32)), cand)
    mapped = {ref: c for _, ref, c in pairs}
    assert mapped["relu6_out"] != "relu6_out" and "DequantizeLinear" in next(
        n.op_type for n in cand.graph.node if mapped["relu6_out"] in n.output)
    assert "conv1_out" not in mapped and unmatched >= 1  # its value exists nowhere in the int8 graph

    report = onnx_layer_report(fp32, int8, feeds[0])
    row = next(r for r in report.rows if r.tensor == "relu6_out")
    assert row.op == "Clip (after Q/DQ)" and row.cosine > 0.99, report.table()
    assert "without a counterpart" in report.table()
    # compared by name, the same tensor pair is the clipped against the unclipped output: what misled the user
    from export_harness.converters.checks.localize import _run_onnx, _with_all_outputs, compare_tensors

    a = _run_onnx(_with_all_outputs(onnx.load(str(fp32)), ["relu6_out"]), feeds[0], ["relu6_out"])["relu6_out"]
    b = _run_onnx(_with_all_outputs(cand, ["relu6_out"]), feeds[0], ["relu6_out"])["relu6_out"]
    assert compare_tensors(a, b)[0] < row.cosine
