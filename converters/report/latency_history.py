"""Benchmark history over saved pytest-benchmark runs: list, compare two, show a series, plot, speedup table.

    python -m export_harness.converters.report.latency_history list
    python -m export_harness.converters.report.latency_history compare baseline latest [-k onnx] [--fail]
    python -m export_harness.converters.report.latency_history series [-k sign_gru] [--batch 1]
    python -m export_harness.converters.report.latency_history speedup [RUN] [--batch 1] [--format markdown]
    python -m export_harness.converters.report.latency_history plot [--out latency-history.html] [--baseline baseline]

Runs live in ``STORAGE/<machine id>/NNNN_name.json`` (``--storage``, default ``baselines/benchmarks``;
``--machine``, default this machine's kind). A run reference is a path, a number (``3``), ``latest``, ``-1``,
``-2`` ... or a name (``baseline`` = the newest ``NNNN_baseline.json``). ``compare`` judges each benchmark with
the same statistics as the in-pytest gate (``converters/latency/gate.py``) but cannot re-measure, so a suspect is
shown as ``regression?``; the authoritative gate is ``pytest suites/test_latency.py --latency-gate``.
Plots are drawn with plotly like the HTML report (``converters/report/html_report.py``): an ``.html`` page in the
report's style that opens offline (plotly.js inlined), or an ``.svg`` through plotly's static export (needs the
``kaleido`` package).
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export_harness.converters.latency import gate as lg
from export_harness.converters.latency.machine import machine_id
from export_harness.models.spec import star_match

DEFAULT_STORAGE = Path("baselines") / "benchmarks"


# ------------------------------------------------------------------------------------------------- model


@dataclass
class Point:
    """One benchmark of one run, flattened for tables and plots."""

    name: str
    cell: str
    model: str
    target: str
    batch: int | None
    median_ms: float
    q1_ms: float
    q3_ms: float
    ratio: float | None
    speedup: float | None
    eager_ms: float | None
    clock: str
    entry: lg.BaselineEntry


def points(run: lg.Baseline) -> dict[str, Point]:
    out = {}
    for name, entry in run.entries.items():
        extra, stats = entry.extra, entry.stats
        lat_ms = extra.get("latency_ms") or {}
        med = lat_ms.get("median_ms", stats.get("median", math.nan) * 1e3)
        out[name] = Point(
            name=name, cell=extra.get("cell", name), model=extra.get("model", name.split("[")[0]),
            target=extra.get("target", "?"), batch=extra.get("batch"), median_ms=float(med),
            q1_ms=float(lat_ms.get("q1_ms", stats.get("q1", math.nan) * 1e3)),
            q3_ms=float(lat_ms.get("q3_ms", stats.get("q3", math.nan) * 1e3)),
            ratio=extra.get("ratio_to_eager"), speedup=extra.get("speedup_vs_eager"),
            eager_ms=(extra.get("eager_ms") or {}).get("median_ms"), clock=extra.get("clock", "wall"), entry=entry)
    return out


def short_id(point: Point) -> str:
    return f"{point.cell}-b{point.batch}" if point.batch is not None else point.name


def run_label(run: lg.Baseline) -> str:
    match = lg.RUN_FILE.match(run.path.name)
    number = match.group(1) if match else run.path.stem
    commit = str(run.commit_info.get("id") or "")[:7]
    dirty = "+" if run.commit_info.get("dirty") else ""
    return f"{number} {commit}{dirty}".strip()


def machine_dir(storage: Path, machine: str | None) -> Path:
    """The folder of one machine kind; defaults to this machine's, or the only one present."""
    if machine:
        return storage / machine
    mine = storage / machine_id()
    if mine.is_dir():
        return mine
    present = sorted(p for p in storage.iterdir() if p.is_dir()) if storage.is_dir() else []
    if len(present) == 1:
        print(f"note: no runs for this machine kind ({machine_id()}); using {present[0].name}", file=sys.stderr)
        return present[0]
    raise SystemExit(f"no runs for this machine kind ({machine_id()}) under {storage}; machine folders: "
                     f"{', '.join(p.name for p in present) or 'none'} (choose one with --machine)")


