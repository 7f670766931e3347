"""``export-harness quantize``: a model's compression methods as matrix cells, and what each one costs.

Guide 004's method names map to the harness's targets (listed under ``--method``; target names and patterns work
too). Each method runs as its conformance cell (the quantized artifact against the FP32 PyTorch model, judged with the
method's threshold tier) and a passing artifact is written to ``--output-dir`` as ``export`` writes it. Static int8
calibrates on the model's proxy-task calibration split (as the matrix and the accuracy gates), or on the arrays of
``--calibration-data FILE.npz`` (one array per model input, batch first), attached as the spec's calibration data:
the static quantizers (``onnx:int8-static[*]``) and TFLite full-integer int8 read it; the other methods ignore it.

``--compare`` writes ``quantization_results.json`` (guide 004's name): per method its size and batch-1 median
latency (paired, interleaved rounds against the FP32 artifact, as the latency suite times a cell against eager),
each with its ratio to the FP32 artifact of the same chain (``onnx:fp32`` for ORT methods, the same
converter's ``tflite:fp32`` for TFLite, ``torchscript:trace`` for TorchScript), and, for a model with a labelled
task, the task-metric drop with its 95% paired-bootstrap CI
(``export_harness.converters.accuracy.evaluate.evaluate_accuracy``, as
the accuracy gates measure it on the same artifact).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export_harness.converters.accuracy.evaluate import evaluate_accuracy
from export_harness.converters.checks.accuracy import BudgetError, Budgets
from export_harness.converters.cli import EXIT_FAILED, EXIT_OK, UsageError
from export_harness.converters.cli.benchmark import count_int, load_for_timing, positive_int
from export_harness.converters.cli.cells import (
    cached_artifact,
    check_opset,
    run_matrix_cell,
    select_targets,
    unexpected,
)
from export_harness.converters.cli.export import print_table, run_cells
from export_harness.converters.cli.files import output_dir, publish
from export_harness.converters.cli.progress import Progress
from export_harness.converters.cli.session import first_line, load_calibration, load_model, open_session, weights_label
from export_harness.converters.latency import timing
from export_harness.converters.latency.process_control import pinned_allocator, runtime_pid, torch_threads
from export_harness.converters.latency.stats import LatencyStats
from export_harness.converters.registry import TargetRegistry
from export_harness.converters.report.matrix_report import fmt_optional
from export_harness.converters.session import Session
from export_harness.converters.target import Target
from export_harness.converters.util.files import write_json_atomic
from export_harness.models.spec import ModelSpec

RESULTS = "quantization_results.json"
PROJECT_BUDGETS = Path("baselines") / "accuracy_budgets.toml"
METHODS: dict[str, str] = {
    "fp16": "onnx:fp16",
    "int8": "onnx:int8-dynamic",
    "int8-dynamic": "onnx:int8-dynamic",
    "int8-static": "onnx:int8-static[minmax]",
    "int8-static-minmax": "onnx:int8-static[minmax]",
    "int8-static-entropy": "onnx:int8-static[entropy]",
    "int8-static-percentile": "onnx:int8-static[percentile]",
    "int8-static-per-tensor": "onnx:int8-static[minmax-per-tensor]",
    "torch-int8": "torchscript:int8-dynamic",
    "pruned": "torchscript:pruned-l1-20",
    "guide-int8": "onnx:fp32[guide-quantizer-int8]",
    "tflite-fp16": "tflite:fp16[onnx2tf]",
    "tflite-int8-dynamic": "tflite:int8-dynamic[onnx2tf]",
    "tflite-int8": "tflite:int8-full[onnx2tf]",
}
"""Guide method names -> targets (guide 004: fp16, int8 = ORT dynamic int8, int8-static = ORT static QDQ MinMax)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(f"{k} ({v})" for k, v in METHODS.items())
    parser.add_argument("--method", "--methods", dest="methods", nargs="+", action="extend", required=True,
                        metavar="METHOD", help=f"repeatable: {names}; or a target name / pattern (onnx:int8-static[*])")
    parser.add_argument("--opset", type=int, metavar="N", default=None,
                        help="the ONNX chain at this opset (11, 12, 13; 17 is the default chain), as in export")
    parser.add_argument("--calibration-data", metavar="FILE.npz", default=None,
                        help="calibration inputs for static int8: one array per model input, named as the input, "
                             "batch first (default: the model's proxy-task calibration split, else seeded inputs)")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="where the passing quantized artifacts, their sidecars and quantization_results.json go")
    parser.add_argument("--compare", action="store_true",
                        help=f"measure size, batch-1 latency and accuracy drop per method; write {RESULTS}")
    parser.add_argument("--runs", type=positive_int, default=30, metavar="N",
                        help="timed calls per latency (default 30)")
    parser.add_argument("--warmup", type=count_int, default=5, metavar="N", help="untimed calls first (default 5)")


