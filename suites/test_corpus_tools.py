"""The calibration corpus's own logic (suites/corpus/): the independent judgement, the fault injection and the page.
The corpus run itself is the nightly tier (tox -e corpus)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from suites.corpus.calibrate import _scale_largest, judge, table


def _entry(kind: str, output: str) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, output=output)


def test_a_classifier_is_healthy_while_its_decisions_hold() -> None:
    ref = np.random.default_rng(0).normal(size=(40, 1000))
    ok, numbers = judge(_entry("classifier", "y"), {"y": ref}, {"y": ref + 1e-4}, "float")
    assert ok and numbers["top1"] == 1.0
    flipped = ref.copy()
    flipped[:10] = -flipped[:10]
    assert not judge(_entry("classifier", "y"), {"y": ref}, {"y": flipped}, "float")[0]
    assert not judge(_entry("classifier", "y"), {"y": ref}, {"y": ref * np.nan}, "int8")[0]


def test_an_embedding_is_judged_by_retrieval_and_cosine() -> None:
    ref = np.random.default_rng(1).normal(size=(24, 64))
    assert judge(_entry("embedding", "e"), {"e": ref}, {"e": ref * 1.0001}, "float")[0]
    shuffled = np.random.default_rng(2).permutation(ref)
    assert not judge(_entry("embedding", "e"), {"e": ref}, {"e": shuffled}, "int8")[0]


def test_a_detector_is_judged_on_its_decision_box_and_landmarks() -> None:
    rng = np.random.default_rng(3)
    out = {"face_prob": rng.uniform(size=(10, 2)), "box": rng.normal(size=(10, 4)) * 0.1,
           "landmarks": rng.uniform(size=(10, 10))}
    assert judge(_entry("detector", "face_prob"), out, {k: v + 1e-3 for k, v in out.items()}, "float")[0]
    moved = {**out, "box": out["box"] + 0.05}
    assert not judge(_entry("detector", "face_prob"), out, moved, "float")[0]


def test_the_injected_fault_scales_the_largest_weight_tensor() -> None:
    small = numpy_helper.from_array(np.ones((2, 2), np.float32), "small")
    large = numpy_helper.from_array(np.full((2, 2), 3.0, np.float32), "large")
    graph = helper.make_graph([helper.make_node("Add", ["small", "large"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [small, large])
    model = helper.make_model(graph)
    assert _scale_largest(model, 1.2, TensorProto.FLOAT) == "large"
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.allclose(values["large"], 3.6) and np.allclose(values["small"], 1.0)


def test_the_page_counts_false_failures_and_misses_per_tier() -> None:
    rows = [{"model": "m", "target": "onnx:fp16", "tier": "fp16", "precision": "float", "harness": "FAILED",
             "stage": "parity", "message": "cosine", "task": "healthy", "task_numbers": {"top1": 1.0}},
            {"model": "m", "target": "onnx:fp16[fault-x2]", "tier": "fp16", "harness": "PASSED", "stage": None,
             "message": "", "task": "broken", "task_numbers": {"top1": 0.5}, "fault": True},
            {"model": "m", "target": "onnx:fp16[fault-x1.02]", "tier": "fp16", "harness": "FAILED", "stage": "parity",
             "message": "cosine", "task": "healthy", "task_numbers": {"top1": 1.0}, "fault": True},
            {"model": "m", "target": "onnx:fp32", "tier": "fp32", "harness": "PASSED", "stage": None, "message": "",
             "task": "healthy", "task_numbers": {}},
            {"model": "m", "target": "tflite:fp32[onnx2tf]", "tier": "fp32", "harness": "FAILED", "stage": "export",
             "message": "onnx2tf failed", "task": "no artifact"}]
    page = table(rows)
    assert "| fp16 | 3 | 2 | 1 | 1 | 1 | 1 of 2 |" in page and "| fp32 | 1 | 1 | 0 | 0 | 0 | - |" in page
    assert "`m-onnx:fp16`: harness FAILED, task healthy (top1 1). **Why:** a healthy conversion the tier fails" in page
    assert "`m-onnx:fp16[fault-x2]`: harness PASSED, task broken (top1 0.5). **Why:** a broken artifact inside" in page
    assert "| `m-tflite:fp32[onnx2tf]` | fp32 | FAILED (export) | - | no artifact | - |" in page


def test_committed_messages_carry_no_machine_paths(tmp_path: Path) -> None:
    from suites.corpus.calibrate import portable

    cache = tmp_path / "cache"
    text = (f"batch 1: logits: cosine 0.8 < 0.998; inputs and outputs saved to {cache}/failures/x/batch1.npz\n"
            "second line")
    assert portable(text, cache) == "batch 1: logits: cosine 0.8 < 0.998"
    assert portable(f'File "{cache}-onnx-tf/lib/x.py"', cache) == 'File "<path>"'
    assert portable(f"read {cache}/a.onnx", cache) == "read $HARNESS_CACHE/a.onnx"
