"""The conformance matrix report: its JSON file, its terminal table, and the merge of shard reports.

A run writes ``{"cells": [...]}`` (``--harness-report``): one record per executed cell, as ``CellResult.to_dict()``
plus ``outcome`` (PASSED / FAILED / XFAIL / XPASS). Shards of one matrix (pytest-split ``--splits N --group i``,
one machine each) write one report each; ``merge`` joins them into the report a single run writes, and renders
the same table, ``support_table.md`` and ``export_results/<model>.json``::

    python -m converters.report.matrix_report merge shard-1.json shard-2.json shard-3.json -o matrix-report.json

No pytest here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from models.atomic import write_json_atomic

CACHE_STATES = ("converted", "conversion-failed", "hit", "failure-replayed")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_lines(cells: Iterable[Mapping[str, Any]]) -> list[str]:
    """The matrix table (one line per cell, sorted by id) and its closing count line."""
    rows = sorted(cells, key=lambda c: c["cell"])
    lines = [f"{'cell':<48} {'result':<7} {'stage':<9} {'cosine(min)':>12} {'max_abs':>9} {'top1':>5} "
             f"{'size_kB':>8} {'export_s':>8} artifact"]
    for cell in rows:
        worst, size = cell["worst"], cell["artifact"].get("size_bytes")
        lines.append(
            f"{cell['cell']:<48} {cell['outcome']:<7} {(cell['stage'] or '-'):<9} {_fmt(worst['cosine'], '.9f'):>12} "
            f"{_fmt(worst['max_abs'], '.2e'):>9} {_fmt(worst['top1'], '.2f'):>5} "
            f"{_fmt(size / 1024 if size else None, '.0f'):>8} {_fmt(cell['seconds'].get('export'), '.2f'):>8} "
            f"{cell['cache']}")
    how = {k: sum(1 for c in rows if c["cache"] == k) for k in CACHE_STATES}
    counts: dict[str, int] = {}
    for cell in rows:
        counts[cell["outcome"]] = counts.get(cell["outcome"], 0) + 1
    lines.append(f"cells: {len(rows)} ({', '.join(f'{v} {k.lower()}' for k, v in sorted(counts.items()))}); "
                 f"conversions performed this run: {how['converted'] + how['conversion-failed']} "
                 f"({how['conversion-failed']} failed); served from cache: {how['hit']} artifacts, "
                 f"{how['failure-replayed']} known failures")
    return lines


def write_report(path: str | Path, cells: list[Mapping[str, Any]]) -> Path:
    """Write a run's (or a merge's) cell records, sorted by cell id."""
    return write_json_atomic(path, {"cells": sorted(cells, key=lambda c: c["cell"])})


def load_report(path: str | Path) -> list[dict[str, Any]]:
    """The cell records of one report file; a clear ValueError names a file that is not a matrix report."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable matrix report ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError(f"{path}: not a matrix report (expected a JSON object with a 'cells' list)")
    return data["cells"]


def merge(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The cells of several shard reports as one run's: a cell reported by two shards is an error (the shards of
    one matrix are disjoint), so a report passed twice is caught instead of double-counted."""
    merged: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for path in map(Path, paths):
        for cell in load_report(path):
            if cell["cell"] in merged:
                raise ValueError(f"cell {cell['cell']} is in both {origin[cell['cell']]} and {path}: shard reports "
                                 "of one matrix must be disjoint")
            merged[cell["cell"]], origin[cell["cell"]] = cell, path
    return [merged[k] for k in sorted(merged)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.report.matrix_report",
                                     description="merge shard reports of one conformance matrix")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="join N shard reports into one report, table, support table, export_results")
    m.add_argument("reports", nargs="+", help="shard report JSON files (--harness-report of each shard)")
    m.add_argument("-o", "--output", required=True, help="merged report JSON path (support table and "
                                                           "export_results/ are written beside it)")
    args = parser.parse_args(argv)
    try:
        cells = merge(args.reports)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from converters.report import export_results

    out = write_report(args.output, cells)
    print("\n".join(table_lines(cells)))
    written = export_results.write(cells, out.parent)
    print(f"merged {len(args.reports)} reports into {out}; {written[-1].name} and export_results/ in {out.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
