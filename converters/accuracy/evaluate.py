"""One accuracy cell, measured: export the method's artifact through the cache (calibrated on the task's calibration
split), run it over the eval split beside the FP32 PyTorch outputs, judge every metric
(:func:`export_harness.converters.checks.accuracy.judge_metrics`) and localise a failure. No pytest here."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from export_harness.converters.cache import artifact_sha256
from export_harness.converters.checks.accuracy import AccuracyResult, Budgets, judge_metrics
from export_harness.converters.conformance import ModelIdentities, export_artifact, localisation
from export_harness.converters.measurements import (
    MeasurementStore,
    code_hash,
    measurement_key,
    runtime_identity,
    store_of,
)
from export_harness.converters.registry import TargetRegistry
from export_harness.converters.target import Target
from export_harness.models.proxy_tasks import Arrays, ProxyTask
from export_harness.models.spec import ModelSpec

EVAL_BATCH = 16
LOCALISE_SAMPLES = 4


def run_batched(fn: Any, inputs: Arrays, batch: int = EVAL_BATCH, expected: Arrays | None = None) -> Arrays:
    """``fn`` over ``inputs`` in batches, outputs concatenated. With ``expected`` (PyTorch's outputs on the same
    inputs), a runner that cross-checks its delegate (``run_judged``) blames the one farther from PyTorch."""
    judged = getattr(fn, "run_judged", None) if expected is not None else None
    n = len(next(iter(inputs.values())))

    def call(i: int) -> Arrays:
        feeds = {k: v[i:i + batch] for k, v in inputs.items()}
        if judged is None:
            return fn(feeds)
        return judged(feeds, {k: v[i:i + batch] for k, v in (expected or {}).items()})

    parts = [call(i) for i in range(0, n, batch)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def accuracy_spec(spec: ModelSpec, task: ProxyTask) -> ModelSpec:
    """The spec with the task's calibration split attached (static quantizers read ``extra['calibration']``)."""
    return replace(spec, extra={**spec.extra, "calibration": task.calibration, "calibration_id": task.data_hash})


_REFERENCE_OUTPUTS: dict[tuple[str, str], Arrays] = {}


def forget_reference_outputs(model_name: str) -> None:
    """Drop the cached FP32 eval outputs of one model (its cells are done in this process)."""
    for key in [k for k in _REFERENCE_OUTPUTS if k[0] == model_name]:
        del _REFERENCE_OUTPUTS[key]


def reference_outputs(spec: ModelSpec, model: nn.Module, task: ProxyTask, identity: str,
                      store: MeasurementStore | None = None) -> Arrays:
    """FP32 PyTorch outputs on the eval split, computed once per (model, weights) in this process, and once per
    (weights, model code, eval data, torch) with a measurement ``store``."""
    from export_harness.models.training import predict

    key = (spec.name, identity)
    if key not in _REFERENCE_OUTPUTS:
        compute = lambda: predict(spec, model, task.eval_inputs, batch=EVAL_BATCH)  # noqa: E731
        if store is None:
            _REFERENCE_OUTPUTS[key] = compute()
        else:
            address = measurement_key(kind="fp32-outputs", model=spec.name, identity=identity, task=task.data_hash,
                                      torch=torch.__version__, batch=EVAL_BATCH, code=code_hash(predict))
            _REFERENCE_OUTPUTS[key] = store.get_or_compute(address, compute, {"fp32": spec.name, "task": task.name})[0]
    return _REFERENCE_OUTPUTS[key]


def method_key(target: Target, artifact_sha: str, task: ProxyTask) -> str:
    """What determines a method's outputs over the eval split: the artifact's bytes, the target and its runtime
    (:func:`runtime_identity`), the eval data and the batching."""
    return measurement_key(kind="method-outputs", artifact=artifact_sha, runtime=runtime_identity(target),
                           task=task.data_hash, batch=EVAL_BATCH, code=code_hash(run_batched))


def evaluate_accuracy(spec: ModelSpec, target: Target, model: nn.Module, task: ProxyTask, *, cache: Any,
                      targets: TargetRegistry, budgets: Budgets, baselines: dict[str, Any] | None = None,
                      identities: ModelIdentities | None = None,
                      localise: bool | Callable[[AccuracyResult], bool] = True) -> AccuracyResult:
    """Measure one accuracy cell; the result says pass/fail per metric (it does not raise on a failed gate).
    ``localise``: whether a failing cell gets its layer table, or a predicate on the failed result (the suite skips
    the table for a failure its declaration explains: a strict xfail shows no message, and the table costs a pass of
    every layer)."""
    identities = identities or ModelIdentities()
    result = AccuracyResult(model=spec.name, target=target.name, task=task.name)
    aspec = accuracy_spec(spec, task)
    t0 = time.perf_counter()
    artifact = export_artifact(target, aspec, model, cache, targets, identities)
    result.seconds["export"] = round(time.perf_counter() - t0, 2)
    result.artifact_key = artifact.key
    result.artifact_sha256 = artifact_sha256(artifact.path)
    store = store_of(cache)
    t0 = time.perf_counter()
    ref = reference_outputs(spec, model, task, identities.of(model), store)
    result.seconds["fp32_eval"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    runner = None

    def method_outputs() -> Arrays:
        nonlocal runner
        runner = target.load(artifact, aspec)
        return run_batched(runner, task.eval_inputs, expected=ref)

    if store is None:
        cand, served = method_outputs(), False
    else:
        cand, served = store.get_or_compute(method_key(target, result.artifact_sha256, task), method_outputs,
                                            {"cell": result.cell_id, "task": task.name})
    result.measurements["method"] = "served" if served else "computed"
    result.seconds["method_eval"] = round(time.perf_counter() - t0, 2)
    judge_metrics(result, task, ref, cand, budgets, baselines)
    if not result.passed and (localise(result) if callable(localise) else localise):
        feeds = {i.name: np.ascontiguousarray(task.eval_inputs[i.name][:LOCALISE_SAMPLES], dtype=i.dtype)
                 for i in spec.inputs}
        result.localisation = localisation(aspec, target, model, artifact, feeds, cache=cache, targets=targets,
                                           identities=identities, runner=runner) \
            or "localisation: not available for this target"
    return result