def select(pts: dict[str, Point], patterns: Sequence[str], batch: int | None) -> dict[str, Point]:
    def keep(p: Point) -> bool:
        if batch is not None and p.batch != batch:
            return False
        return not patterns or any(pat in p.name or star_match(pat, short_id(p)) for pat in patterns)

    return {k: p for k, p in pts.items() if keep(p)}


def offline_verdict(cur: Point, base: Point, cfg: lg.GateConfig) -> str:
    """Gate statistics without re-measurement: ok / improved / regression? / unstable / n/a."""
    a, b = cur.entry.ratios, base.entry.ratios
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return "n/a"
    if cur.clock != base.clock:
        return "incomparable"
    verdict = lg.decide(a, b, cfg)
    return "regression?" if verdict.status == "regression" else verdict.status


# ---------------------------------------------------------------------------------------------- commands


def cmd_list(storage: Path, machine: str | None) -> int:
    folders = [storage / machine] if machine else (sorted(p for p in storage.iterdir() if p.is_dir())
                                                   if storage.is_dir() else [])
    if not folders:
        print(f"no saved runs under {storage}")
        return 0
    for folder in folders:
        print(f"{folder}{'  (this machine kind)' if folder.name == machine_id() else ''}")
        for path in lg.saved_runs(folder):
            run = lg.load_run(path)
            scopes = {e.extra.get("scope") for e in run.entries.values()} - {None}
            batches = sorted({e.extra.get("batch") for e in run.entries.values()} - {None})
            print(f"  {path.name:<48} {run.datetime[:19]:<19} commit {run_label(run).split(' ')[-1]:<9} "
                  f"{len(run.entries):>4} benchmarks  scope {','.join(sorted(scopes)) or '?'}  batches {batches}")
    return 0


def cmd_compare(folder: Path, ref_a: str, ref_b: str, patterns: Sequence[str], batch: int | None, fail: bool,
                cfg: lg.GateConfig) -> int:
    run_a, run_b = lg.load_run(lg.resolve_run(folder, ref_a)), lg.load_run(lg.resolve_run(folder, ref_b))
    pa, pb = select(points(run_a), patterns, batch), select(points(run_b), patterns, batch)
    print(f"A = {run_a.path.name} ({run_label(run_a)}), B = {run_b.path.name} ({run_label(run_b)})")
    mismatch = lg.kind_mismatch(run_a.machine_kind, run_b.machine_kind)
    if mismatch:
        print(f"WARNING: different machine kinds: {mismatch}")
    names = sorted(set(pa) | set(pb), key=lambda n: (pa.get(n) or pb.get(n)).name)
    width = max([len(short_id(pa.get(n) or pb[n])) for n in names] + [9])
    print(f"{'benchmark':<{width}} {'A ms':>9} {'B ms':>9} {'change':>8} {'A x_eager':>9} {'B x_eager':>9} "
          f"{'ratio chg':>9}  verdict")
    suspects = 0
    for name in names:
        a, b = pa.get(name), pb.get(name)
        if a is None or b is None:
            only = "only in A" if b is None else "only in B"
            print(f"{short_id(a or b):<{width}} {only}")
            continue
        change = b.median_ms / a.median_ms - 1
        rchg = (b.ratio / a.ratio - 1) if a.ratio and b.ratio else None
        verdict = offline_verdict(b, a, cfg) if b.target != "torch:eager" else "reference"
        suspects += verdict == "regression?"
        print(f"{short_id(b):<{width}} {a.median_ms:>9.3f} {b.median_ms:>9.3f} {change:>+8.1%} "
              f"{_x(a.speedup):>9} {_x(b.speedup):>9} {(f'{rchg:+.1%}' if rchg is not None else '-'):>9}  {verdict}")
    print(f"{suspects} suspected regression(s) (B vs A, ratio-to-eager, min effect {cfg.min_effect:.0%}; not "
          f"re-measured offline)")
    return 1 if fail and suspects else 0


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def load_series(folder: Path, refs: Sequence[str] | None) -> list[lg.Baseline]:
    paths = [lg.resolve_run(folder, r) for r in refs] if refs else lg.saved_runs(folder)
    return [lg.load_run(p) for p in paths]


