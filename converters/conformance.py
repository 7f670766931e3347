"""Run one conformance cell (ModelSpec x Target): export, structure, load, run, parity.

No pytest here: a script can call ``run_cell`` directly. Failures raise ``CellFailure`` carrying the stage,
a message with the metrics and thresholds, and the partial ``CellResult``.
"""

from __future__ import annotations

import json
import math
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export_harness.converters.cache import CONTENT, Artifact, ArtifactCache, CachedFailure
from export_harness.converters.checks.compare import ParityResult, compare
from export_harness.converters.checks.localize import (
    LayerReport,
    limits_for,
    onnx_layer_report,
    tflite_layer_report,
    torch_layer_report,
)
from export_harness.converters.checks.onnx_structure import check_onnx_structure, frozen_axes
from export_harness.converters.checks.tflite_structure import check_tflite_structure
from export_harness.converters.checks.thresholds import Thresholds, Tolerance
from export_harness.converters.measurements import (
    MeasurementStore,
    arrays_digest,
    code_hash,
    measurement_key,
    runtime_identity,
    store_of,
)
from export_harness.converters.registry import TargetRegistry
from export_harness.converters.sidecar import ensure_entry_sidecar
from export_harness.converters.target import Runner, StageError, StructureError, Target
from export_harness.converters.torch_dispatch import clear_dispatch_caches
from export_harness.converters.util.errors import error_head
from export_harness.converters.util.files import atomic_path
from export_harness.converters.util.recent import Recent
from export_harness.models.spec import ModelSpec, model_code_hash, run_torch, to_torch
from export_harness.models.weights import state_dict_hash

PARITY_BATCHES = (1, 3)
"""Batch sizes run for a dynamic-batch model; neither equals the export batch (2)."""


def nan_aware(pick: Callable[[list[float]], float], values: Iterable[float]) -> float:
    """``pick`` (min or max) of ``values``, NaN if any is NaN: ``min([1.0, nan])`` is 1.0, which read an all-NaN output
    as agreement."""
    values = list(values)
    return float("nan") if any(math.isnan(v) for v in values) else pick(values)


