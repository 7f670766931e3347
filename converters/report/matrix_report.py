"""The conformance matrix report: its JSON file, its terminal table, and the merge of shard reports.

A run writes ``{"cells": [...]}`` (``--harness-report``): one record per executed cell, as ``CellResult.to_dict()``
plus ``outcome`` (PASSED / FAILED / XFAIL / XPASS). Shards of one matrix (pytest-split ``--splits N --group i``,
one machine each) write one report each; ``merge`` joins them into the report a single run writes, and renders
the same table, ``support_table.md`` and ``export_results/<model>.json``::

    python -m export_harness.converters.report.matrix_report merge shard-1.json shard-2.json shard-3.json \
        -o matrix-report.json

No pytest here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from export_harness.converters.util.files import write_json_atomic

CACHE_STATES = ("converted", "conversion-failed", "hit", "failure-replayed")


def fmt_optional(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``-`` when it was not measured (None)."""
    return "-" if value is None else format(value, spec)


def skipped_cell(model: str, target: str, reason: str) -> dict[str, Any]:
    """The record of a cell that did not run (its backend is not installed here), shaped as a run cell's."""
    return {"cell": f"{model}-{target}", "model": model, "target": target, "status": "skipped", "stage": None,
            "message": reason, "cache": "none", "artifact": {}, "runtime": {}, "seconds": {},
            "worst": {"cosine": None, "max_abs": None, "top1": None}, "parity": [], "outcome": "SKIPPED"}


