"""Guide 002's ``export_results.json`` per model, and the backend x precision support table, from a matrix run.

Input: the cell records of a run (``--harness-report`` JSON, ``{"cells": [...]}``). Output:

- ``export_results/<model>.json``: the files each target produced, their sizes (and ratio to the same backend's
  FP32 file), the similarity (cosine, as guide 002 reports it) and top-1 agreement per precision, the status and,
  for a failing cell, the stage and error;
- ``support_table.md``: one row per model variant, one column per TF/TFLite backend x precision, each cell
  ``status cosine`` (the table in the README is this file, generated, never hand-written).

``python -m export_harness.converters.report.export_results REPORT.json OUTDIR`` regenerates both from a saved report.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from export_harness.converters.util.files import write_text_atomic

TF_COLUMNS = [
    ("onnx2tf", ["tf:savedmodel", "tflite:fp32", "tflite:fp16", "tflite:int8-dynamic", "tflite:int8-full"]),
    ("litert-torch", ["tflite:fp32", "tflite:fp16", "tflite:int8-dynamic", "tflite:int8-full"]),
    ("onnx-tf", ["tf:savedmodel", "tflite:fp32", "tflite:fp16", "tflite:int8-dynamic", "tflite:int8-full"]),
]
_MARK = {"PASSED": "pass", "FAILED": "FAIL", "XFAIL": "xfail", "XPASS": "XPASS", "SKIPPED": "skip"}


def _target_key(target: str) -> str:
    """``tflite:fp16[onnx2tf]`` -> ``tflite_fp16_onnx2tf`` (guide 002 names its entries ``tflite_fp16``)."""
    return target.replace(":", "_").replace("[", "_").replace("]", "").replace("-", "_")


def model_records(cells: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One guide-002-style record per model from the cell dicts of a run."""
    records: dict[str, dict[str, Any]] = {}
    for cell in cells:
        model = cell["model"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec = records.setdefault(model, {"model": model, "generated": stamp, "exports": {}, "similarity": {},
                                         "files": {}})
        runtime = cell.get("runtime") or {}
        structure = runtime.get("structure") or {}
        art = cell.get("artifact") or {}
        worst = cell.get("worst") or {}
        entry = {
            "target": cell["target"], "status": _MARK.get(cell.get("outcome", ""), cell.get("status")),
            "stage": cell.get("stage"), "error": cell.get("message") or None,
            "file": runtime.get("artifact_file") or art.get("main"),
            "size_bytes": art.get("size_bytes"),
            "size_mb": round(art["size_bytes"] / 2**20, 3) if art.get("size_bytes") else None,
            "fp32_size_bytes": structure.get("fp32_size_bytes"),
            "size_ratio_vs_fp32": structure.get("size_ratio_vs_fp32"),
            "cosine_similarity": worst.get("cosine"), "top1_agreement": worst.get("top1"),
            "max_abs_error": worst.get("max_abs"),
            "runtime": {k: runtime.get(k) for k in ("runtime", "version", "delegate", "batch_mode") if k in runtime},
            "convert_seconds": art.get("convert_seconds"),
        }
        key = _target_key(cell["target"])
        rec["exports"][key] = entry
        if entry["cosine_similarity"] is not None:
            rec["similarity"][key] = entry["cosine_similarity"]
        if entry["file"] and entry["status"] == "pass":
            rec["files"][key] = entry["file"]
    return records


def support_table(cells: Iterable[Mapping[str, Any]], models: Iterable[str] | None = None) -> str:
    """Markdown: model x (backend, precision) with status and worst cosine; absent cells show ``skip``."""
    by_cell = {c["cell"]: c for c in cells}
    names = list(models) if models is not None else sorted({c["model"] for c in by_cell.values()})
    header = ["model"] + [f"{b} {t.split(':')[1]}" for b, targets in TF_COLUMNS for t in targets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in names:
        row = [f"`{model}`"]
        for backend, targets in TF_COLUMNS:
            for target in targets:
                cell = by_cell.get(f"{model}-{target}[{backend}]")
                row.append(_cell_text(cell))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def variant_support_table(cells: Iterable[Mapping[str, Any]]) -> str:
    """Markdown: the guides' pipelines as written. One row per (model, chain copy) present in ``cells``
    (``@opsetN``: the ONNX chain exported at the guide's opset; ``@guide-int8-opsetN``: guide 001's guide-quantized
    ONNX through the TF backends), columns: the chain's ONNX root, ORT's methods, then every TF/TFLite target."""
    by_cell = {c["cell"]: c for c in cells}
    rows = sorted({(c["model"], "@" + c["target"].split("@", 1)[1]) for c in by_cell.values() if "@" in c["target"]})
    onnx = ["onnx:fp32", "onnx:fp16", "onnx:int8-dynamic", "onnx:int8-static[minmax]", "onnx:int8-static[entropy]",
            "onnx:int8-static[percentile]", "onnx:int8-static[minmax-per-tensor]"]
    tf = [(f"{b} {t.split(':')[1]}", f"{t}[{b}]") for b, targets in TF_COLUMNS if b != "litert-torch"
          for t in targets]
    header = ["model", "chain", *(t.split(":", 1)[1] for t in onnx), *(label for label, _ in tf)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, suffix in rows:
        guide = suffix.startswith("@guide-int8-")
        root = f"onnx:fp32[guide-quantizer-int8]@{suffix.rsplit('-', 1)[1]}" if guide else f"onnx:fp32{suffix}"
        row = [f"`{model}`", f"`{suffix}`", _cell_text(by_cell.get(f"{model}-{root}"))]
        row += ["-" if guide else _cell_text(by_cell.get(f"{model}-{t}{suffix}")) for t in onnx[1:]]
        row += [_cell_text(by_cell.get(f"{model}-{target}{suffix}")) for _, target in tf]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _cell_text(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "skip"
    mark = _MARK.get(cell.get("outcome", ""), str(cell.get("status")))
    cosine = (cell.get("worst") or {}).get("cosine")
    if mark == "pass" and cosine is not None:
        return f"pass {cosine:.6f}"
    if mark in ("FAIL", "xfail"):
        return f"{mark} ({cell.get('stage')})" + (f" {cosine:.4f}" if cosine is not None else "")
    return mark


def write(cells: list[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``export_results/<model>.json`` and ``support_table.md`` under ``out_dir``; returns the paths."""
    out = Path(out_dir)
    (out / "export_results").mkdir(parents=True, exist_ok=True)
    written = []
    for model, record in model_records(cells).items():
        path = out / "export_results" / f"{model}.json"
        write_text_atomic(path, json.dumps(record, indent=1, default=str))
        written.append(path)
    table = out / "support_table.md"
    write_text_atomic(table, support_table(cells))
    written.append(table)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m export_harness.converters.report.export_results REPORT.json OUTDIR", file=sys.stderr)
        return 2
    cells = json.loads(Path(argv[0]).read_text())["cells"]
    for path in write(cells, argv[1]):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
