"""One accuracy cell, measured: export the method's artifact through the cache (calibrated on the task's calibration
split), run it over the eval split beside the FP32 PyTorch outputs, judge every metric
(:func:`export_harness.converters.checks.accuracy.judge_metrics`) and localise a failure. No pytest here."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from export_harness.converters.cache import artifact_sha256
from export_harness.converters.checks.accuracy import AccuracyResult, Budgets, judge_metrics
from export_harness.converters.conformance import ModelIdentities, export_artifact, localisation
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


def reference_outputs(spec: ModelSpec, model: nn.Module, task: ProxyTask, identity: str) -> Arrays:
    """FP32 PyTorch outputs on the eval split, computed once per (model, weights) in this process."""
    from export_harness.models.training import predict

    key = (spec.name, identity)
    if key not in _REFERENCE_OUTPUTS:
        _REFERENCE_OUTPUTS[key] = predict(spec, model, task.eval_inputs, batch=EVAL_BATCH)
    return _REFERENCE_OUTPUTS[key]


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
    t0 = time.perf_counter()
    ref = reference_outputs(spec, model, task, identities.of(model))
    result.seconds["fp32_eval"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    runner = target.load(artifact, aspec)
    cand = run_batched(runner, task.eval_inputs, expected=ref)
    result.seconds["method_eval"] = round(time.perf_counter() - t0, 2)
    judge_metrics(result, task, ref, cand, budgets, baselines)
    if not result.passed and (localise(result) if callable(localise) else localise):
        feeds = {i.name: np.ascontiguousarray(task.eval_inputs[i.name][:LOCALISE_SAMPLES], dtype=i.dtype)
                 for i in spec.inputs}
        result.localisation = localisation(aspec, target, model, artifact, feeds, cache=cache, targets=targets,
                                           identities=identities, runner=runner) \
            or "localisation: not available for this target"
    return result
