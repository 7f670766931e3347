"""Self-tests of the accuracy gates: a deliberately broken quantization (an ONNX and a TFLite one) fails with its
drop and is localised to the broken layer first; the ratchet fails a cell within budget; noise of a small eval set
is not a regression; budget overrides need a reason. The function names contain ``accuracy`` like the accuracy
suite's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export_harness.converters.accuracy.evaluate import accuracy_spec, evaluate_accuracy
from export_harness.converters.checks.accuracy import (
    Budget,
    BudgetError,
    Budgets,
    drop_function,
    paired_bootstrap,
    update_baselines,
)
from export_harness.converters.checks.localize import limits_for, tflite_layer_name
from export_harness.converters.compression.ort_methods import OrtDynamicInt8Target
from export_harness.converters.conformance import CellFailure, export_artifact
from export_harness.converters.tf.tf_litert_torch import LiteRTTorchTFLite
from export_harness.models.proxy_tasks import Metric
from export_harness.plugin.accuracy import RESULTS_KEY, accuracy_gate_of

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


class BrokenScaleTFLite(LiteRTTorchTFLite):
    """litert-torch full-integer int8 whose ``conv_index``-th CONV_2D has its weight scale zeroed in the flatbuffer."""

    def __init__(self, conv_index: int = 2) -> None:
        super().__init__("int8-full")
        self.conv_index = conv_index

    def config(self) -> dict[str, Any]:
        return {**super().config(), "broken_conv": self.conv_index}

    def convert(self, spec, model, workdir: Path, deps) -> dict[str, Any]:
        meta = super().convert(spec, model, workdir, deps)
        meta["broken_tensor"] = zero_weight_scale(workdir / meta["main"], "CONV_2D", self.conv_index)
        return meta


def zero_weight_scale(path: Path, op_type: str, nth: int) -> str:
    """Zero the weight (input 1) scale of the ``nth`` ``op_type`` operator of a .tflite; returns its output's name."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema  # the flatbuffer schema only: no runtime is loaded

    buf = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    graph = model.subgraphs[0]
    wanted = getattr(schema.BuiltinOperator, op_type)
    ops = [op for op in graph.operators if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                                               model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == wanted]
    weight = graph.tensors[ops[nth].inputs[1]]
    weight.quantization.scale = [0.0] * len(weight.quantization.scale)
    builder = flatbuffers.Builder(len(buf))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return graph.tensors[ops[nth].outputs[0]].name.decode()


@pytest.fixture(scope="module")
def ladeda(harness) -> tuple[Any, Any, Any]:
    from export_harness.models.training import task_for, trained_model

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


def test_accuracy_gate_fails_and_localises_broken_tflite_layer(harness) -> None:
    from export_harness.models.training import task_for, trained_model

    target = BrokenScaleTFLite()
    if target.unavailable_reason():
        pytest.skip(target.unavailable_reason())
    spec = harness.models.get("tiny_ladeda_patch")
    model, task = trained_model(spec), task_for(spec)
    result = evaluate_accuracy(spec, target, model, task, cache=harness.cache, targets=harness.targets,
                               budgets=Budgets.load(), identities=harness.identities)
    assert not result.passed
    (auc,) = result.metrics
    assert auc.drop > 20.0 and auc.ci_low > 0.0, auc.line()
    message = result.message()
    assert "localisation vs FP32 TFLite of the same converter" in message, message
    broken = harness.cache.lookup(result.artifact_key, target.name).meta["broken_tensor"]  # named by convert()
    first = message.split("first layers below threshold (execution order):")[1].splitlines()[2]
    assert tflite_layer_name(broken)[:48] in first, message


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
    # the same baseline, recorded with other reference weights (its FP32 metric differs): reported, not compared
    stored[f"{spec.name}-onnx:fp32"]["metrics"]["auc"]["fp32"] = auc.fp32 - 0.005
    other = evaluate_accuracy(spec, fp32, model, task, cache=harness.cache, targets=harness.targets,
                              budgets=Budgets.load(), baselines=stored, identities=harness.identities,
                              localise=False)
    assert not other.metrics[0].failures, other.message()
    assert any("other reference weights" in n for n in other.notes), other.notes


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


