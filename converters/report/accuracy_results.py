"""The accuracy results page (``docs/results/accuracy-results.md``) from the committed ``baselines/accuracy.json``.

Three tables: the FP32 metric of every model's reference weights on its eval split (with the fit time of the cached
weights when a harness cache is given), every stored cell and metric against its budget and declaration, and a
TFLite pivot (model x TFLite target: drop of the primary metric, or the declared failure). Budgets and declarations
come from ``Budgets`` (the accuracy suite's own resolution); nothing here judges a cell. No pytest here.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from export_harness.converters.checks.accuracy import Budgets, load_baselines
from export_harness.converters.expectations import Expectations

COMMAND = "python -m export_harness.converters.report.docs_results"
ROOT = Path(__file__).resolve().parents[2]


def _shown(path: Path | str) -> str:
    """A path as the page shows it: relative to the repository, ``~`` for the home directory."""
    return str(path).replace(f"{ROOT}/", "").replace(str(Path.home()), "~")


def split_cell(cell: str) -> tuple[str, str]:
    """``MODEL-TARGET`` -> (model, target): the target starts after the last ``-`` before its format's ``:``."""
    head = cell.partition(":")[0]
    cut = head.rfind("-")
    return cell[:cut], cell[cut + 1:]


def declaration(expectations: Expectations, cell: str) -> tuple[str, str] | None:
    """(reason, the CPUs it holds on: "" for all) of the xfail that declares ``cell``'s accuracy gate failing on
    *some* CPU, or None (a page must not depend on the CPU that renders it)."""
    found = expectations.declared_anywhere(cell, "accuracy")
    if found is None or found.kind != "xfail":
        return None
    cpus = " and ".join([*(f"without {' / '.join(found.cpu_lacks)}",) * bool(found.cpu_lacks),
                         *(f"with {' + '.join(found.cpu_has)}",) * bool(found.cpu_has)])
    return found.reason, cpus


def short_reason(text: str, limit: int = 100) -> str:
    """A declaration's reason without its parentheses, up to its first ``;``, at most ``limit`` characters."""
    while True:
        shorter = re.sub(r"\s*\([^()]*\)", "", text)
        if shorter == text:
            break
        text = shorter
    first = text.split("; ")[0].strip()
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0] + " ..."
    return first.replace("|", "\\|")


def _declared_text(found: tuple[str, str] | None) -> str:
    if found is None:
        return ""
    reason, cpus = found
    where = f" (CPUs {cpus})" if cpus else ""
    return f"strict xfail{where}: {short_reason(reason)}"


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"


def _budget_text(budgets: Budgets, model: str, target: str, metric: str) -> str:
    budget = budgets.budget(model, target, metric)
    text = f"{budget.threshold:g}" + ("" if budget.drop == "abs" else " % rel")
    return text + (" (override)" if budget.source.startswith("override") else "")


def weights_records(cache: Path) -> dict[str, dict[str, Any]]:
    """The newest ``<cache>/weights/*.json`` record per model, its file time as ``_trained`` ({} when none)."""
    newest: dict[str, tuple[float, dict[str, Any]]] = {}
    for path in (cache / "weights").glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        model, mtime = record.get("model"), path.stat().st_mtime
        if isinstance(model, str) and (model not in newest or mtime > newest[model][0]):
            newest[model] = (mtime, {**record, "_trained": time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))})
    return {model: record for model, (_, record) in newest.items()}