def cmd_series(folder: Path, refs: Sequence[str] | None, patterns: Sequence[str], batch: int | None) -> int:
    runs = load_series(folder, refs)
    if not runs:
        print(f"no saved runs in {folder}")
        return 1
    per_run = [select(points(r), patterns, batch) for r in runs]
    names = sorted({n for pts in per_run for n in pts}, key=lambda n: next(p[n] for p in per_run if n in p).name)
    width = max([len(short_id(next(p[n] for p in per_run if n in p))) for n in names] + [9])
    print("median ms per call (x speedup vs eager) per run:")
    print(f"{'benchmark':<{width}} " + " ".join(f"{run_label(r):>18}" for r in runs))
    for name in names:
        cells = []
        for pts in per_run:
            p = pts.get(name)
            cells.append(f"{p.median_ms:>9.3f} ({_x(p.speedup):>6})" if p else f"{'-':>18}")
        first = next(p[name] for p in per_run if name in p)
        print(f"{short_id(first):<{width}} " + " ".join(cells))
    return 0


def speedup_rows(run: lg.Baseline, batch: int) -> dict[str, list[Point]]:
    by_model: dict[str, list[Point]] = {}
    for p in points(run).values():
        if p.batch == batch:
            by_model.setdefault(p.model, []).append(p)
    for rows in by_model.values():
        rows.sort(key=lambda p: -(p.speedup or 0))
    return dict(sorted(by_model.items()))