def test_accuracy_localisation_names_tflite_layers() -> None:
    scope = "pkg.Net/torch.nn.modules.container.Sequential_layer1/pkg.Block_0/torch.nn.modules.{}"
    ops = ("activation.ReLU_relu", "batchnorm.BatchNorm2d_bn1", "conv.Conv2d_conv1")
    fused = ";;".join(scope.format(op) for op in ops)
    assert tflite_layer_name(fused) == "layer1.0.relu+bn1+conv1"  # litert-torch: PyTorch module paths
    assert tflite_layer_name("pkg.Net/torch.nn.modules.linear.Linear_fc;1") == "fc"
    assert tflite_layer_name("model/tf.nn.relu/Relu;model/tf.math.add/Add") == "tf.nn.relu/Relu"  # onnx2tf
    assert tflite_layer_name("/layer1/layer1.0/conv1/Conv") == "layer1.layer1.0.conv1"  # ONNX scope
    assert limits_for("int8-full") == limits_for("int8-static") == (10.0, 0.95)
    assert limits_for("fp16") == limits_for("int8-dynamic") == (20.0, 0.99)


def test_accuracy_and_latency_share_one_artifact(harness, ladeda) -> None:
    """The latency suite times the reference model's artifact: the same cache key (and so sha256) as the accuracy
    cell's, although the accuracy cell's spec carries the calibration split."""
    spec, _, task = ladeda
    model = harness.reference_model(spec)
    assert harness.reference_model(spec) is model
    assert harness.weights_records[spec.name]["source"] == "trained reference weights"
    fp32 = harness.targets.get("onnx:fp32")
    timed = export_artifact(fp32, spec, model, harness.cache, harness.targets, harness.identities)
    gated = export_artifact(fp32, accuracy_spec(spec, task), model, harness.cache, harness.targets, harness.identities)
    assert timed.key == gated.key


def test_accuracy_gate_of_matches_by_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from export_harness.converters.expectations import Expectation, Expectations

    declared = Expectations([Expectation("m-onnx:int8-dynamic", "measured to fail", suite="accuracy")])
    monkeypatch.setattr("export_harness.plugin.accuracy.get_harness", lambda config: SimpleNamespace(
        expectations=declared))
    baselines, budgets = tmp_path / "accuracy.json", tmp_path / "budgets.toml"
    update_baselines({"m-onnx:fp32": {"artifact_sha256": "aaa", "metrics": {}},
                      "m-onnx:int8-dynamic": {"artifact_sha256": "ddd", "metrics": {}}}, baselines)
    budgets.write_text('[models.m."onnx:int8-dynamic"]\nthreshold = 2.0\nreason = "measured"\n')

    class Config:
        def __init__(self) -> None:
            self.stash = pytest.Stash()
            self.stash[RESULTS_KEY] = {"m-onnx:fp16": ("passed", {"artifact_sha256": "bbb"})}

        def getoption(self, name: str) -> str:
            return str({"--accuracy-baselines": baselines, "--accuracy-budgets": budgets}[name])

    config = Config()
    assert accuracy_gate_of(config, "m-onnx:fp16", "bbb")["verdict"] == "passed"
    assert accuracy_gate_of(config, "m-onnx:fp16", "ccc")["verdict"] == "other artifact"
    assert accuracy_gate_of(config, "m-onnx:fp32", "aaa")["verdict"] == "within stored baseline"
    assert accuracy_gate_of(config, "m-onnx:int8-dynamic", "ddd")["verdict"] == "declared failing (strict xfail)"
    assert accuracy_gate_of(config, "m-torchscript:trace", "aaa") is None