def resolve_methods(values: Sequence[str], targets: TargetRegistry,
                    opset: int | None = None) -> list[tuple[str, Target]]:
    """(method label, target) per distinct target, in the order given; with ``opset``, each method's copy in the
    ONNX chain at that opset where one exists."""
    out: dict[str, tuple[str, Target]] = {}
    for value in values:
        if value in METHODS:
            found = select_targets(targets, [METHODS[value]], opset)
        else:
            try:
                found = select_targets(targets, [value], opset, option="--method")
            except UsageError:
                raise UsageError(f"--method {value}: unknown method; methods: {', '.join(METHODS)}; or a target "
                                 "name or pattern (export-harness export --help)") from None
        for target in found:
            out.setdefault(target.name, (value if value in METHODS else target.name, target))
    return list(out.values())


def reference_of(target: Target, targets: TargetRegistry) -> Target:
    """The FP32 artifact of the same chain a method is compared with (its size and latency ratios)."""
    if target.format == "onnx":
        name = target.dependency("onnx:fp32")
    elif target.format == "tflite":
        name = target.dependency(f"tflite:fp32[{target.backend}]")
    elif target.format == "torchscript":
        name = "torchscript:trace"
    else:
        name = target.name
    return targets.get(name) if name in targets.names() else target


def load_budgets() -> Budgets:
    try:
        return Budgets.load(PROJECT_BUDGETS if PROJECT_BUDGETS.is_file() else None)
    except BudgetError as exc:
        raise UsageError(str(exc)) from None


def accuracy_of(session: Session, spec: ModelSpec, target: Target, budgets: Budgets) -> tuple[dict | None, str]:
    """(the metric drops with their CIs, "") or (None, why not measured)."""
    from export_harness.models.training import has_task, task_for

    if not has_task(spec):
        return None, f"model {spec.name} has no labelled task (ModelSpec.task): no accuracy to compare"
    skip = session.expectations.for_cell(f"{spec.name}-{target.name}", "accuracy")
    if skip is not None and skip.kind == "skip":
        return None, skip.reason
    if not budgets.covers(target.name):
        return None, f"no accuracy budget covers {target.name} (accuracy_budgets.toml [methods])"
    task = task_for(spec)
    if spec.name in session.calibration:  # measure the artifact calibrated on the user's data
        data, identity = session.calibration[spec.name]
        task = dataclasses.replace(task, calibration=dict(data), data_hash=identity)
    try:
        result = evaluate_accuracy(spec, target, session.model(spec), task, cache=session.cache,
                                   targets=session.targets, budgets=budgets, identities=session.identities,
                                   localise=False)
    except Exception as exc:
        return None, f"accuracy evaluation failed: {first_line(exc)[:300]}"
    metrics = [{"metric": m.metric, "fp32": m.fp32, "method": m.method, "drop": round(m.drop, 4),
                "unit": "pp" if m.budget.drop == "abs" else "% rel", "ci95": [round(m.ci_low, 4), round(m.ci_high, 4)],
                "n": m.n_units, "budget": m.budget.threshold, "within_budget": m.passed}
               for m in result.metrics]
    return {"task": result.task, "confidence": budgets.confidence, "metrics": metrics}, ""


def _ratio(value: float | None, ref: float | None, digits: int = 3) -> float | None:
    return round(value / ref, digits) if value is not None and ref else None


def compare(session: Session, spec: ModelSpec, methods: Sequence[tuple[str, Target]],
            records: Sequence[dict[str, Any]], runs: int, warmup: int, quiet: bool) -> dict[str, Any]:
    """Size, latency and accuracy per method, each against its chain's FP32 artifact."""
    budgets = load_budgets()
    refs: dict[str, dict[str, Any]] = {}
    progress = Progress(len(methods), enabled=not quiet)
    out: dict[str, Any] = {}
    for (label, target), record in zip(methods, records, strict=True):
        with progress.step(f"compare {label} ({target.name})") as step:
            entry: dict[str, Any] = {"target": target.name, "outcome": record["outcome"], "stage": record["stage"],
                                     "cosine": record["worst"]["cosine"], "file": (record.get("written") or {}).get(
                                         "file"), "note": record.get("note")}
            ref = reference_of(target, session.targets)
            entry["reference"] = ref.name
            if record["status"] == "skipped" or record["stage"] in ("export", "weights"):
                why = record.get("message", "").strip().splitlines()
                entry.update(size=None, latency=None, accuracy=None,
                             reason=f"no artifact ({record['outcome']}, stage {record['stage']}): "
                                    f"{why[0][:200] if why else ''}")
                out[label] = entry
                step.status = "no artifact"
                continue
            if ref.name not in refs:
                refs[ref.name] = _reference_numbers(session, spec, ref, runs, warmup)
            base = refs[ref.name]
            size = cached_artifact(session, spec, target).meta.get("size_bytes")
            entry["size"] = {"bytes": size, "fp32_bytes": base.get("bytes"), "ratio": _ratio(size, base.get("bytes"))}
            try:
                entry["latency"] = paired_latency(session, spec, target, ref, runs, warmup) if base.get(
                    "bytes") else None
            except Exception as exc:
                entry["latency"] = None
                entry["latency_reason"] = f"run failed: {first_line(exc)[:200]}"
            entry["accuracy"], reason = accuracy_of(session, spec, target, budgets)
            if reason:
                entry["accuracy_reason"] = reason
            out[label] = entry
            step.status = record["outcome"]
    return {"references": refs, "methods": out}


