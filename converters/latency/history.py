"""Benchmark history over saved pytest-benchmark runs: list, compare two, show a series, plot, speedup table.

    python -m export_harness.converters.latency.history list
    python -m export_harness.converters.latency.history compare baseline latest [-k onnx] [--fail]
    python -m export_harness.converters.latency.history series [-k sign_gru] [--batch 1]
    python -m export_harness.converters.latency.history speedup [RUN] [--batch 1] [--format markdown]
    python -m export_harness.converters.latency.history plot [--out latency-history.html|.svg] [--baseline baseline]

Runs live in ``STORAGE/<machine id>/NNNN_name.json`` (``--storage``, default ``baselines/benchmarks``;
``--machine``, default this machine's kind). A run reference is a path, a number (``3``), ``latest``, ``-1``,
``-2`` ... or a name (``baseline`` = the newest ``NNNN_baseline.json``). ``compare`` judges each benchmark with
the same statistics as the in-pytest gate (``converters/latency/gate.py``) but cannot re-measure, so a suspect is
shown as ``regression?``; the authoritative gate is ``pytest suites/test_latency.py --latency-gate``.
Plots are self-contained SVG or HTML (no plotting library).
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export_harness.converters.latency import gate as lg
from export_harness.converters.latency import measure as lat
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
    mine = storage / lat.machine_id()
    if mine.is_dir():
        return mine
    present = sorted(p for p in storage.iterdir() if p.is_dir()) if storage.is_dir() else []
    if len(present) == 1:
        print(f"note: no runs for this machine kind ({lat.machine_id()}); using {present[0].name}", file=sys.stderr)
        return present[0]
    raise SystemExit(f"no runs for this machine kind ({lat.machine_id()}) under {storage}; machine folders: "
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
        print(f"{folder}{'  (this machine kind)' if folder.name == lat.machine_id() else ''}")
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


# --------------------------------------------------------------------------------------------------- SVG

COLORS = {"ok": "#2e7d32", "improved": "#1565c0", "regression?": "#c62828", "unstable": "#ef6c00",
          "foreign": "#6a1b9a", "transient": "#9e9d24", "n/a": "#616161", "incomparable": "#616161",
          "baseline": "#1565c0", "reference": "#616161"}


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def cell_chart(name: str, series: list[tuple[str, Point | None, str]], base: Point | None, min_effect: float,
               x0: float = 0, y0: float = 0, w: float = 330, h: float = 170) -> str:
    """One small multiple: median ms per run with IQR whiskers, the baseline's IQR band, its median and the
    gate's ms-equivalent threshold (baseline median x (1 + min_effect), at unchanged eager time)."""
    left, right, top, bottom = 56, 8, 30, 30
    pw, ph = w - left - right, h - top - bottom
    vals = [v for _, p, _ in series if p for v in (p.q1_ms, p.q3_ms, p.median_ms) if math.isfinite(v)]
    if base:
        vals += [v for v in (base.q1_ms, base.q3_ms, base.median_ms * (1 + min_effect)) if math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or hi * 0.05 or 1.0
    lo, hi = max(0.0, lo - pad), hi + pad
    n = max(1, len(series))

    def x(i: int) -> float:
        return x0 + left + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return y0 + top + ph * (1 - (v - lo) / (hi - lo))

    out = [f'<g class="cell"><rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fff" stroke="#ddd"/>',
           f'<text x="{x0 + 6}" y="{y0 + 14}" font-size="11" font-weight="bold">{_esc(name)}</text>']
    if base:
        out.append(f'<rect x="{x0 + left}" y="{y(base.q3_ms):.1f}" width="{pw}" '
                   f'height="{max(0.5, y(base.q1_ms) - y(base.q3_ms)):.1f}" fill="#bbdefb" opacity="0.7">'
                   f'<title>baseline IQR {base.q1_ms:.3f}..{base.q3_ms:.3f} ms</title></rect>')
        out.append(f'<line x1="{x0 + left}" x2="{x0 + left + pw}" y1="{y(base.median_ms):.1f}" '
                   f'y2="{y(base.median_ms):.1f}" stroke="{COLORS["baseline"]}" stroke-dasharray="4 3"/>')
        thr = base.median_ms * (1 + min_effect)
        out.append(f'<line x1="{x0 + left}" x2="{x0 + left + pw}" y1="{y(thr):.1f}" y2="{y(thr):.1f}" '
                   f'stroke="#c62828" stroke-dasharray="2 3"><title>+{min_effect:.0%} over the baseline median'
                   f'</title></line>')
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        out.append(f'<text x="{x0 + left - 4}" y="{y(v) + 3:.1f}" font-size="9" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text x="{x0 + 4}" y="{y0 + top + ph / 2:.1f}" font-size="9" '
               f'transform="rotate(-90 {x0 + 10} {y0 + top + ph / 2:.1f})">ms</text>')
    prev = None
    for i, (label, p, verdict) in enumerate(series):
        out.append(f'<text x="{x(i):.1f}" y="{y0 + h - 16}" font-size="8" text-anchor="middle">'
                   f'{_esc(label.split(" ")[0])}</text>')
        if p is None or not math.isfinite(p.median_ms):
            prev = None
            continue
        if prev is not None:
            out.append(f'<line x1="{prev[0]:.1f}" y1="{prev[1]:.1f}" x2="{x(i):.1f}" y2="{y(p.median_ms):.1f}" '
                       f'stroke="#444" stroke-width="1"/>')
        if math.isfinite(p.q1_ms) and math.isfinite(p.q3_ms):
            out.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(p.q1_ms):.1f}" y2="{y(p.q3_ms):.1f}" '
                       f'stroke="#444"/>')
        color = COLORS.get(verdict, "#444")
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(p.median_ms):.1f}" r="3.5" fill="{color}"><title>'
                   f'{_esc(label)}: median {p.median_ms:.3f} ms (IQR {p.q1_ms:.3f}..{p.q3_ms:.3f}), '
                   f'{_x(p.speedup)} vs eager, {verdict}</title></circle>')
        prev = (x(i), y(p.median_ms))
    out.append(f'<text x="{x0 + w - 6}" y="{y0 + h - 4}" font-size="8" text-anchor="end" fill="#666">'
               f'runs (number), clock {series[-1][1].clock if series[-1][1] else "?"}</text></g>')
    return "\n".join(out)


