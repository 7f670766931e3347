"""The run as one self-contained HTML page: the model x target grid, each cell's detail, and plots.

Input is what a run (or ``matrix_report merge`` of shard reports) writes: the matrix report JSON (cells, accuracy
records, environment), optionally the latency suite's ``--latency-report`` JSON and the folder of saved
pytest-benchmark runs (latency history). Output is one HTML file that needs no network to view: the data, the page's
script and style, and plotly.js (from the pinned ``plotly`` wheel, the ``report`` extra) are inlined::

    python -m export_harness.converters.report.html_report matrix-report.json [shard-2.json ...] \\
        [--latency latency-report.json] [--history baselines/benchmarks] -o report.html

Why plotly.js: MIT, maintained, and the three plots need error bars (accuracy CI), filled bands (the latency
baseline's noise band) and grouped bars out of the box; it arrives through PyPI pinned like the rest of the stack,
so no JavaScript lives in git and no npm step joins the install. The price is 4.8 MB of script per page.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from export_harness.converters.report.matrix_report import identical_artifacts
from export_harness.converters.util.files import write_text_atomic

VERDICTS = ("pass", "declared", "fail", "skipped")
"""Grid colours: passed; declared failure (strict xfail); failure (failed, or a strict xfail that passed); skipped."""
_VERDICT = {"PASSED": "pass", "XFAIL": "declared", "FAILED": "fail", "XPASS": "fail", "SKIPPED": "skipped"}
_FORMAT_ORDER = ("torchscript", "onnx", "tf", "tflite")
_SAVED = re.compile(r"inputs and outputs saved to (\S+)")
_PAGE = resources.files("export_harness.converters.report") / "html"
_MARKERS = re.compile(r"/\*(?:STYLE|PLOTLY|DATA|SCRIPT)\*/|@@TITLE@@|<!--BODY-->")


class ReportInputError(ValueError):
    """An input file that is not what the report needs (the message names it)."""


def verdict(outcome: str) -> str:
    """Grid verdict of a pytest outcome (PASSED / XFAIL / FAILED / XPASS / SKIPPED)."""
    return _VERDICT.get(outcome, "fail")


def _target_order(target: str) -> tuple[int, str, str]:
    base, _, variant = target.partition("@")
    fmt = base.split(":")[0]
    return (_FORMAT_ORDER.index(fmt) if fmt in _FORMAT_ORDER else len(_FORMAT_ORDER), variant, base)


def _cell_view(cell: Mapping[str, Any]) -> dict[str, Any]:
    art = cell.get("artifact") or {}
    worst = cell.get("worst") or {}
    message = cell.get("message") or ""
    saved = _SAVED.search(message)
    return {
        "id": cell["cell"], "model": cell["model"], "target": cell["target"],
        "outcome": cell.get("outcome", "FAILED"), "verdict": verdict(cell.get("outcome", "FAILED")),
        "stage": cell.get("stage"), "message": message, "saved_batch": saved.group(1) if saved else None,
        "cache": cell.get("cache"), "cosine": worst.get("cosine"), "max_abs": worst.get("max_abs"),
        "top1": worst.get("top1"), "size_bytes": art.get("size_bytes"), "sha256": art.get("content_sha256"),
        "key": art.get("key"), "file": art.get("main"), "versions": art.get("versions") or {},
        "opset": art.get("opset_produced"), "convert_seconds": art.get("convert_seconds"),
        "runtime": cell.get("runtime") or {}, "seconds": cell.get("seconds") or {},
        "parity": [{"batch": p.get("batch"), "lengths": p.get("lengths") or {}, "tolerance": p.get("tolerance"),
                    "outputs": [{k: o.get(k) for k in ("name", "shape", "cosine", "max_abs", "max_rel",
                                                         "top1_agreement", "passed")} for o in p.get("outputs", [])]}
                   for p in cell.get("parity") or []],
    }


def _accuracy_view(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out = {}
    for rec in records:
        out[rec["cell"]] = {
            "outcome": rec.get("outcome", "FAILED"), "verdict": verdict(rec.get("outcome", "FAILED")),
            "task": rec.get("task"), "sha256": rec.get("artifact_sha256"),
            "metrics": [{"metric": m.get("metric"), "fp32": m.get("fp32"), "method": m.get("method"),
                         "drop": m.get("drop"), "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"),
                         "threshold": (m.get("budget") or {}).get("threshold"),
                         "higher_is_better": m.get("higher_is_better")} for m in rec.get("metrics") or []],
        }
    return out


def _latency_view(report: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in (report or {}).get("benchmarks") or []:
        lat, gate = b.get("latency_ms") or {}, b.get("gate") or {}
        first = gate.get("first") or {}
        out.setdefault(b["cell"], {})[str(b.get("batch"))] = {
            "id": b.get("id"), "median_ms": lat.get("median_ms"), "p95_ms": lat.get("p95_ms"),
            "p99_ms": lat.get("p99_ms"), "throughput_per_s": b.get("throughput_per_s"),
            "ratio_to_eager": b.get("ratio_to_eager"), "speedup_vs_eager": b.get("speedup_vs_eager"),
            "eager_ms": (b.get("eager_ms") or {}).get("median_ms"),
            "peak_delta_mb": (b.get("peak_rss") or {}).get("peak_delta_mb"),
            "gate_status": gate.get("status"), "gate_message": gate.get("message"),
            "baseline_ratio": first.get("baseline_ratio"), "noise": first.get("noise"),
        }
    return out


def _history_folder(storage: Path, latency: Mapping[str, Any] | None) -> Path | None:
    """This machine kind's folder of saved runs, else the folder the latency gate compared against, else the only
    one present."""
    if not storage.is_dir():
        return None
    latency = latency or {}
    mine = storage / str(latency.get("machine_id", ""))
    if latency.get("machine_id") and mine.is_dir():
        return mine
    baseline = latency.get("baseline")
    if isinstance(baseline, str) and (storage / Path(baseline).parent.name).is_dir():
        return storage / Path(baseline).parent.name
    present = sorted(p for p in storage.iterdir() if p.is_dir())
    return present[0] if len(present) == 1 else None


def _history_view(storage: Path | None, latency: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per benchmark id (``CELL-bN``): ratio to eager and median ms of each saved run, oldest first, then this run."""
    folder = _history_folder(storage, latency) if storage else None
    series: dict[str, list[dict[str, Any]]] = {}
    if folder is not None:
        from export_harness.converters.latency import gate as lg
        from export_harness.converters.report import latency_history as history

        for path in lg.saved_runs(folder):
            try:
                run = lg.load_run(path)
            except (OSError, ValueError, KeyError) as exc:
                raise ReportInputError(f"{path}: not a readable pytest-benchmark run ({exc})") from None
            label = history.run_label(run)
            for point in history.points(run).values():
                series.setdefault(history.short_id(point), []).append(
                    {"run": label, "ratio": point.ratio, "median_ms": point.median_ms, "machine": folder.name})
    for b in (latency or {}).get("benchmarks") or []:
        series.setdefault(b["id"], []).append(
            {"run": "this run", "ratio": b.get("ratio_to_eager"),
             "median_ms": (b.get("latency_ms") or {}).get("median_ms"), "machine": latency.get("machine_id")})
    return series


