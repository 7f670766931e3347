"""``export-harness export``: run the matrix's cells of one model, copy each passing artifact out of the cache.

For every selected target: the same cell as ``pytest suites/test_matrix.py -k MODEL-TARGET`` (export through the
content-addressed cache, structure, load, run at batch 1 and 3, parity against PyTorch), then, when it passed, the
artifact file (or SavedModel directory) copied atomically to ``--output-dir`` as ``MODEL-TARGET_KEY.SUFFIX`` with a
sidecar ``MODEL-TARGET_KEY.SUFFIX.json`` (the cache entry's ``artifact.json`` plus the verdict and its numbers), and
``export_results.json`` (guide 002's shape) for the whole run.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export_harness.converters.cache import SIDECAR, artifact_sha256
from export_harness.converters.cli import EXIT_FAILED, EXIT_OK, UsageError
from export_harness.converters.cli.cells import (
    DEFAULT_FORMATS,
    cached_artifact,
    check_opset,
    run_matrix_cell,
    select_targets,
    unexpected,
)
from export_harness.converters.cli.files import copy_atomic, output_dir, publish
from export_harness.converters.cli.progress import Progress
from export_harness.converters.cli.session import load_model, open_session, weights_label
from export_harness.converters.report import matrix_report
from export_harness.converters.report.export_results import model_records
from export_harness.converters.session import Session
from export_harness.converters.sidecar import write_sidecar
from export_harness.converters.target import Target
from export_harness.converters.util.files import write_json_atomic
from export_harness.models.spec import ModelSpec

RESULTS = "export_results.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--formats", nargs="+", metavar="PATTERN", default=None,
                        help="targets to export, as names or patterns (* is the only wildcard, brackets are literal): "
                             "'onnx:fp32' 'tflite:*[onnx2tf]' 'onnx:*'; default: " + " ".join(DEFAULT_FORMATS))
    parser.add_argument("--opset", type=int, metavar="N", default=None,
                        help="ONNX opset: 17 is the default chain; 11, 12 or 13 select the copies of the ONNX chain on "
                             "the opset axis (onnx:fp32@opset11, tflite:fp32[onnx-tf]@opset11, ...); targets without "
                             "an opset (TorchScript, the dynamo exporter, litert-torch) are unaffected")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="require a dynamic batch axis (the default whenever the model declares one, checked at "
                             "the structure stage); an error for a model with a fixed batch")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="where the passing artifacts, their .json sidecars and export_results.json go")
    parser.add_argument("--benchmark", action="store_true",
                        help="then time each exported artifact at batch 1 (as `export-harness benchmark`)")


def file_stem(model: str, target: str) -> str:
    """``tiny_ladeda`` + ``tflite:fp16[onnx2tf]`` -> ``tiny_ladeda-tflite_fp16_onnx2tf``."""
    return f"{model}-" + re.sub(r"[^A-Za-z0-9.-]+", "_", target).strip("_")


def write_artifact(session: Session, spec: ModelSpec, target: Target, record: dict[str, Any], out: Path,
                   command: str = "export") -> dict[str, str]:
    """Copy a passing cell's artifact into ``out`` with its sidecar; returns ``{"file": ..., "sidecar": ...}``."""
    artifact = cached_artifact(session, spec, target)
    dst = out / (file_stem(spec.name, target.name) + artifact.path.suffix)
    copy_atomic(artifact.path, dst)
    try:
        sidecar = json.loads((artifact.directory / SIDECAR).read_text())
    except (OSError, ValueError):
        sidecar = {}
    worst = record.get("worst") or {}
    tolerance = next((p.get("tolerance") for p in record.get("parity") or []), None)
    sidecar.update({
        "file": dst.name, "file_sha256": artifact_sha256(dst), "cache_file": str(artifact.path),
        "channels_last": artifact.meta.get("channels_last", []),
        "verdict": record["outcome"], "status": record["status"], "tier": target.tier, "tolerance": tolerance,
        "cosine": worst.get("cosine"), "max_abs": worst.get("max_abs"), "top1": worst.get("top1"),
        "parity": [{"batch": p["batch"], **({"lengths": p["lengths"]} if p.get("lengths") else {}),
                    "outputs": {o["name"]: {k: o.get(k) for k in ("cosine", "max_abs", "max_rel", "top1_agreement")}
                                for o in p.get("outputs", [])}} for p in record.get("parity") or []],
        "weights": weights_label(session, spec),
        "calibration_id": session.cell_spec(spec).extra.get("calibration_id"),
        "exported_by": f"export-harness {command}",
    })
    side = publish(write_sidecar(dst.with_name(dst.name + ".json"), sidecar))
    return {"file": dst.name, "sidecar": side.name}