def speedup_chart(run: lg.Baseline, batch: int, x0: float = 0, y0: float = 0, w: float = 900) -> tuple[str, float]:
    """Horizontal bars of speedup vs PyTorch eager, grouped by model (guide 004's comparison as a chart)."""
    rows = speedup_rows(run, batch)
    bar, gap, left = 14, 10, 250
    height = 40 + sum(len(ps) * bar + gap + 16 for ps in rows.values())
    top_speed = max([p.speedup or 0 for ps in rows.values() for p in ps] + [1.0]) * 1.1
    out = [f'<g class="speedup"><rect x="{x0}" y="{y0}" width="{w}" height="{height}" fill="#fff" stroke="#ddd"/>',
           f'<text x="{x0 + 8}" y="{y0 + 18}" font-size="13" font-weight="bold">Speedup vs PyTorch eager, batch '
           f'{batch} ({_esc(run.path.name)})</text>']

    def sx(v: float) -> float:
        return x0 + left + (w - left - 80) * v / top_speed

    one = sx(1.0)
    cursor = y0 + 34
    for model, ps in rows.items():
        out.append(f'<text x="{x0 + 8}" y="{cursor + 10}" font-size="11" font-weight="bold">{_esc(model)}</text>')
        cursor += 14
        for p in ps:
            s = p.speedup or 0
            color = "#616161" if p.target == "torch:eager" else ("#2e7d32" if s >= 1 else "#c62828")
            out.append(f'<text x="{x0 + left - 6}" y="{cursor + bar - 3}" font-size="10" text-anchor="end">'
                       f'{_esc(p.target)}</text>')
            out.append(f'<rect x="{sx(0):.1f}" y="{cursor}" width="{max(1, sx(s) - sx(0)):.1f}" height="{bar - 3}" '
                       f'fill="{color}"><title>{_esc(p.target)}: {p.median_ms:.3f} ms, {_x(s)}</title></rect>')
            out.append(f'<text x="{sx(s) + 4:.1f}" y="{cursor + bar - 4}" font-size="10">{_x(s)}  '
                       f'{p.median_ms:.2f} ms</text>')
            cursor += bar
        cursor += gap
    out.append(f'<line x1="{one:.1f}" x2="{one:.1f}" y1="{y0 + 28}" y2="{y0 + height - 6}" stroke="#000" '
               f'stroke-dasharray="3 3"/><text x="{one + 3:.1f}" y="{y0 + 30}" font-size="9">1x</text></g>')
    return "\n".join(out), height