def identical_artifacts(cells: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Cell id -> the other targets of the same model whose artifact has the same bytes (``content_sha256``): two
    methods that produced one file (ONNX Runtime's entropy and minmax calibration can) are one result, not two."""
    by_content: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for cell in cells:
        sha = (cell.get("artifact") or {}).get("content_sha256")
        if sha:
            by_content.setdefault((cell["model"], sha), []).append(cell)
    return {c["cell"]: sorted(o["target"] for o in group if o is not c)
            for group in by_content.values() if len(group) > 1 for c in group}


def table_lines(cells: Iterable[Mapping[str, Any]], account: str | None = None) -> list[str]:
    """The matrix table (one line per cell, sorted by id) and its closing count line. ``account``: the session's
    conversion account (``cache.account_line``: every conversion of the session, whichever item made it); without
    it (a saved report) the conversions are counted from the cells' own records."""
    rows = sorted(cells, key=lambda c: c["cell"])
    identical = identical_artifacts(rows)
    lines = [f"{'cell':<48} {'result':<7} {'stage':<9} {'cosine(min)':>12} {'max_abs':>9} {'top1':>5} "
             f"{'size_kB':>8} {'export_s':>8} artifact"]
    for cell in rows:
        worst, size = cell["worst"], cell["artifact"].get("size_bytes")
        fmt = fmt_optional
        lines.append(
            f"{cell['cell']:<48} {cell['outcome']:<7} {(cell['stage'] or '-'):<9} {fmt(worst['cosine'], '.9f'):>12} "
            f"{fmt(worst['max_abs'], '.2e'):>9} {fmt(worst['top1'], '.2f'):>5} "
            f"{fmt(size / 1024 if size else None, '.0f'):>8} {fmt(cell['seconds'].get('export'), '.2f'):>8} "
            f"{cell['cache']}" + (f" (same bytes as {', '.join(identical[cell['cell']])})"
                                  if cell["cell"] in identical else ""))
    how = {k: sum(1 for c in rows if c["cache"] == k) for k in CACHE_STATES}
    counts: dict[str, int] = {}
    for cell in rows:
        counts[cell["outcome"]] = counts.get(cell["outcome"], 0) + 1
    account = account or (f"conversions performed this run: {how['converted'] + how['conversion-failed']} "
                          f"({how['conversion-failed']} failed); served from cache: {how['hit']} artifacts, "
                          f"{how['failure-replayed']} known failures")
    lines.append(f"cells: {len(rows)} ({', '.join(f'{v} {k.lower()}' for k, v in sorted(counts.items()))}); "
                 f"{account}")
    return lines


def write_report(path: str | Path, cells: list[Mapping[str, Any]], accuracy: Iterable[Mapping[str, Any]] = (),
                 environment: Mapping[str, Any] | None = None) -> Path:
    """Write a run's (or a merge's) cell records sorted by cell id, its accuracy records (the accuracy suite's
    per-cell results with their outcome) and what it ran on."""
    cells = [{k: v for k, v in c.items() if k != "identical_to"} for c in cells]  # a shard's, recomputed here
    identical = identical_artifacts(cells)
    cells = [{**c, "identical_to": identical[c["cell"]]} if c["cell"] in identical else c for c in cells]
    return write_json_atomic(path, {"cells": sorted(cells, key=lambda c: c["cell"]),
                                    "accuracy": sorted(accuracy, key=lambda c: c["cell"]),
                                    "environment": dict(environment or {})})


def load_report(path: str | Path) -> list[dict[str, Any]]:
    """The cell records of one report file; a clear ValueError names a file that is not a matrix report."""
    return load_full_report(path)["cells"]


def load_full_report(path: str | Path) -> dict[str, Any]:
    """One report file: ``cells``, ``accuracy`` (empty in reports written before it existed), ``environment``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable matrix report ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError(f"{path}: not a matrix report (expected a JSON object with a 'cells' list)")
    accuracy, environment = data.get("accuracy") or [], data.get("environment") or {}
    if not isinstance(accuracy, list) or not isinstance(environment, dict):
        raise ValueError(f"{path}: not a matrix report ('accuracy' must be a list and 'environment' an object)")
    for kind, records in (("cells", data["cells"]), ("accuracy", accuracy)):
        for i, record in enumerate(records):
            if not isinstance(record, dict) or not isinstance(record.get("cell"), str):
                raise ValueError(f"{path}: {kind}[{i}] is not a cell record (expected an object with a 'cell' name, "
                                 f"got {str(record)[:60]!r})")
    return {"cells": data["cells"], "accuracy": accuracy, "environment": environment}


def merge(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The cells of several shard reports as one run's (see :func:`merge_reports`)."""
    return merge_reports(paths)["cells"]


def merge_reports(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Several shard reports as one run's report: a cell (or accuracy cell) reported by two shards is an error (the
    shards of one matrix are disjoint), so a report passed twice is caught instead of double-counted. The
    environment is the first shard's, with ``shards`` naming each shard's machine and commit."""
    merged: dict[str, dict[str, dict[str, Any]]] = {"cells": {}, "accuracy": {}}
    origin: dict[tuple[str, str], Path] = {}
    shards: list[dict[str, Any]] = []
    environment: dict[str, Any] = {}
    for path in map(Path, paths):
        report = load_full_report(path)
        shards.append({"report": str(path), **{k: report["environment"].get(k) for k in ("machine_id", "commit")}})
        for kind in merged:
            for cell in report[kind]:
                if cell["cell"] in merged[kind]:
                    raise ValueError(f"cell {cell['cell']} is in both {origin[kind, cell['cell']]} and {path}: shard "
                                     "reports of one matrix must be disjoint")
                merged[kind][cell["cell"]], origin[kind, cell["cell"]] = cell, path
        environment = environment or dict(report["environment"])
    environment["shards"] = shards if len(shards) > 1 else []
    return {kind: [merged[kind][k] for k in sorted(merged[kind])] for kind in merged} | {"environment": environment}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export_harness.converters.report.matrix_report",
                                     description="merge shard reports of one conformance matrix")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="join N shard reports into one report, table, support table, export_results")
    m.add_argument("reports", nargs="+", help="shard report JSON files (--harness-report of each shard)")
    m.add_argument("-o", "--output", required=True, help="merged report JSON path (support table and "
                                                           "export_results/ are written beside it)")
    args = parser.parse_args(argv)
    try:
        report = merge_reports(args.reports)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from export_harness.converters.report import export_results

    cells = report["cells"]
    out = write_report(args.output, cells, report["accuracy"], report["environment"])
    print("\n".join(table_lines(cells)))
    written = export_results.write(cells, out.parent)
    print(f"merged {len(args.reports)} reports into {out}; {written[-1].name} and export_results/ in {out.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