def test_parity_failure_is_localised_too(harness) -> None:
    """The conformance matrix's parity gate carries the same layer table as the accuracy gate."""
    spec = harness.models.get("tiny_ladeda")
    with pytest.raises(CellFailure) as failure:
        harness.run(spec, BrokenScaleTarget())
    result = failure.value.result
    assert result.stage == "parity", result.message
    first = result.message.split("first layers below threshold (execution order):")[1].splitlines()[2]
    assert "layer1.0.conv1" in first, result.message


@pytest.mark.parametrize(("text", "message"), [
    ('{"cells": {"m-onnx:fp16": ', "damaged accuracy baselines, not readable JSON"),
    ("", "damaged accuracy baselines, not readable JSON"),
    ("[]", "damaged accuracy baselines, no 'cells' table in it"),
])
def test_damaged_accuracy_baselines_are_a_named_error(tmp_path: Path, text: str, message: str) -> None:
    from export_harness.converters.checks.accuracy import BudgetError, load_baselines

    path = tmp_path / "accuracy.json"
    path.write_text(text)
    with pytest.raises(BudgetError, match=f"{re.escape(str(path))}: {message}"):
        load_baselines(path)




def test_measurements_are_served_from_the_cache_and_rejudged_afresh(harness, ladeda, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An accuracy cell's outputs over its eval split are cached like an artifact: a re-run makes no runtime call
    and gives the same verdict, a changed budget re-judges the cached outputs, and a changed artifact, eval data or
    runtime version (or --harness-remeasure) measures again."""
    import dataclasses

    from export_harness.converters.accuracy import evaluate
    from export_harness.converters.cache import ArtifactCache

    spec, model, task = ladeda
    target = OrtDynamicInt8Target()
    loads: list[str] = []
    real_load = type(target).load
    monkeypatch.setattr(type(target), "load", lambda self, artifact, s: loads.append(artifact.key)
                        or real_load(self, artifact, s))
    evaluate.forget_reference_outputs(spec.name)
    cache = ArtifactCache(tmp_path / "cache")

    def measure(task_=task, budgets=None, cache_=cache):
        return evaluate_accuracy(spec, target, model, task_, cache=cache_, targets=harness.targets,
                                 budgets=budgets or Budgets.load(), identities=harness.identities, localise=False)

    first = measure()
    assert first.measurements == {"method": "computed"} and len(loads) == 1
    second = measure()
    assert second.measurements == {"method": "served"} and len(loads) == 1  # no runtime call
    assert [(m.method, m.drop, m.passed) for m in second.metrics] == [(m.method, m.drop, m.passed)
                                                                       for m in first.metrics]
    strict = Budgets({"methods": {"*": {"threshold": 0.0, "drop": "abs"}}})
    rejudged = measure(budgets=strict)
    assert rejudged.metrics[0].budget.threshold == 0.0 and len(loads) == 1  # judged afresh, not re-run
    assert "measured" in cache.stats.keys and "measurement-hit" in cache.stats.keys

    monkeypatch.setattr(type(target), "versions", lambda self: {"onnxruntime": "another"})
    assert measure().measurements == {"method": "computed"} and len(loads) == 2  # another runtime version
    other_data = dataclasses.replace(task, data_hash=task.data_hash + "-changed")
    evaluate.forget_reference_outputs(spec.name)
    assert measure(task_=other_data).measurements == {"method": "computed"} and len(loads) == 3
    again = ArtifactCache(tmp_path / "cache", remeasure=True)
    assert measure(cache_=again).measurements == {"method": "computed"} and len(loads) == 4


def test_a_damaged_measurement_is_computed_again_never_served(tmp_path: Path) -> None:
    from export_harness.converters.measurements import MeasurementStore

    store = MeasurementStore(tmp_path)
    calls = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"y": np.arange(4.0)}

    assert not store.get_or_compute("k", compute, {})[1]
    assert store.get_or_compute("k", compute, {})[1] and len(calls) == 1
    data = tmp_path / "measurements" / "k.npz"
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0xFF
    data.write_bytes(bytes(raw))
    arrays, served = store.get_or_compute("k", compute, {})
    assert not served and len(calls) == 2 and np.array_equal(arrays["y"], np.arange(4.0))