def history_svg(runs: list[lg.Baseline], base_run: lg.Baseline | None, patterns: Sequence[str],
                batch: int | None, cfg: lg.GateConfig, columns: int = 4) -> tuple[str, int]:
    """All cells' small multiples in one SVG; returns (svg, number of charts)."""
    per_run = [select(points(r), patterns, batch) for r in runs]
    base_pts = points(base_run) if base_run else {}
    names = sorted({n for pts in per_run for n in pts}, key=lambda n: next(p[n] for p in per_run if n in p).name)
    w, h = 330, 170
    charts = []
    for i, name in enumerate(names):
        base = base_pts.get(name)
        series = []
        for run, pts in zip(runs, per_run, strict=True):
            p = pts.get(name)
            verdict = "n/a"
            if p is not None and base is not None:
                verdict = "baseline" if run.path == base_run.path else (
                    "reference" if p.target == "torch:eager" else offline_verdict(p, base, cfg))
            series.append((run_label(run), p, verdict))
        first = next(p[name] for p in per_run if name in p)
        charts.append(cell_chart(short_id(first), series, base, cfg.min_effect,
                                 x0=(i % columns) * (w + 8), y0=(i // columns) * (h + 8), w=w, h=h))
    rows = math.ceil(len(names) / columns) if names else 0
    width, height = columns * (w + 8), max(1, rows * (h + 8))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif">\n' + "\n".join(charts) + "\n</svg>"), len(names)


def cmd_plot(folder: Path, out: Path, refs: Sequence[str] | None, base_ref: str | None, patterns: Sequence[str],
             batch: int | None, speed_batch: int, cfg: lg.GateConfig) -> int:
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
    grid, count = history_svg(runs, base_run, patterns, batch, cfg)
    latest = runs[-1]
    chart, chart_h = speedup_chart(latest, speed_batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".svg":
        grid_body = grid.split(">", 1)[1].rsplit("</svg>", 1)[0]
        gw = int(float(grid.split('width="', 1)[1].split('"', 1)[0]))
        gh = int(float(grid.split('height="', 1)[1].split('"', 1)[0]))
        width = max(900, gw)
        out.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{chart_h + 16 + gh}" '
                       f'font-family="sans-serif">\n{chart}\n<g transform="translate(0 {chart_h + 16})">{grid_body}'
                       f'</g>\n</svg>\n')
    else:
        out.write_text(_html_page(runs, base_run, latest, speed_batch, chart, chart_h, grid, cfg))
    print(f"wrote {out}: {count} cell charts over {len(runs)} runs"
          + (f", baseline band from {base_run.path.name}" if base_run else "") + f"; speedup chart of "
          f"{latest.path.name} at batch {speed_batch}")
    return 0


def _html_page(runs: list[lg.Baseline], base_run: lg.Baseline | None, latest: lg.Baseline, batch: int,
               chart: str, chart_h: float, grid: str, cfg: lg.GateConfig) -> str:
    rows = speedup_rows(latest, batch)
    targets = sorted({p.target for ps in rows.values() for p in ps}, key=lambda t: (t != "torch:eager", t))
    table = ["<table><tr><th>model</th>" + "".join(f"<th>{_esc(t)}</th>" for t in targets) + "</tr>"]
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
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>latency history</title>
<style>body{{font-family:sans-serif;margin:20px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} td.fast{{background:#e8f5e9}}
td.slow{{background:#ffebee}} td.eager{{background:#eee}} .note{{color:#555;font-size:12px}}</style></head><body>
<h1>Latency history</h1>
<p class="note">Machine folder {_esc(latest.path.parent.name)}; {len(runs)} runs; baseline band from
{_esc(base_run.path.name) if base_run else "none"}. Times are per call on each benchmark's clock (thread CPU time
with one thread in-process, else wall). The gate judges ratio-to-eager (min effect {cfg.min_effect:.0%}, noise-aware,
re-measured in pytest); the red dotted line is its ms equivalent at unchanged eager time.</p>
<h2>Speedup vs PyTorch eager (batch {batch}, run {_esc(latest.path.name)})</h2>
{''.join(table)}
<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{chart_h}" font-family="sans-serif">{chart}</svg>
<h2>Median per cell over runs</h2>
<p class="note">Points: median, whiskers: IQR; blue band: baseline IQR, dashed: baseline median. {legend}</p>
{grid}
<h2>Runs</h2><ul>{run_list}</ul>
</body></html>
"""


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export_harness.converters.latency.history",
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