def speedup_text(run: lg.Baseline, batch: int, fmt: str = "text") -> str:
    """Guide 004's "Performance Comparison" table, one block per model: target, ms, throughput, speedup."""
    rows = speedup_rows(run, batch)
    clock = {p.clock for ps in rows.values() for p in ps}
    note = (f"run {run.path.name}, batch size {batch}, clock {'/'.join(sorted(clock)) or '?'} (ms per call; "
            "speedup = PyTorch eager / artifact, measured in the same rounds)")
    lines = []
    if fmt == "markdown":
        targets = sorted({p.target for ps in rows.values() for p in ps}, key=lambda t: (t != "torch:eager", t))
        lines += [f"Performance comparison ({note})", "",
                  "| model | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
        for model, ps in rows.items():
            by_t = {p.target: p for p in ps}
            lines.append(f"| {model} | " + " | ".join(
                f"{by_t[t].median_ms:.2f} ms ({_x(by_t[t].speedup)})" if t in by_t else "-" for t in targets) + " |")
        return "\n".join(lines)
    lines.append(f"Performance Comparison (Batch Size = {batch}) - {note}")
    for model, ps in rows.items():
        width = max(len(p.target) for p in ps) + 1
        lines.append("=" * (width + 44))
        lines.append(f"{model}")
        lines.append(f"{'Model':<{width}} | {'Latency (ms)':>12} | {'Throughput':>11} | {'Speedup':>7}")
        lines.append("-" * (width + 44))
        for p in ps:
            tput = (p.batch or 1) / (p.median_ms / 1e3) if p.median_ms > 0 else math.inf
            lines.append(f"{p.target:<{width}} | {p.median_ms:>12.2f} | {tput:>9.1f}/s | {_x(p.speedup):>7}")
    lines.append("=" * 60)
    return "\n".join(lines)


def cmd_speedup(folder: Path, ref: str, batch: int, fmt: str) -> int:
    print(speedup_text(lg.load_run(lg.resolve_run(folder, ref)), batch, fmt))
    return 0


# ------------------------------------------------------------------------------------------------- plots

COLORS = {"ok": "#2e7d32", "improved": "#1565c0", "regression?": "#c62828", "unstable": "#ef6c00",
          "foreign": "#6a1b9a", "transient": "#9e9d24", "n/a": "#616161", "incomparable": "#616161",
          "baseline": "#1565c0", "reference": "#616161"}
COLUMNS = 4
"""Cell charts per row of the history grid."""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def cell_series(runs: list[lg.Baseline], base_run: lg.Baseline | None, patterns: Sequence[str], batch: int | None,
                cfg: lg.GateConfig) -> list[tuple[str, list[tuple[str, Point | None, str]], Point | None]]:
    """Per benchmark: (short id, [(run label, point or None, offline verdict)] oldest run first, baseline point)."""
    per_run = [select(points(r), patterns, batch) for r in runs]
    base_pts = points(base_run) if base_run else {}
    names = sorted({n for pts in per_run for n in pts}, key=lambda n: next(p[n] for p in per_run if n in p).name)
    out = []
    for name in names:
        base = base_pts.get(name)
        series = []
        for run, pts in zip(runs, per_run, strict=True):
            p = pts.get(name)
            verdict = "n/a"
            if p is not None and base is not None:
                verdict = "baseline" if run.path == base_run.path else (
                    "reference" if p.target == "torch:eager" else offline_verdict(p, base, cfg))
            series.append((run_label(run), p, verdict))
        out.append((short_id(next(p[name] for p in per_run if name in p)), series, base))
    return out


def history_figure(cells: list[tuple[str, list[tuple[str, Point | None, str]], Point | None]], min_effect: float,
                   columns: int = COLUMNS) -> Any:
    """Small multiples, one per benchmark: median ms per run with IQR whiskers, coloured by the offline verdict;
    the baseline's IQR band, its median (dashed) and the gate's ms-equivalent threshold (baseline median x
    (1 + min_effect), at unchanged eager time; dotted red)."""
    from plotly.subplots import make_subplots

    rows = max(1, math.ceil(len(cells) / columns))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[name for name, _, _ in cells],
                        horizontal_spacing=0.06, vertical_spacing=min(0.12, 0.5 / rows))
    for i, (_, series, base) in enumerate(cells):
        row, col = i // columns + 1, i % columns + 1
        labels = [label.split(" ")[0] for label, _, _ in series]
        if base is not None:
            thr = base.median_ms * (1 + min_effect)
            for y, name, line, fill in (
                    ([base.q3_ms] * len(labels), "baseline IQR", {"width": 0}, None),
                    ([base.q1_ms] * len(labels), "baseline IQR", {"width": 0}, "tonexty"),
                    ([base.median_ms] * len(labels), "baseline median", {"color": COLORS["baseline"], "dash": "dash"},
                     None),
                    ([thr] * len(labels), f"+{min_effect:.0%} over the baseline median",
                     {"color": "#c62828", "dash": "dot"}, None)):
                fig.add_scatter(x=labels, y=y, mode="lines", name=name, line=line, fill=fill,
                                fillcolor="rgba(187,222,251,0.7)", legendgroup=name, showlegend=False,
                                hovertemplate=(f"baseline IQR {base.q1_ms:.3f}..{base.q3_ms:.3f} ms<extra></extra>"
                                               if name == "baseline IQR" else f"{name}: %{{y:.3f}} ms<extra></extra>"),
                                row=row, col=col)
        shown = [(label, p, verdict) for label, p, verdict in series if p is not None and math.isfinite(p.median_ms)]
        fig.add_scatter(
            x=[label.split(" ")[0] for label, _, _ in shown], y=[p.median_ms for _, p, _ in shown],
            mode="lines+markers", name="median", showlegend=False, line={"color": "#444", "width": 1},
            marker={"color": [COLORS.get(v, "#444") for _, _, v in shown], "size": 7},
            error_y={"type": "data", "symmetric": False, "color": "#444", "width": 0,
                     "array": [_finite_or_zero(p.q3_ms - p.median_ms) for _, p, _ in shown],
                     "arrayminus": [_finite_or_zero(p.median_ms - p.q1_ms) for _, p, _ in shown]},
            hovertext=[f"{label}: median {p.median_ms:.3f} ms (IQR {p.q1_ms:.3f}..{p.q3_ms:.3f}), "
                       f"{_x(p.speedup)} vs eager, {verdict}" for label, p, verdict in shown],
            hoverinfo="text", row=row, col=col)
        clock = series[-1][1].clock if series and series[-1][1] else "?"
        fig.update_xaxes(type="category", title={"text": f"runs (number), clock {clock}", "font": {"size": 9}},
                         tickfont={"size": 8}, row=row, col=col)
        fig.update_yaxes(title={"text": "ms", "font": {"size": 9}}, tickfont={"size": 9}, row=row, col=col)
    fig.update_annotations(font={"size": 11})
    fig.update_layout(height=230 * rows + 40, margin={"t": 40, "l": 50, "r": 10, "b": 30},
                      plot_bgcolor="#fff", paper_bgcolor="#fff")
    return fig


