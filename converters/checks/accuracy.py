"""Accuracy gates: a compression method's task-metric drop vs the FP32 PyTorch reference, on real eval data.

The rules that judge one cell's measurement (``export_harness.converters.accuracy.evaluate`` takes it): for every
task metric the FP32 metric, the method's metric, the drop and a paired bootstrap confidence interval of the drop.
The gate:

- **budget** (``baselines/accuracy_budgets.toml``): fails when the drop exceeds the method's threshold (absolute
  percentage points or relative %) *and* the drop's CI excludes zero, so one flipped sample of a small eval set
  is reported, not failed;
- **ratchet** (``baselines/accuracy.json``): fails when the method's metric fell below its stored baseline by
  more than both the stored tolerance and the half-width of the drop's CI, even within budget.

No pytest here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.defaults import default_path, load_layered, require_number
from export_harness.converters.util.files import write_json_atomic
from export_harness.models.proxy_tasks import Arrays, Metric, ProxyTask
from export_harness.models.spec import star_match

DEFAULT_BUDGETS = default_path("accuracy_budgets.toml")


class BudgetError(ValueError):
    """The budgets file is malformed (unknown drop type, override without a reason, ...)."""


@dataclass(frozen=True)
class Budget:
    """Allowed drop of one metric for one cell: ``threshold`` in pp (``abs``) or % of the FP32 metric (``rel``)."""

    method: str
    drop: str
    threshold: float
    reason: str = ""
    source: str = "default"

    def describe(self) -> str:
        unit = "pp" if self.drop == "abs" else "% rel"
        return f"<= {self.threshold:g} {unit} ({self.source})"


_SECTIONS = {"settings", "methods", "models"}
_SETTINGS = {"ratchet_tolerance_pp", "confidence", "bootstrap_resamples", "full_only_models", "full_only_targets"}
_MOVED = ("expected failures and skips are declared in expectations.toml ([[expect]] with "
          "cells = [\"MODEL-TARGET#accuracy\"])")


def _known(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise BudgetError(f"{where} expected a table, got {table!r}")
    unknown = set(table) - allowed
    if unknown:
        raise BudgetError(f"{where} unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")


class Budgets:
    """Budgets per method glob, overridable per model (and metric) with a written reason; xfails per cell."""

    def __init__(self, data: dict[str, Any], source: str = "<dict>") -> None:
        self.source = source
        if "cells" in data or "unmeasured_targets" in data.get("settings", {}):
            raise BudgetError(f"{source}: [cells] / [settings.unmeasured_targets]: {_MOVED}")
        _known(data, _SECTIONS, f"{source}:")
        settings = data.get("settings", {})
        _known(settings, _SETTINGS, f"{source} [settings]:")
        self.ratchet_pp = require_number(settings.get("ratchet_tolerance_pp", 0.5),
                                         f"{source} [settings] ratchet_tolerance_pp", lo=0, error=BudgetError)
        self.confidence = require_number(settings.get("confidence", 0.95), f"{source} [settings] confidence",
                                         lo=0.5, hi=0.999, error=BudgetError)
        self.resamples = require_number(settings.get("bootstrap_resamples", 1000),
                                        f"{source} [settings] bootstrap_resamples", lo=100, integer=True,
                                        error=BudgetError)
        self.full_only: list[str] = list(settings.get("full_only_models", []))
        self.full_only_targets: list[str] = list(settings.get("full_only_targets", []))
        self.methods: dict[str, dict[str, Any]] = data.get("methods", {})
        self.models: dict[str, dict[str, dict[str, Any]]] = data.get("models", {})
        for glob, entry in self.methods.items():
            self._check(entry, f"[methods.{glob!r}]", need_reason=False)
        for model, per in self.models.items():
            for glob, entry in per.items():
                self._check(entry, f"[models.{model}.{glob!r}]", need_reason=True)

    def _check(self, entry: dict[str, Any], where: str, need_reason: bool) -> None:
        _known(entry, {"drop", "threshold", "reason", "metric"}, f"{self.source} {where}:")
        if entry.get("drop", "abs") not in ("abs", "rel"):
            raise BudgetError(f"{self.source} {where}: drop must be 'abs' or 'rel', got {entry.get('drop')!r}")
        if "threshold" in entry or not need_reason:
            # a drop is at most 100 pp (abs) or 100 % of the FP32 metric (rel): a larger budget can never fail
            require_number(entry.get("threshold"), f"{self.source} {where} threshold", lo=0, hi=100,
                           error=BudgetError)
        if need_reason and not str(entry.get("reason", "")).strip():
            raise BudgetError(f"{self.source} {where}: an override needs a written 'reason'")

    def check_names(self, models: Any) -> None:
        """Every ``[models.NAME]`` names a registered model (a typo is an error when the session starts, not a budget
        that silently never applies)."""
        for model in self.models:
            if model not in models:
                raise BudgetError(f"{self.source} [models.{model}]: no model {model!r} is registered")

    @classmethod
    def load(cls, path: str | Path | None = None) -> Budgets:
        """The packaged default budgets with the project file ``path`` (if any) layered over them."""
        data, source = load_layered("accuracy_budgets.toml", path, BudgetError)
        return cls(data, source=source)

    def method_glob(self, target: str) -> str | None:
        """The first method entry naming ``target`` exactly or matching it as a glob (``[`` is literal first)."""
        if target in self.methods:
            return target
        return next((g for g in self.methods if star_match(g, target)), None)

    def full_only_target(self, target: str) -> bool:
        """True when ``target`` runs only with ``--accuracy-full`` (``[settings] full_only_targets`` globs)."""
        return any(star_match(glob, target) for glob in self.full_only_targets)

    def covers(self, target: str) -> bool:
        return self.method_glob(target) is not None

    def budget(self, model: str, target: str, metric: str) -> Budget:
        glob = self.method_glob(target)
        if glob is None:
            raise BudgetError(f"{self.source}: no budget for target {target!r}")
        entry = self.methods[glob]
        budget = Budget(glob, entry.get("drop", "abs"), float(entry["threshold"]), entry.get("reason", ""),
                        f"method {glob}")
        for mglob, override in self.models.get(model, {}).items():
            if star_match(mglob, target) and override.get("metric", metric) == metric:
                budget = Budget(glob, override.get("drop", budget.drop),
                                float(override.get("threshold", budget.threshold)), override["reason"],
                                f"override {model}/{mglob}")
        return budget


@dataclass
class MetricResult:
    """One metric of one cell: FP32 vs method, drop with its bootstrap CI, budget and ratchet verdicts."""

    metric: str
    higher_is_better: bool
    chance: float
    n_units: int
    fp32: float
    method: float
    drop: float
    ci_low: float
    ci_high: float
    budget: Budget
    baseline: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def line(self) -> str:
        unit = "pp" if self.budget.drop == "abs" else "% rel"
        base = "-" if self.baseline is None else f"{self.baseline * 100:.2f}"
        return (f"{self.metric}: fp32 {self.fp32 * 100:.2f} method {self.method * 100:.2f} drop {self.drop:+.2f} "
                f"{unit} (95% CI {self.ci_low:+.2f}..{self.ci_high:+.2f}, n={self.n_units}) budget "
                f"{self.budget.describe()} baseline {base} chance {self.chance * 100:.1f}")


@dataclass
class AccuracyResult:
    """Everything measured for one accuracy cell."""

    model: str
    target: str
    task: str
    metrics: list[MetricResult] = field(default_factory=list)
    artifact_key: str = ""
    artifact_sha256: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    localisation: str = ""
    notes: list[str] = field(default_factory=list)
    measurements: dict[str, str] = field(default_factory=dict)
    """Where each output set came from: ``computed`` now or ``served`` by the measurement cache."""

    @property
    def cell_id(self) -> str:
        return f"{self.model}-{self.target}"

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.metrics)

    def message(self) -> str:
        fails = [f for m in self.metrics for f in m.failures]
        lines = [f"[accuracy] {self.cell_id}: " + ("; ".join(fails) if fails else "passed")]
        lines += ["  " + m.line() for m in self.metrics] + ["  " + n for n in self.notes]
        if self.localisation:
            lines.append(self.localisation)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cell"] = self.cell_id
        out["passed"] = self.passed
        return out


def paired_bootstrap(metric: Metric, ref: Arrays, cand: Arrays, drop_fn: Any, resamples: int, confidence: float,
                     seed: int = 0) -> tuple[float, float]:
    """CI of ``drop_fn(ref_metric, cand_metric)`` resampling the same units for both (paired)."""
    rng = np.random.default_rng(seed)
    n = metric.n_units
    if metric.unit_scores is not None:
        a, b = metric.unit_scores(ref), metric.unit_scores(cand)
        idx = rng.integers(0, n, size=(resamples, n))
        drops = np.array([drop_fn(x, y) for x, y in zip(a[idx].mean(1), b[idx].mean(1), strict=True)])
    else:
        drops = np.empty(resamples)
        for i in range(resamples):
            sel = rng.integers(0, n, size=n)
            drops[i] = drop_fn(metric(ref, sel), metric(cand, sel))
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(drops, alpha)), float(np.quantile(drops, 1.0 - alpha))


def judge_metrics(result: AccuracyResult, task: ProxyTask, ref: Arrays, cand: Arrays, budgets: Budgets,
                  baselines: dict[str, Any] | None = None) -> None:
    """Every task metric of the FP32 outputs ``ref`` and the method's ``cand`` against its budget (the drop's paired
    bootstrap CI must exclude 0) and its stored baseline (the ratchet); appended to ``result``."""
    spec_name, target_name = result.model, result.target
    stored = (baselines or {}).get(result.cell_id, {}).get("metrics", {})
    for metric in task.metrics:
        budget = budgets.budget(spec_name, target_name, metric.name)
        drop_fn = drop_function(budget, metric.higher_is_better)
        fp32, meth = metric(ref), metric(cand)
        low, high = paired_bootstrap(metric, ref, cand, drop_fn, budgets.resamples, budgets.confidence)
        mr = MetricResult(metric.name, metric.higher_is_better, metric.chance, metric.n_units, fp32, meth,
                          drop_fn(fp32, meth), low, high, budget, stored.get(metric.name, {}).get("method"))
        if mr.drop > budget.threshold and low > 0.0:
            mr.failures.append(f"{metric.name} drop {mr.drop:+.2f} exceeds budget {budget.describe()} and its "
                               f"95% CI {low:+.2f}..{high:+.2f} excludes 0")
        elif mr.drop > budget.threshold:
            result.notes.append(f"{metric.name}: drop {mr.drop:+.2f} above budget but within noise "
                                f"(CI {low:+.2f}..{high:+.2f} includes 0): not a regression")
        stored_fp32 = stored.get(metric.name, {}).get("fp32")
        if mr.baseline is not None and stored_fp32 is not None and abs(stored_fp32 - fp32) > 1e-6:
            # Another reference model (weights trained on another CPU kind): its numbers are no baseline for these.
            result.notes.append(f"{metric.name}: stored baseline measured on other reference weights (FP32 "
                                f"{stored_fp32 * 100:.2f} there, {fp32 * 100:.2f} here): not compared; re-record "
                                "with --accuracy-update-baselines")
        elif mr.baseline is not None:
            fell = (mr.baseline - meth) * 100.0 * (1.0 if metric.higher_is_better else -1.0)
            # The same eval units decide the metric now and in the baseline run, so the paired CI of this run's drop
            # says how far one method's metric moves when a few units flip (int8 kernels differ by CPU, dynamic
            # activation scales by batch): a fall inside it is noise, as for the budget.
            noise = (high - low) / 2.0
            tolerance = max(budgets.ratchet_pp, noise)
            if fell > tolerance:
                mr.failures.append(f"ratchet: {metric.name} {meth * 100:.2f} fell {fell:.2f} pp below the stored "
                                   f"baseline {mr.baseline * 100:.2f} (tolerance {tolerance:.2f} pp = max("
                                   f"{budgets.ratchet_pp:g}, CI half-width {noise:.2f}); update with "
                                   "--accuracy-update-baselines if intended)")
            elif fell > budgets.ratchet_pp:
                result.notes.append(f"{metric.name}: {fell:.2f} pp below the stored baseline, within this run's "
                                    f"noise (CI half-width {noise:.2f} pp): not a regression")
        else:
            result.notes.append(f"{metric.name}: no stored baseline (record with --accuracy-update-baselines)")
        result.metrics.append(mr)


def drop_function(budget: Budget, higher_is_better: bool) -> Any:
    sign = 1.0 if higher_is_better else -1.0
    if budget.drop == "abs":
        return lambda ref, cand: sign * (ref - cand) * 100.0
    return lambda ref, cand: sign * (ref - cand) / max(abs(ref), 1e-12) * 100.0


# ------------------------------------------------------------------------------------------------- baselines


def load_baselines(path: str | Path) -> dict[str, Any]:
    """The stored cells of an accuracy baselines file; {} when it does not exist yet (created on first record)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BudgetError(f"{path}: damaged accuracy baselines, not readable JSON ({exc}); restore it from git or "
                          f"re-record with --accuracy-update-baselines") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, dict):
        raise BudgetError(f"{path}: damaged accuracy baselines, no 'cells' table in it")
    return cells


def baseline_entry(result: AccuracyResult) -> dict[str, Any]:
    return {"task": result.task, "artifact_sha256": result.artifact_sha256,
            "metrics": {m.metric: {"fp32": round(m.fp32, 6), "method": round(m.method, 6), "drop": round(m.drop, 4),
                                   "ci": [round(m.ci_low, 4), round(m.ci_high, 4)], "n": m.n_units}
                        for m in result.metrics}}


def update_baselines(entries: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Merge ``entries`` (cell id -> baseline_entry) into the baselines file (created with its folder), atomically."""
    path = Path(path)
    cells = load_baselines(path)
    cells.update(entries)
    data = {"_comment": "Accuracy baselines per cell (metric values in [0, 1]); update with "
                        "`pytest --accuracy-update-baselines`.",
            "cells": dict(sorted(cells.items()))}
    return write_json_atomic(path, data)