def results_record(spec: ModelSpec, records: Sequence[dict[str, Any]], session: Session,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Guide 002's ``export_results.json`` of one model
    (``export_harness.converters.report.export_results.model_records``) with
    each written file named as in the output directory."""
    record = model_records(records).get(spec.name, {"model": spec.name, "exports": {}, "similarity": {}, "files": {}})
    for cell in records:
        key = next((k for k, e in record["exports"].items() if e["target"] == cell["target"]), None)
        if key is None:
            continue
        written = cell.get("written")
        record["exports"][key]["file"] = written["file"] if written else None
        record["exports"][key]["outcome"] = cell["outcome"]
        if cell.get("note"):
            record["exports"][key]["note"] = cell["note"]
        if written:
            record["files"][key] = written["file"]
        else:
            record["files"].pop(key, None)
    record["weights"] = weights_label(session, spec)
    return {**record, **(extra or {})}


def run_cells(session: Session, spec: ModelSpec, targets: Sequence[Target], out: Path | None, quiet: bool,
              command: str = "export") -> list[dict[str, Any]]:
    """Each target's matrix cell with a progress line; a passing artifact is written to ``out`` (when given)."""
    progress = Progress(len(targets), enabled=not quiet)
    records = []
    for target in targets:
        with progress.step(f"{spec.name}-{target.name}") as step:
            record, _ = run_matrix_cell(session, spec, target)
            step.status = record["outcome"]
        if out is not None and record["status"] == "passed":
            record["written"] = write_artifact(session, spec, target, record, out, command)
        records.append(record)
    return records


def first_clause(message: str | None, limit: int = 200) -> str:
    """The first line of a failure message up to its first ``; `` (the criterion that failed)."""
    line = (message or "").strip().split("\n", 1)[0].split("; ", 1)[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def print_table(records: Sequence[dict[str, Any]]) -> None:
    """The matrix's own table (``export_harness.converters.report.matrix_report.table_lines``), then why each cell did
    not pass."""
    print("\n".join(matrix_report.table_lines(records)))
    for record in records:
        if record["outcome"] != "PASSED":
            stage = f"[{record['stage']}] " if record.get("stage") else ""
            print(f"{record['outcome']:<7} {record['cell']}: {stage}{first_clause(record.get('message'))}")
        if record.get("note"):
            label = "declared" if record["outcome"] == "XFAIL" else "note"
            print(f"{'':<7} {label}: {record['note']}")


def run(args: argparse.Namespace) -> int:
    session, spec = open_session(args)
    targets = select_targets(session.targets, args.formats or DEFAULT_FORMATS,
                             check_opset(session.targets, args.opset))
    if args.dynamic_batch and not spec.dynamic_batch:
        raise UsageError(f"--dynamic-batch: model {spec.name} declares no dynamic batch axis (its inputs' shapes "
                         "have no 'B')")
    out = output_dir(args.output_dir)
    load_model(session, spec)
    records = run_cells(session, spec, targets, out, args.quiet)
    print_table(records)
    extra: dict[str, Any] = {"opset": args.opset or None}
    if args.benchmark:
        from export_harness.converters.cli import benchmark

        passing = [t for t, r in zip(targets, records, strict=True) if r["status"] == "passed"]
        rows = benchmark.benchmark_targets(session, spec, passing, (1,), runs=benchmark.DEFAULT_RUNS,
                                           warmup=benchmark.DEFAULT_WARMUP, threads=1, quiet=args.quiet,
                                           conformance=False)
        benchmark.print_table(rows)
        extra["benchmark"] = rows
    path = publish(write_json_atomic(out / RESULTS, results_record(spec, records, session, extra), indent=1))
    written = sum(1 for r in records if r.get("written"))
    print(f"{written} artifact(s) and their .json sidecars written to {out}; results in {path}")
    return EXIT_FAILED if unexpected(records) else EXIT_OK