def _finite_or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def speedup_figure(run: lg.Baseline, batch: int) -> Any:
    """Horizontal bars of speedup vs PyTorch eager, grouped by model (guide 004's comparison as a chart)."""
    import plotly.graph_objects as go

    rows = speedup_rows(run, batch)
    ps = [p for model_rows in rows.values() for p in model_rows]
    labels = [f"{p.model} · {p.target}" for p in ps]
    colors = ["#616161" if p.target == "torch:eager" else ("#2e7d32" if (p.speedup or 0) >= 1 else "#c62828")
              for p in ps]
    fig = go.Figure(go.Bar(
        x=[p.speedup or 0 for p in ps], y=labels, orientation="h", marker={"color": colors},
        text=[f"{_x(p.speedup)}  {p.median_ms:.2f} ms" for p in ps], textposition="outside",
        hovertext=[f"{p.target}: {p.median_ms:.3f} ms, {_x(p.speedup)}" for p in ps], hoverinfo="text"))
    fig.add_vline(x=1.0, line={"color": "#000", "dash": "dash", "width": 1}, annotation_text="1x")
    fig.update_layout(
        title={"text": f"Speedup vs PyTorch eager, batch {batch} ({run.path.name})", "font": {"size": 13}},
        height=120 + 22 * len(ps), margin={"l": 260, "r": 80, "t": 50, "b": 30}, plot_bgcolor="#fff",
        paper_bgcolor="#fff", yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"title": {"text": "speedup (x)"}, "range": [0, max([p.speedup or 0 for p in ps] + [1.0]) * 1.25]})
    return fig


def _svg(figures: Sequence[Any], width: int = 1400) -> str:
    """The figures stacked in one SVG through plotly's static export (kaleido)."""
    parts, y = [], 0
    for fig in figures:
        height = int(fig.layout.height or 400)
        svg = fig.to_image(format="svg", width=width, height=height).decode("utf-8")
        svg = re.sub(r"^<svg ", f'<svg x="0" y="{y}" ', svg[svg.index("<svg"):], count=1)
        parts.append(svg)
        y += height + 16
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{width}" '
            f'height="{y}">\n' + "\n".join(parts) + "\n</svg>\n")


def cmd_plot(folder: Path, out: Path, refs: Sequence[str] | None, base_ref: str | None, patterns: Sequence[str],
             batch: int | None, speed_batch: int, cfg: lg.GateConfig) -> int:
    svg = out.suffix.lower() == ".svg"
    if svg:
        try:
            import kaleido  # noqa: F401  # plotly's static image export
        except ImportError:
            print(f"error: --out {out}: SVG is written by plotly's static export, which needs the 'kaleido' package "
                  f"(pip install kaleido); or write an .html page (opens offline)", file=sys.stderr)
            return 2
    runs = load_series(folder, refs)
    if not runs:
        print(f"no saved runs in {folder}")
        return 1
    base_run = None
    if base_ref:
        try:
            base_run = lg.load_run(lg.resolve_run(folder, base_ref))
        except FileNotFoundError as exc:
            print(f"note: no baseline band ({exc})", file=sys.stderr)
    if base_run and all(r.path != base_run.path for r in runs):
        runs = sorted([*runs, base_run], key=lambda r: r.path.name)
    cells = cell_series(runs, base_run, patterns, batch, cfg)
    latest = runs[-1]
    figures = [speedup_figure(latest, speed_batch), history_figure(cells, cfg.min_effect)]
    out.parent.mkdir(parents=True, exist_ok=True)
    if svg:
        out.write_text(_svg(figures))
    else:
        out.write_text(_html_page(runs, base_run, latest, speed_batch, figures, cfg))
    print(f"wrote {out}: {len(cells)} cell charts over {len(runs)} runs"
          + (f", baseline band from {base_run.path.name}" if base_run else "") + f"; speedup chart of "
          f"{latest.path.name} at batch {speed_batch}")
    return 0


