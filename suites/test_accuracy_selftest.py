"""Self-tests of the accuracy gates: a deliberately broken quantization fails with its drop and is localised to
the broken layer first; the ratchet fails a cell within budget; noise of a small eval set is not a regression;
budget overrides need a reason. The function names contain ``accuracy`` like the accuracy suite's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from converters.accuracy import Budget, BudgetError, Budgets, drop_function, evaluate_accuracy, paired_bootstrap
from converters.ort_methods import OrtDynamicInt8Target
from models.proxy_tasks import Metric, task_for

BROKEN_LAYER = "/layer1/layer1.0/conv1/"


class BrokenScaleTarget(OrtDynamicInt8Target):
    """Dynamic int8 of Conv/Gemm whose one layer's weight scale is zeroed: that layer outputs only its bias."""

    backend = "broken-scale"

    def __init__(self, layer: str = BROKEN_LAYER) -> None:
        self.layer = layer

    def config(self) -> dict[str, Any]:
        return {**super().config(), "broken_layer": self.layer}

    def apply(self, spec, src: Path, out: Path) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm"])
        model = onnx.load(str(out))
        node = next(n for n in model.graph.node if n.op_type == "ConvInteger" and n.name.startswith(self.layer))
        scale_name = node.input[1].removesuffix("_quantized") + "_scale"
        init = next(t for t in model.graph.initializer if t.name == scale_name)
        init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), scale_name))
        onnx.save(model, str(out))
        return {"broken": scale_name}


@pytest.fixture(scope="module")
def ladeda(harness) -> tuple[Any, Any, Any]:
    from models.training import trained_model

    spec = harness.models.get("tiny_ladeda")
    return spec, trained_model(spec), task_for(spec)


def test_accuracy_gate_fails_and_localises_broken_layer(harness, ladeda) -> None:
    spec, model, task = ladeda
    result = evaluate_accuracy(spec, BrokenScaleTarget(), model, task, cache=harness.cache,
                               targets=harness.targets, budgets=Budgets.load(), identities=harness.identities)
    assert not result.passed
    (auc,) = result.metrics
    assert auc.drop > 20.0 and auc.ci_low > 0.0, auc.line()
    message = result.message()
    assert "exceeds budget" in message and "drop" in message
    first = message.split("first layers below threshold (execution order):")[1].splitlines()[2]
    assert "layer1.0.conv1" in first, message


def test_accuracy_ratchet_fails_within_budget(harness, ladeda) -> None:
    spec, model, task = ladeda
    fp32 = harness.targets.get("onnx:fp32")
    stored = {f"{spec.name}-onnx:fp32": {"metrics": {"auc": {"method": 1.0 + 0.02}}}}
    result = evaluate_accuracy(spec, fp32, model, task, cache=harness.cache, targets=harness.targets,
                               budgets=Budgets.load(), baselines=stored, identities=harness.identities,
                               localise=False)
    (auc,) = result.metrics
    assert auc.drop <= auc.budget.threshold  # within budget ...
    assert any("ratchet" in f for f in auc.failures), result.message()  # ... yet below the stored baseline


def test_accuracy_small_eval_noise_is_not_a_regression() -> None:
    labels = np.arange(40) % 4
    ref = {"y": np.eye(4)[labels]}
    cand = {"y": ref["y"].copy()}
    cand["y"][0] = np.roll(cand["y"][0], 1)  # one of 40 samples flips: a 2.5 pp drop

    metric = Metric("top1", None, 40, 0.25,
                    unit_scores=lambda o: (o["y"].argmax(1) == labels).astype(float))
    drop = drop_function(Budget("x", "abs", 1.0), True)
    low, high = paired_bootstrap(metric, ref, cand, drop, 1000, 0.95)
    assert drop(metric(ref), metric(cand)) == pytest.approx(2.5)
    assert low <= 0.0 < high


def test_accuracy_budget_override_needs_reason() -> None:
    data = {"methods": {"onnx:fp16": {"threshold": 0.1}},
            "models": {"m": {"onnx:fp16": {"threshold": 5.0}}}}
    with pytest.raises(BudgetError, match="reason"):
        Budgets(data)
    data["models"]["m"]["onnx:fp16"]["reason"] = "measured"
    assert Budgets(data).budget("m", "onnx:fp16", "top1").threshold == 5.0
    assert Budgets(data).budget("other", "onnx:fp16", "top1").threshold == 0.1