def page_data(cells: Sequence[Mapping[str, Any]], accuracy: Sequence[Mapping[str, Any]] = (),
              latency: Mapping[str, Any] | None = None, history_dir: str | Path | None = None,
              environment: Mapping[str, Any] | None = None, title: str = "Export conformance report") -> dict[str, Any]:
    """Everything the page shows, as plain JSON values (the page's script renders it)."""
    identical = identical_artifacts(cells)
    views = [_cell_view(c) | {"identical_to": identical.get(c["cell"], [])}
             for c in sorted(cells, key=lambda c: c["cell"])]
    return {
        "title": title, "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "environment": dict(environment or {}),
        "models": sorted({v["model"] for v in views}),
        "targets": sorted({v["target"] for v in views}, key=_target_order),
        "cells": views, "counts": {v: n for v, n in Counter(c["verdict"] for c in views).items()},
        "accuracy": _accuracy_view(accuracy), "latency": _latency_view(latency),
        "latency_machine": (latency or {}).get("machine_id"),
        "history": _history_view(Path(history_dir) if history_dir else None, latency),
    }


def plotly_js() -> str:
    """plotly.js from the pinned ``plotly`` wheel; a clear error names the extra when it is not installed."""
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        raise ReportInputError("the HTML report needs plotly.js from the 'plotly' package: pip install "
                               "'export-conformance-harness[report]'") from None