def _html_page(runs: list[lg.Baseline], base_run: lg.Baseline | None, latest: lg.Baseline, batch: int,
               figures: Sequence[Any], cfg: lg.GateConfig) -> str:
    from export_harness.converters.report.html_report import plot_page

    rows = speedup_rows(latest, batch)
    targets = sorted({p.target for ps in rows.values() for p in ps}, key=lambda t: (t != "torch:eager", t))
    table = ['<table class="history"><tr><th>model</th>' + "".join(f"<th>{_esc(t)}</th>" for t in targets) + "</tr>"]
    for model, ps in rows.items():
        by_t = {p.target: p for p in ps}
        cells = []
        for t in targets:
            p = by_t.get(t)
            if p is None:
                cells.append("<td>-</td>")
                continue
            cls = "eager" if t == "torch:eager" else ("fast" if (p.speedup or 0) >= 1 else "slow")
            cells.append(f'<td class="{cls}">{p.median_ms:.2f} ms<br><b>{_x(p.speedup)}</b></td>')
        table.append(f"<tr><th>{_esc(model)}</th>{''.join(cells)}</tr>")
    table.append("</table>")
    run_list = "".join(f"<li>{_esc(r.path.name)} - {_esc(r.datetime[:19])} - commit {_esc(run_label(r))}</li>"
                       for r in runs)
    legend = " ".join(f'<span style="color:{c}">&#9679; {k}</span>' for k, c in COLORS.items()
                      if k not in ("n/a", "reference"))
    speedup, grid = (fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
                     for fig in figures)
    body = f"""
<p class="history-note">Machine folder {_esc(latest.path.parent.name)}; {len(runs)} runs; baseline band from
{_esc(base_run.path.name) if base_run else "none"}. Times are per call on each benchmark's clock (thread CPU time
with one thread in-process, else wall). The gate judges ratio-to-eager (min effect {cfg.min_effect:.0%}, noise-aware,
re-measured in pytest); the red dotted line is its ms equivalent at unchanged eager time.</p>
<h2>Speedup vs PyTorch eager (batch {batch}, run {_esc(latest.path.name)})</h2>
{''.join(table)}
<div class="plot">{speedup}</div>
<h2>Median per cell over runs</h2>
<p class="history-note">Points: median, whiskers: IQR; blue band: baseline IQR, dashed: baseline median. {legend}</p>
<div class="plot">{grid}</div>
<h2>Runs</h2><ul>{run_list}</ul>
"""
    return plot_page("Latency history", body)


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export_harness.converters.report.latency_history",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="default baselines/benchmarks")
    parser.add_argument("--machine", default=None, help="machine folder (default: this machine kind's)")
    parser.add_argument("--config", default=None,
                        help="gate thresholds TOML layered over converters/defaults/latency.toml")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="saved runs per machine folder")
    p_cmp = sub.add_parser("compare", help="compare two runs benchmark by benchmark")
    p_cmp.add_argument("a")
    p_cmp.add_argument("b")
    p_cmp.add_argument("--fail", action="store_true", help="exit 1 if any suspected regression (B slower than A)")
    p_ser = sub.add_parser("series", help="median per benchmark across runs")
    p_ser.add_argument("runs", nargs="*", help="run references (default: all)")
    p_spd = sub.add_parser("speedup", help="guide-004 style speedup table of one run")
    p_spd.add_argument("run", nargs="?", default="latest")
    p_spd.add_argument("--format", choices=("text", "markdown"), default="text")
    p_plot = sub.add_parser("plot", help="write an HTML or SVG history plot")
    p_plot.add_argument("runs", nargs="*", help="run references (default: all)")
    p_plot.add_argument("--out", type=Path, default=Path("latency-history.html"), help=".html or .svg")
    p_plot.add_argument("--baseline", default="baseline", help="run drawn as the band (default: 'baseline')")
    p_plot.add_argument("--speedup-batch", type=int, default=1)
    for p in (p_cmp, p_ser, p_plot):
        p.add_argument("-k", dest="patterns", action="append", default=[], help="substring or glob of ids")
    for p in (p_cmp, p_ser, p_plot, p_spd):
        p.add_argument("--batch", type=int, default=None if p is not p_spd else 1)
    args = parser.parse_args(argv)
    cfg = lg.GateConfig.from_mapping(lg.load_toml(args.config).get("gate", {}))
    if args.command == "list":
        return cmd_list(args.storage, args.machine)
    folder = machine_dir(args.storage, args.machine)
    try:
        if args.command == "compare":
            return cmd_compare(folder, args.a, args.b, args.patterns, args.batch, args.fail, cfg)
        if args.command == "series":
            return cmd_series(folder, args.runs or None, args.patterns, args.batch)
        if args.command == "speedup":
            return cmd_speedup(folder, args.run, args.batch, args.format)
        return cmd_plot(folder, args.out, args.runs or None, args.baseline, args.patterns, args.batch,
                        args.speedup_batch, cfg)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