def model_table(cells: dict[str, Any], cache: Path | None = None) -> str:
    """Per model and metric: FP32 metric on the eval split and n (from ``MODEL-onnx:fp32``, else any cell)."""
    reference: dict[str, dict[str, Any]] = {}
    for cell in sorted(cells):
        model, target = split_cell(cell)
        if model not in reference or target == "onnx:fp32":
            reference[model] = cells[cell].get("metrics", {})
    records = weights_records(cache) if cache is not None else {}
    header = ["model", "metric", "FP32 % (eval)", "n"]
    if cache is not None:
        header += ["chance %", "recipe", "fit s", "trained (UTC)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model, metrics in sorted(reference.items()):
        record = records.get(model, {})
        for name, m in metrics.items():
            row = [f"`{model}`", name, _pct(m["fp32"]), str(m.get("n", "-"))]
            if cache is not None:
                chance = record.get("chance", {}).get(name)
                seconds = record.get("train_seconds")
                row += [_pct(chance) if chance is not None else "-", f"`{record['recipe']}`" if "recipe" in record
                        else "-", f"{seconds:g}" if isinstance(seconds, int | float) else "-",
                        record.get("_trained", "-")]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def cell_table(cells: dict[str, Any], budgets: Budgets, expectations: Expectations) -> str:
    """Every stored cell and metric: FP32 %, method %, drop pp, 95% CI pp, budget pp, declared expected failure."""
    lines = ["| cell | metric | FP32 % | method % | drop pp | 95% CI pp | budget pp | declared |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in sorted(cells):
        model, target = split_cell(cell)
        declared = _declared_text(declaration(expectations, cell))
        for name, m in cells[cell].get("metrics", {}).items():
            low, high = m["ci"]
            lines.append(f"| `{cell}` | {name} | {_pct(m['fp32'])} | {_pct(m['method'])} | {m['drop']:+.2f} | "
                         f"{low:+.2f}..{high:+.2f} | {_budget_text(budgets, model, target, name)} | {declared} |")
    return "\n".join(lines) + "\n"


def unmeasured_declared(cells: dict[str, Any], expectations: Expectations) -> dict[str, list[str]]:
    """Declared cells (over the stored models x stored targets) with no stored metric, grouped by declaration: they
    fail before a metric exists (export, calibration, runtime defect)."""
    models = sorted({split_cell(c)[0] for c in cells})
    targets = sorted({split_cell(c)[1] for c in cells})
    out: dict[str, list[str]] = {}
    for model in models:
        for target in targets:
            cell = f"{model}-{target}"
            found = declaration(expectations, cell)
            if cell not in cells and found is not None:
                out.setdefault(_declared_text(found), []).append(cell)
    return out


def tflite_pivot(cells: dict[str, Any], expectations: Expectations) -> str:
    """Model x TFLite target: drop (pp) of the model's primary (first) metric, or the declared failure. Variant
    copies (``...@opsetN``, ``...@guide-int8-opsetN``) stay in the cell table only."""
    models = sorted({split_cell(c)[0] for c in cells})
    targets = sorted({t for t in (split_cell(c)[1] for c in cells) if t.startswith("tflite:") and "@" not in t},
                     key=lambda t: (t.partition("[")[2], t))
    lines = ["| model | primary metric | " + " | ".join(f"`{t}`" for t in targets) + " |",
             "| --- | --- |" + " --- |" * len(targets)]
    for model in models:
        primary = next((next(iter(c["metrics"]), None) for k, c in sorted(cells.items())
                        if split_cell(k)[0] == model and c.get("metrics")), None)
        row = [f"`{model}`", primary or "-"]
        for target in targets:
            cell = f"{model}-{target}"
            found = declaration(expectations, cell)
            metric = cells.get(cell, {}).get("metrics", {}).get(primary or "")
            parts = [f"{metric['drop']:+.2f}"] if metric else []
            if found is not None:
                parts.append(f"declared: {short_reason(found[0], 60)}"
                             + (f" ({found[1]})" if found[1] else ""))
            row.append("; ".join(parts) or "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def accuracy_page(baseline: Path, budgets: Budgets, expectations: Expectations, cache: Path | None = None) -> str:
    """The whole page: models, cells, TFLite pivot, with where each number came from."""
    cells = load_baselines(baseline)
    missing = unmeasured_declared(cells, expectations)
    command = f"{COMMAND} --accuracy-baseline {_shown(baseline)}" + (f" --cache {_shown(cache)}" if cache else "")
    fit = (" Chance, recipe and fit seconds (`train_seconds`: the cold fit that produced the cached weights, timed "
           "in whatever run trained them, so under that run's load) come from the newest `weights/*.json` per model "
           "in the harness cache; `-` where the cache has no record of that model (a model "
           "sharing another's weights has none)." if cache is not None else "")
    parts = [
        "# Accuracy results (committed baselines)", "",
        f"Generated by `{command}` from the stored cells of `{_shown(baseline)}` (written by "
        "`pytest suites/test_accuracy.py --accuracy-update-baselines`) and the budgets in force "
        f"(`{_shown(budgets.source)}`, resolved by the accuracy suite's own `Budgets`). Metrics in %, drops and CIs in "
        "percentage points against the FP32 PyTorch model on the same eval split (95% paired bootstrap). Never "
        "edit by hand.", "",
        "## Reference weights: FP32 metric on the eval split", "",
        "From each model's `MODEL-onnx:fp32` cell (else its first stored cell)." + fit, "",
        model_table(cells, cache),
        "## Every stored cell", "",
        f"{len(cells)} stored cells. `budget pp` is the budget the suite applies to that metric (`override`: a "
        "per-model entry with a written reason); `declared` names the cell's strict xfail in the expectations file (a "
        "CPU condition says on which CPUs the declaration holds; elsewhere the cell must pass). A cell fails its "
        "budget only when the drop exceeds it **and** the CI excludes 0.", "",
        cell_table(cells, budgets, expectations),
    ]
    if missing:
        count = sum(map(len, missing.values()))
        parts += [f"Declared cells with no stored metric ({count}; they fail before a metric exists: export, "
                  "calibration, runtime defect), by declaration:", "",
                  *(f"- {text}: " + ", ".join(f"`{c}`" for c in group) for text, group in missing.items()), ""]
    parts += ["## TFLite methods: drop of the primary metric (pp)", "",
              "`-`: not stored (not run, or skipped). A declared cell that also has a stored metric shows both. "
              "Variant copies of the targets (`@opsetN`, `@guide-int8-opsetN`) are in the cell table only.", "",
              tflite_pivot(cells, expectations)]
    return "\n".join(parts)