def _fill(template: str, title: str, **parts: str) -> str:
    """``template`` of ``html/`` with the report's style, plotly.js and the title inlined, plus ``parts`` (marker ->
    text). One pass over the template: inserted text (plotly.js, the data) is never searched for markers."""
    page = (_PAGE / template).read_text(encoding="utf-8")
    parts = {"/*STYLE*/": (_PAGE / "report.css").read_text(encoding="utf-8"),
             "/*PLOTLY*/": plotly_js().replace("</script", "<\\/script"), "@@TITLE@@": _escape(title), **parts}
    return _MARKERS.sub(lambda m: parts[m.group(0)], page)


def render(data: Mapping[str, Any]) -> str:
    """The page: template with the style, plotly.js, the data (every ``<`` as ``\\u003c``, so no text in it can
    close or open a script element) and the page's script inlined."""
    payload = json.dumps(data, allow_nan=False, default=str).replace("<", "\\u003c")
    return _fill("report.html", str(data.get("title", "")), **{
        "/*DATA*/": payload, "/*SCRIPT*/": (_PAGE / "report.js").read_text(encoding="utf-8")})


def plot_page(title: str, body: str) -> str:
    """Another page in the report's style, offline like the report (plotly.js inlined): ``body`` is HTML, e.g.
    plotly figures written with ``fig.to_html(full_html=False, include_plotlyjs=False)``."""
    return _fill("page.html", title, **{"<!--BODY-->": body})


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become the strings ``nan`` / ``inf`` / ``-inf``, which the page shows as
    they are (never '-', which means not measured, and never a number)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_html(path: str | Path, cells: Sequence[Mapping[str, Any]], *, accuracy: Sequence[Mapping[str, Any]] = (),
               latency: Mapping[str, Any] | None = None, history_dir: str | Path | None = None,
               environment: Mapping[str, Any] | None = None) -> Path:
    """Write the report page atomically; returns its path."""
    data = _finite(page_data(cells, accuracy, latency, history_dir, environment))
    return write_text_atomic(Path(path), render(data))


def load_latency(path: str | Path) -> dict[str, Any]:
    """A ``--latency-report`` file; ReportInputError names a file that is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"{path}: not a readable latency report ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportInputError(f"{path}: not a latency report (expected a JSON object with a 'benchmarks' list)")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export_harness.converters.report.html_report",
                                     description="write the run's HTML report from saved JSON")
    parser.add_argument("reports", nargs="+", help="matrix report JSON (--harness-report), or one per shard")
    parser.add_argument("--latency", help="the latency suite's --latency-report JSON")
    parser.add_argument("--history", help="folder of saved pytest-benchmark runs (baselines/benchmarks)")
    parser.add_argument("-o", "--output", required=True, help="HTML file to write")
    args = parser.parse_args(argv)
    from export_harness.converters.report import matrix_report

    try:
        report = matrix_report.merge_reports(args.reports)
        latency = load_latency(args.latency) if args.latency else None
        out = write_html(args.output, report["cells"], accuracy=report["accuracy"], latency=latency,
                         history_dir=args.history, environment=report["environment"])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"HTML report of {len(report['cells'])} cells written to {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