@dataclass
class CellResult:
    """Everything measured for one cell, whether it passed or not."""

    model: str
    target: str
    status: str = "pending"
    stage: str | None = None
    message: str = ""
    cache: str = "none"
    """How the artifact was obtained: converted | hit | conversion-failed | failure-replayed | none."""
    artifact: dict[str, Any] = field(default_factory=dict)
    structure: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    parity: list[ParityResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    measured: str = ""
    """The artifact's outputs on the parity inputs: ``computed`` now or ``served`` by the measurement cache."""

    @property
    def cell_id(self) -> str:
        return f"{self.model}-{self.target}"

    def worst(self) -> dict[str, float | None]:
        """Worst cosine / max abs / top-1 over all outputs and batch sizes (for the summary table)."""
        outs = [o for p in self.parity for o in p.outputs]
        if not outs:
            return {"cosine": None, "max_abs": None, "top1": None}
        top1 = [o.top1_agreement for o in outs if o.top1_agreement is not None]
        return {"cosine": nan_aware(min, (o.cosine for o in outs)),
                "max_abs": nan_aware(max, (o.max_abs for o in outs)), "top1": nan_aware(min, top1) if top1 else None}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (the dict crosses process boundaries under pytest-xdist)."""
        return json.loads(json.dumps(self._raw_dict(), default=str))

    def _raw_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell_id, "model": self.model, "target": self.target, "status": self.status,
            "stage": self.stage, "message": self.message, "cache": self.cache,
            "artifact": {k: self.artifact.get(k) for k in ("key", "size_bytes", "convert_seconds", "exporter",
                                                           "opset_requested", "opset_produced", "main",
                                                           "report", "quant_layers", "content_sha256",
                                                           "versions")},
            "runtime": self.runtime, "seconds": self.seconds, "measured": self.measured, "worst": self.worst(),
            "parity": [p.to_dict() for p in self.parity],
        }


class CellFailure(AssertionError):
    """A cell failed; ``stage`` says where, ``result`` holds what was measured up to then."""

    def __init__(self, result: CellResult) -> None:
        super().__init__(f"[{result.stage}] {result.cell_id}: {result.message}")
        self.result = result


class ModelIdentities:
    """Identity of each built model: its weights hash plus its code hash, computed once per model object (held
    weakly: a model the harness released is freed)."""

    def __init__(self) -> None:
        self._known: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()

    def of(self, model: nn.Module) -> str:
        identity = self._known.get(model)
        if identity is None:
            identity = f"weights:{state_dict_hash(model)}|code:{model_code_hash(model)}"
            self._known[model] = identity
        return identity


def conversion_reserve(model: nn.Module) -> int:
    """Free disk space a conversion of ``model`` needs: its weights three times over (the artifact, an exporter's
    intermediate copy, a converter's temporary one) plus 64 MiB. Checked before converting, because an in-process
    exporter that meets a full disk can abort the whole interpreter (``torch.jit.save``: Fatal Python error)."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return 3 * weights + (64 << 20)


def export_artifact(target: Target, spec: ModelSpec, model: nn.Module, cache: ArtifactCache,
                    targets: TargetRegistry, identities: ModelIdentities) -> Artifact:
    """Export through the cache, exporting the target's dependencies first. A derived artifact is valid only for
    the content of the dependencies it was built from (``sources``): a rebuilt source rebuilds it."""
    deps = {name: export_artifact(targets.get(target.dependency(name)), spec, model, cache, targets, identities)
            for name in target.depends_on}
    key = target.cache_key(spec, identities.of(model), deps)
    sources = {name: art.meta[CONTENT] for name, art in deps.items()} if deps else None
    def produce(workdir: Path) -> dict[str, Any]:
        clear_dispatch_caches()  # an earlier conversion in this process must not decide this one's graph
        return target.convert(spec, model, workdir, deps)

    artifact = cache.get_or_create(key, target.name, produce, cacheable_error=target.is_deterministic_failure,
                                   sources=sources, reserve_bytes=lambda: conversion_reserve(model))
    ensure_entry_sidecar(spec, target, artifact)
    return artifact


def layer_report(spec: ModelSpec, target: Target, model: nn.Module, artifact: Artifact,
                 feeds: Mapping[str, np.ndarray], *, cache: ArtifactCache, targets: TargetRegistry,
                 identities: ModelIdentities, runner: Runner | None = None) -> LayerReport | None:
    """The artifact's layers against its FP32 reference: the FP32 ONNX graph (ONNX methods), the same converter's
    FP32 .tflite (TFLite precisions), or the eager model (TorchScript transforms); None for an FP32 reference.
    ``runner``: the artifact already loaded by the caller (else it is loaded here)."""
    onnx_fp32 = target.dependency("onnx:fp32")
    if target.format == "onnx" and target.name != onnx_fp32:
        ref = export_artifact(targets.get(onnx_fp32), spec, model, cache, targets, identities)
        return onnx_layer_report(ref.path, artifact.path, feeds)
    fp32_sibling = target.dependency(f"tflite:fp32[{target.backend}]")
    if target.format == "tflite" and target.name != fp32_sibling and fp32_sibling in targets.names():
        sibling = targets.get(fp32_sibling)
        ref = export_artifact(sibling, spec, model, cache, targets, identities)
        candidate = runner if runner is not None else target.load(artifact, spec)
        return tflite_layer_report(sibling.load(ref, spec), candidate, feeds)
    transform = getattr(target, "transform", None)
    if transform is not None:
        candidate, _ = transform(model)
        return torch_layer_report(model, candidate, to_torch(feeds, spec.input_names))
    return None


def localisation(spec: ModelSpec, target: Target, model: nn.Module, artifact: Artifact,
                 feeds: Mapping[str, np.ndarray], *, cache: ArtifactCache, targets: TargetRegistry,
                 identities: ModelIdentities, runner: Runner | None = None) -> str:
    """The layer table of a failing cell, "" when the target has no FP32 reference to compare with. Never raises:
    a localisation error is reported as text (diagnostics must not mask the verdict)."""
    try:
        report = layer_report(spec, target, model, artifact, feeds, cache=cache, targets=targets,
                              identities=identities, runner=runner)
        if report is None:
            return ""
        report.sqnr_min_db, report.cosine_min = limits_for(target.tier)
        return report.table()
    except Exception as exc:
        return f"localisation failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def run_cell(spec: ModelSpec, target: Target, model: nn.Module, *, cache: ArtifactCache, thresholds: Thresholds,
             targets: TargetRegistry, identities: ModelIdentities | None = None, seed: int = 0,
             batches: Sequence[int] = PARITY_BATCHES, localise: Callable[[str], bool] | bool = True,
             lengths: bool = False) -> CellResult:
    """Run every stage of one cell; returns the result or raises CellFailure at the first failing stage.
    ``localise``: whether a parity failure gets its layer table, or a predicate on the failure message (the matrix
    skips it for a failure its declared limitation explains). ``lengths``: instead of the default lengths, the
    model's other lengths of its dynamic non-batch axes (:func:`parity_probes`), after checking that an ONNX
    artifact keeps those axes symbolic."""
    result = CellResult(model=spec.name, target=target.name)
    identities = identities or ModelIdentities()
    stage = "export"
    store: MeasurementStore | None = None
    served: dict[str, np.ndarray] | None = None
    key = ""
    try:
        t0 = time.perf_counter()
        artifact = export_artifact(target, spec, model, cache, targets, identities)
        result.cache, result.artifact = ("converted" if artifact.converted_now else "hit"), artifact.meta
        if artifact.healed:
            result.cache = f"rebuilt (the cached entry was evicted: {artifact.healed})"
        result.seconds["export"] = round(time.perf_counter() - t0, 3)

        stage = "structure"
        measurements = store_of(cache)
        result.structure = checked_structure(target, artifact, spec, measurements)
        if lengths and artifact.path.suffix == ".onnx":
            frozen = frozen_axes(onnx.load(str(artifact.path), load_external_data=False), spec, lengths=True)
            if frozen:
                raise StructureError("declared-dynamic length axis frozen in the graph: " + ", ".join(frozen))

        probes = [(batch, probe, spec.example_inputs(batch, seed=seed, lengths=probe))
                  for batch, probe in parity_probes(spec, batches, lengths=lengths)]
        content = artifact.meta.get(CONTENT)
        store = measurements if content else None  # outputs are cached only for bytes of a known digest
        key = measurement_key(kind="parity-outputs", artifact=content, runtime=runtime_identity(target),
                              inputs=arrays_digest([a for _, _, inputs in probes for a in inputs.values()]))
        served = store.get(key) if store is not None else None
        if served is not None and RUN_FAILURE in served:  # these bytes failed on this runtime before: replayed
            failure = json.loads(str(served[RUN_FAILURE]))
            result.runtime, result.measured = failure["runtime"], "served"
            raise ReplayedRunFailure(failure["stage"], failure["message"])
        runner: Runner | None = None
        if served is None:
            stage = "load"
            t0 = time.perf_counter()
            runner = target.load(artifact, spec)
            result.runtime = dict(runner.info)
            result.seconds["load"] = round(time.perf_counter() - t0, 3)
        else:  # the same bytes on the same runtime with the same inputs: what they computed is judged afresh below
            result.runtime = json.loads(str(served.pop(RUNTIME_INFO)))
        result.measured = "computed" if served is None else "served"

        tol = thresholds.resolve(spec.name, target.name, target.tier, spec.tolerances)
        classifier = [o.name for o in spec.outputs if o.is_classifier]
        failed: list[str] = []
        first_failing: Mapping[str, np.ndarray] | None = None
        outputs: dict[str, np.ndarray] = {}
        for batch, probe, inputs in probes:
            expected = torch_reference(spec, model, inputs, identities.of(model), measurements)
            tag = f"{batch}" + "".join(f"_{s}{n}" for s, n in sorted(probe.items()))
            stage = "run"
            if served is not None:
                actual = {name: served[f"{tag}/{name}"] for name in spec.output_names if f"{tag}/{name}" in served}
            else:
                t0 = time.perf_counter()
                judged = getattr(runner, "run_judged", None)  # runtimes that blame by distance to PyTorch
                actual = judged(inputs, expected) if judged else runner(inputs)
                result.seconds[f"run_b{tag}"] = round(time.perf_counter() - t0, 4)
                outputs |= {f"{tag}/{name}": np.asarray(value) for name, value in actual.items()}
            stage = "parity"
            parity = compare(expected, {k: np.asarray(v) for k, v in actual.items()}, tol, batch, classifier)
            parity.lengths = dict(probe)
            result.parity.append(parity)
            if not parity.passed:  # every batch is still compared: the verdict and the hint cover them all
                lines = parity.failure_lines() + [o.describe() for o in parity.outputs]
                saved = save_failure_io(cache.root / "failures" / result.cell_id, tag, inputs, expected, actual)
                lines.append(f"inputs and outputs saved to {saved}")
                failed.append(f"{parity.label}, tier {target.tier}: " + "; ".join(lines))
                first_failing = first_failing if first_failing is not None else inputs
        if served is None and store is not None:
            store.put(key, {**outputs, RUNTIME_INFO: np.array(json.dumps(result.runtime, default=str))},
                      {"cell": result.cell_id, "kind": "parity outputs"})
        if failed:
            stage = "parity"
            message = "\n".join(failed) + would_pass(result.parity, tol)
            message += f"\n{artifact.meta['report']}" if artifact.meta.get("report") else ""
            if localise(message) if callable(localise) else localise:
                table = localisation(spec, target, model, artifact, first_failing or {}, cache=cache,
                                     targets=targets, identities=identities, runner=runner)
                message += f"\n{table}" if table else ""
            raise _Fail(message)
    except _Fail as exc:
        raise _failure(result, stage, str(exc)) from None
    except CachedFailure as exc:
        result.cache = "failure-replayed"
        raise _failure(result, stage, f"{exc} (cached failure; --harness-retry-failed re-converts)") from None
    except StageError as exc:
        if stage == "export":
            result.cache = "conversion-failed"
        if (stage in ("load", "run") and store is not None and served is None and target.is_deterministic_failure(exc)
                and not getattr(exc, "transient", False)):  # a timeout or a kill from outside is measured again
            store.put(key, {RUN_FAILURE: np.array(json.dumps({"stage": exc.stage, "message": str(exc),
                                                              "runtime": result.runtime}, default=str))},
                      {"cell": result.cell_id, "kind": "run failure"})
        raise _failure(result, exc.stage, str(exc) + exporter_hint(str(exc))) from exc
    except Exception as exc:
        if stage == "export":
            result.cache = "conversion-failed"
        raise _failure(result, stage, error_head(exc, lines=6) + exporter_hint(str(exc))) from exc
    result.status = "passed"
    return result


def checked_structure(target: Target, artifact: Artifact, spec: ModelSpec,
                      measurements: MeasurementStore | None) -> dict[str, Any]:
    """The target's structure checks on the artifact (raise StructureError), served from the measurement store when
    the same bytes passed the same checks before: a TFLite file's facts are read in a TensorFlow worker, whose start
    (about 5 s) a warm run otherwise paid for this alone. A failing check is never stored."""
    content = artifact.meta.get(CONTENT)
    store = measurements if content else None
    if store is None:
        return target.check_structure(artifact, spec)
    key = measurement_key(kind="structure", artifact=content, runtime=runtime_identity(target),
                          checks=code_hash(check_onnx_structure, check_tflite_structure),
                          contract=[[(i.name, i.shape, i.dtype) for i in spec.inputs], spec.output_names])
    found = store.get(key)
    if found is not None:
        facts = json.loads(str(found["facts"]))
        held = getattr(target, "_facts", None)  # what a TFLite runner reports as its structure when loaded
        if isinstance(held, dict):
            held[artifact.key] = facts
        return facts
    facts = target.check_structure(artifact, spec)
    store.put(key, {"facts": np.array(json.dumps(facts, default=str))}, {"cell": f"{spec.name}-{target.name}",
                                                                         "kind": "structure facts"})
    return facts


_TORCH_REFERENCES: Recent[dict[str, np.ndarray]] = Recent(8)
"""The last few PyTorch reference outputs of this process, by measurement key: a model's cells run one after another
(one xdist group per model) on the same probes."""


def torch_reference(spec: ModelSpec, model: nn.Module, inputs: Mapping[str, np.ndarray], identity: str,
                    store: MeasurementStore | None) -> dict[str, np.ndarray]:
    """PyTorch's outputs on one parity probe: computed once per (weights, model code, I/O contract, inputs, torch)
    in this process and, with a measurement ``store``, once across runs (every target of a model compares with the
    same reference; on a warm run computing it was most of a cell's time)."""
    key = measurement_key(kind="torch-reference", model=spec.name, identity=identity,
                          inputs=arrays_digest([inputs[n] for n in spec.input_names]), names=spec.input_names,
                          outputs=spec.output_names, torch=torch.__version__,
                          code=code_hash(ModelSpec))  # models/spec.py, where run_torch lives
    def compute() -> dict[str, np.ndarray]:
        return run_torch(spec, model, dict(inputs))

    return _TORCH_REFERENCES.get(key, compute if store is None else
                                 lambda: store.get_or_compute(key, compute, {"torch reference": spec.name})[0])


def would_pass(parity: Sequence[ParityResult], tol: Tolerance) -> str:
    """What would have passed every batch: the elementwise atol and the cosine floor over all of them ("" when the
    failures are of another kind)."""
    outputs = [o for p in parity for o in p.outputs if math.isfinite(o.cosine)]
    hints = []
    atol = max((o.min_passing_atol for o in outputs), default=0.0)
    if atol > tol.atol:
        hints.append(f"atol {atol:.3g}")
    cosine = min((o.cosine for o in outputs), default=1.0)
    if cosine < tol.cosine_min:
        hints.append(f"cosine_min {cosine:.9f}")
    return f"\nover all {len(parity)} batches: {' and '.join(hints)} would pass" if hints else ""


def parity_probes(spec: ModelSpec, batches: Sequence[int] = PARITY_BATCHES,
                  lengths: bool = False) -> list[tuple[int, dict[str, int]]]:
    """(batch, lengths) of each parity run: every batch at the default lengths (batch 1 only for a model without a
    dynamic batch); with ``lengths``, instead the largest of those batches at each other length of each dynamic
    non-batch axis (the other axes at their defaults)."""
    probes: list[tuple[int, dict[str, int]]] = [(b, {}) for b in (batches if spec.dynamic_batch else (1,))]
    if not lengths:
        return probes
    last = probes[-1][0]
    return [(last, {symbol: n}) for symbol, values in spec.axis_lengths.items() for n in values[1:]]


def save_failure_io(directory: Path, tag: str | int, inputs: Mapping[str, np.ndarray],
                    expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> Path:
    """Write a failing run's inputs, PyTorch outputs and artifact outputs to one .npz (atomically): ``batchTAG.npz``,
    ``tag`` being the batch and any non-default length (``3``, ``3_frames500``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"batch{tag}.npz"
    arrays = {f"input.{k}": v for k, v in inputs.items()}
    arrays |= {f"expected.{k}": v for k, v in expected.items()}
    arrays |= {f"actual.{k}": np.asarray(v) for k, v in actual.items()}
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


class _Fail(Exception):
    pass


RUN_FAILURE = "__run_failure__"
"""Stored instead of outputs when the artifact failed to load or run on its runtime with a deterministic error."""


class ReplayedRunFailure(StageError):
    """A load / run failure of the same bytes on the same runtime, served by the measurement store."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


RUNTIME_INFO = "__runtime__"
"""The runner's description, stored with a cell's cached parity outputs (the runner is not loaded on a hit)."""


OUTPUT_NAME_COLLISION = re.compile(r"'([^']+)' has been used as output names? multiple times")


def exporter_hint(message: str) -> str:
    """A hint for exporter errors whose cause is in the user's spec, not the model ("" when none applies)."""
    found = OUTPUT_NAME_COLLISION.search(message)
    if found:
        return (f"\nhint: the output name {found.group(1)!r} collides with an internal value of the exported graph "
                f"(the dynamo exporter names values after submodules, e.g. self.{found.group(1)}): rename that "
                f"OutputSpec, e.g. to '{found.group(1)}_out'")
    return ""


def _failure(result: CellResult, stage: str, message: str) -> CellFailure:
    result.status, result.stage, result.message = "failed", stage, message
    return CellFailure(result)