def _reference_numbers(session: Session, spec: ModelSpec, ref: Target, runs: int, warmup: int) -> dict[str, Any]:
    record, _ = run_matrix_cell(session, spec, ref, localise=False)
    if record["status"] == "skipped" or record["stage"] in ("export", "weights"):
        return {"target": ref.name, "outcome": record["outcome"], "bytes": None}
    return {"target": ref.name, "outcome": record["outcome"], "bytes": cached_artifact(session, spec, ref).meta.get(
        "size_bytes")}


def paired_latency(session: Session, spec: ModelSpec, target: Target, ref: Target, runs: int,
                   warmup: int) -> dict[str, Any]:
    """Batch-1 latency of ``target`` against its FP32 artifact ``ref``, timed as the latency suite times a cell
    against eager: both loaded with one intra-op thread, ``runs`` rounds of interleaved calls (method, FP32, ...)
    so both see the same machine, on the thread-CPU clock when all the work of both runs on the calling thread
    (else the wall clock); the ratio is the median of the per-round ratios."""
    inputs = spec.example_inputs(1, seed=0)
    with torch_threads(1), pinned_allocator():
        runner, _, _ = load_for_timing(session, spec, target, inputs, 1)
        base, _, _ = load_for_timing(session, spec, ref, inputs, 1)
        calls = [lambda: runner(inputs), lambda: base(inputs)]
        for _ in range(warmup):
            for call in calls:
                call()
        in_process = runtime_pid(runner) == runtime_pid(base) == "self"
        clock, why = timing.choose_clock("auto", 1, runner, calls) if in_process else (
            "wall", "a runtime runs in another process")
        timings = timing.measure_paired(calls[0], calls[1], runs, timer=timing.CLOCKS[clock])
    target_ms = LatencyStats.from_seconds(timings.target).median_ms
    ref_ms = LatencyStats.from_seconds(timings.reference).median_ms
    return {"batch": 1, "median_ms": round(target_ms, 4), "fp32_median_ms": round(ref_ms, 4),
            "ratio": round(timings.ratio, 3),
            "rounds": runs, "threads": 1, "clock": clock, "clock_reason": why,
            "paired": "interleaved rounds against the FP32 artifact; ratio = median per-round ratio"}


def print_comparison(results: dict[str, Any]) -> None:
    print(f"{'method':<22} {'target':<38} {'outcome':<7} {'size_kB':>8} {'x fp32':>6} {'p50_ms':>8} {'x fp32':>6} "
          f"accuracy drop (95% CI)")
    for label, e in results["methods"].items():
        size, lat, acc = e.get("size") or {}, e.get("latency") or {}, e.get("accuracy")
        if acc:
            drops = "; ".join(f"{m['metric']} {m['drop']:+.2f} {m['unit']} ({m['ci95'][0]:+.2f}..{m['ci95'][1]:+.2f})"
                              for m in acc["metrics"])
        else:
            drops = f"- ({(e.get('accuracy_reason') or e.get('reason') or '')[:70]})"
        kb = size.get("bytes") / 1024 if size.get("bytes") else None
        print(f"{label:<22} {e['target']:<38} {e['outcome']:<7} {fmt_optional(kb, '.0f'):>8} "
              f"{fmt_optional(size.get('ratio'), '.2f'):>6} {fmt_optional(lat.get('median_ms'), '.3f'):>8} "
              f"{fmt_optional(lat.get('ratio'), '.2f'):>6} {drops}")


def run(args: argparse.Namespace) -> int:
    session, spec = open_session(args)
    methods = resolve_methods(args.methods, session.targets, check_opset(session.targets, args.opset))
    calibration = None
    if args.calibration_data:
        data, identity = load_calibration(args.calibration_data, spec)
        session.calibration[spec.name] = (data, identity)
        calibration = {"source": str(args.calibration_data), "id": identity,
                       "samples": len(next(iter(data.values())))}
    out = output_dir(args.output_dir)
    load_model(session, spec)
    records = run_cells(session, spec, [t for _, t in methods], out, args.quiet, command="quantize")
    print_table(records)
    if args.compare:
        results = compare(session, spec, methods, records, args.runs, args.warmup, args.quiet)
        extra = session.cell_spec(spec).extra
        results = {"model": spec.name, "weights": weights_label(session, spec),
                   "calibration": calibration or {"source": "proxy-task calibration split" if "calibration" in extra
                                                  else "seeded example inputs", "id": extra.get("calibration_id")},
                   **results}
        print_comparison(results)
        path = publish(write_json_atomic(out / RESULTS, results, indent=1))
        print(f"comparison written to {path}")
    return EXIT_FAILED if unexpected(records) else EXIT_OK
