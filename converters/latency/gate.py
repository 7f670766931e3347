"""Noise-aware latency regression gate: ratio-to-eager against a stored baseline, confirmed by re-measurement.

No pytest here. The quantity gated is the per-round ratio ``artifact time / PyTorch eager time`` measured in
the same session, calls interleaved (``export_harness.converters.latency.timing.InterleavedRounds``). What the shared
machine does to both cancels in the ratio; a slower artifact (or a faster PyTorch) moves it.

A benchmark is a **suspected regression** when its median ratio is slower than the baseline's by more than
both the minimum effect (``min_effect``, default 15%) and the measured noise (half-width of a bootstrap
confidence interval of that slowdown), and a one-sided Mann-Whitney U test over the rounds agrees
(``p < alpha``, as asv does). Anything significantly slower than ``remeasure_above`` is **re-measured once**;
the build fails (``regression``) only if the pooled rounds of both measurements are a suspect *and* the
re-measurement alone confirms at least ``confirm_fraction`` of the minimum effect; otherwise ``transient``.
A benchmark whose own round-to-round variation is too high (relative IQR of the ratio above ``max_spread``),
or whose confidence interval is too wide to resolve the minimum effect (``noise > max_noise``), is reported
``unstable`` instead of failing (as OpenVINO does).
Thresholds live in ``[gate]`` of ``converters/defaults/latency.toml`` (a project's ``baselines/latency.toml`` is
layered over it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.defaults import check_numbers, default_path, load_layered
from export_harness.converters.latency.stats import LatencyStats
from export_harness.models.spec import star_match

DEFAULT_CONFIG = default_path("latency.toml")


@dataclass(frozen=True)
class GateConfig:
    """Gate thresholds (``[gate]`` of ``converters/defaults/latency.toml``); every field documented there."""

    min_effect: float = 0.15
    alpha: float = 0.002
    confidence: float = 0.99
    max_noise: float = 0.10
    max_spread: float = 0.25
    max_contention: float = 1.25
    max_between: float = 0.06
    baseline_sessions: int = 3
    remeasure: bool = True
    remeasure_above: float = 0.10
    confirm_fraction: float = 0.5
    bootstrap_resamples: int = 2000
    min_rounds: int = 8
    machine_mismatch: str = "report"
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "[gate]")
        if not 0 < self.min_effect < 10:
            raise ValueError(f"gate.min_effect must be a fraction (0.15 = 15%), got {self.min_effect}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"gate.alpha must be in (0, 0.5), got {self.alpha}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"gate.confidence must be in (0.5, 1), got {self.confidence}")
        if self.machine_mismatch not in ("report", "gate", "error"):
            raise ValueError(f"gate.machine_mismatch must be report, gate or error, got {self.machine_mismatch!r}")

    @property
    def resolution(self) -> float:
        """The smallest slowdown the gate vouches to catch: ``min_effect`` plus twice the between-session spread it
        tolerates (``max_between``), since a fresh process's memory layout alone moves a ratio by up to that much
        (27% with the packaged settings)."""
        return self.min_effect + 2 * self.max_between

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GateConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown [gate] keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


def load_toml(path: str | Path | None = None) -> dict[str, Any]:
    """The packaged ``latency.toml`` with the project file ``path`` (if any) layered over it."""
    return load_layered("latency.toml", path)[0]


# ------------------------------------------------------------------------------------------- statistics


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided Mann-Whitney U p-value for "x tends to be larger than y" (normal approximation, ties and
    continuity corrected). Rank-based, so a few outlier rounds cannot make or break it."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        return 1.0
    both = np.concatenate([a, b])
    ranks = _rankdata(both)
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    _, counts = np.unique(both, return_counts=True)
    tie = float(((counts ** 3) - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1)))
    if var <= 0:
        return 0.5 if u == n1 * n2 / 2.0 else (0.0 if u > n1 * n2 / 2.0 else 1.0)
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _rankdata(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < values.size:
        j = i
        while j + 1 < values.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def bootstrap_slowdown(current: Sequence[float], baseline: Sequence[float], confidence: float,
                       resamples: int, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``median(current) / median(baseline) - 1`` (rounds resampled independently)."""
    cur, base = np.asarray(current, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    rng = np.random.default_rng(seed)
    med_c = np.median(cur[rng.integers(0, cur.size, (resamples, cur.size))], axis=1)
    med_b = np.median(base[rng.integers(0, base.size, (resamples, base.size))], axis=1)
    lo, hi = np.percentile(med_c / med_b - 1.0, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def rel_iqr(values: Sequence[float]) -> float:
    """Interquartile range over median: the benchmark's own round-to-round variation."""
    q1, med, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else math.inf


# ---------------------------------------------------------------------------------------------- verdicts


@dataclass
class Comparison:
    """One current-vs-baseline comparison of per-round ratios."""

    current_ratio: float
    baseline_ratio: float
    slowdown: float
    """``current_ratio / baseline_ratio - 1``: +0.20 is 20% slower relative to eager than the baseline."""
    ci_low: float
    ci_high: float
    noise: float
    """Half-width of the bootstrap CI of ``slowdown``: how precisely this run pins the slowdown down."""
    p_slower: float
    p_faster: float
    current_spread: float
    baseline_spread: float
    rounds: tuple[int, int]
    suspected: bool = False
    improved: bool = False
    unstable_reasons: list[str] = field(default_factory=list)

    @property
    def unstable(self) -> bool:
        return bool(self.unstable_reasons)

    def describe(self) -> str:
        return (f"ratio-to-eager {self.current_ratio:.3f} vs baseline {self.baseline_ratio:.3f}: "
                f"{self.slowdown:+.1%} (CI {self.ci_low:+.1%}..{self.ci_high:+.1%}, noise ±{self.noise:.1%}, "
                f"Mann-Whitney p={self.p_slower:.2g}, spread {self.current_spread:.1%}/{self.baseline_spread:.1%}, "
                f"rounds {self.rounds[0]}/{self.rounds[1]})")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()}


def compare(current: Sequence[float], baseline: Sequence[float], cfg: GateConfig) -> Comparison:
    """Compare per-round ratios of the current run with the baseline's, without re-measuring."""
    cur, base = np.asarray(current, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if cur.size < 2 or base.size < 2:
        raise ValueError(f"need at least 2 rounds on each side, got {cur.size} and {base.size}")
    cur_ratio, base_ratio = float(np.median(cur)), float(np.median(base))
    slowdown = cur_ratio / base_ratio - 1.0
    lo, hi = bootstrap_slowdown(cur, base, cfg.confidence, cfg.bootstrap_resamples, cfg.seed)
    noise = (hi - lo) / 2.0
    result = Comparison(
        current_ratio=cur_ratio, baseline_ratio=base_ratio, slowdown=slowdown, ci_low=lo, ci_high=hi, noise=noise,
        p_slower=mann_whitney_greater(cur, base), p_faster=mann_whitney_greater(base, cur),
        current_spread=rel_iqr(cur), baseline_spread=rel_iqr(base), rounds=(int(cur.size), int(base.size)),
    )
    result.suspected = slowdown > max(cfg.min_effect, noise) and result.p_slower < cfg.alpha
    result.improved = -slowdown > max(cfg.min_effect, noise) and result.p_faster < cfg.alpha
    if result.current_spread > cfg.max_spread:
        result.unstable_reasons.append(f"round-to-round spread {result.current_spread:.0%} > {cfg.max_spread:.0%}")
    if result.baseline_spread > cfg.max_spread:
        result.unstable_reasons.append(f"baseline spread {result.baseline_spread:.0%} > {cfg.max_spread:.0%}")
    if noise > cfg.max_noise:
        result.unstable_reasons.append(f"noise ±{noise:.0%} > {cfg.max_noise:.0%} (cannot resolve the minimum effect)")
    if min(result.rounds) < cfg.min_rounds:
        result.unstable_reasons.append(f"only {min(result.rounds)} rounds (< {cfg.min_rounds})")
    return result


STATUSES = ("ok", "improved", "regression", "transient", "unstable", "no-baseline", "incomparable", "foreign",
            "incomplete-baseline")


FAILING = ("regression", "incomplete-baseline")
"""Verdicts that fail a build: a confirmed slowdown, or a baseline entry that cannot be compared (a gate that
passes whatever it cannot read is no gate)."""


MANIFEST = "harness_cases"
"""Key of the benchmark names a saved run holds (written beside pytest-benchmark's own JSON by the latency plugin):
a benchmark later missing from the file is a damaged baseline, not a new benchmark."""


class BaselineError(ValueError):
    """A saved benchmark run that is not a readable pytest-benchmark JSON with benchmarks in it."""


@dataclass
class Verdict:
    """The gate's decision for one benchmark. ``regression`` and ``incomplete-baseline`` fail a build."""

    status: str
    message: str
    first: Comparison | None = None
    second: Comparison | None = None
    final: Comparison | None = None
    """The comparison the decision rests on (pooled rounds after a re-measurement, else the first)."""

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message,
                "first": self.first.to_dict() if self.first else None,
                "second": self.second.to_dict() if self.second else None,
                "final": self.final.to_dict() if self.final else None}


def decide(current: Sequence[float], baseline: Sequence[float], cfg: GateConfig,
           remeasure: Callable[[], Sequence[float]] | None = None, foreign: str | None = None,
           contention: float | None = None, between: float | None = None) -> Verdict:
    """Gate one benchmark; see :func:`judge`.

    ``between`` is the benchmark's run-to-run spread across the baseline's sessions (``(max - min) / median`` of
    the per-session median ratios): above ``max_between`` the benchmark is not stable enough to gate at
    ``min_effect`` and is reported ``unstable``, unless it is slower by more than ``min_effect + 2 * between``.
    ``contention`` is the current run's wall/CPU time ratio: above ``max_contention`` the machine was overloaded
    (other jobs took the core), ratios drift by up to ~10%, and any verdict but a confirmed regression is
    reported ``unstable`` instead of vouched for.
    """
    verdict = judge(current, baseline, cfg, remeasure, foreign)
    if between is not None and between > cfg.max_between and verdict.status not in ("unstable", "improved"):
        slowdown = verdict.final.slowdown if verdict.final else 0.0
        if not (verdict.status in ("regression", "foreign") and slowdown > cfg.min_effect + 2 * between):
            reason = (f"run-to-run spread {between:.1%} across the baseline sessions > {cfg.max_between:.0%} "
                      f"(a slowdown must exceed {cfg.min_effect + 2 * between:.0%} to count)")
            verdict = Verdict("unstable", f"unstable, not gated: {reason}; was {verdict.status}: "
                                          f"{verdict.message}", verdict.first, verdict.second, verdict.final)
    if contention is not None and contention > cfg.max_contention and verdict.status != "regression":
        reason = f"machine overloaded: wall/CPU x{contention:.2f} > x{cfg.max_contention:g}"
        verdict = Verdict("unstable", f"unstable, not vouched for: {reason}; was {verdict.status}: "
                                      f"{verdict.message}", verdict.first, verdict.second, verdict.final)
    return verdict


def judge(current: Sequence[float], baseline: Sequence[float], cfg: GateConfig,
          remeasure: Callable[[], Sequence[float]] | None = None, foreign: str | None = None) -> Verdict:
    """Gate one benchmark (per-round ratios of the current run vs the baseline's).

    1. Compare. Nothing slower than ``remeasure_above`` (significantly) -> ok / improved / unstable.
    2. Otherwise re-measure once (``remeasure()`` returns fresh per-round ratios) and judge the *pooled* rounds
       of both measurements: a regression needs the pooled slowdown above ``max(min_effect, noise)`` with
       Mann-Whitney ``p < alpha``, and the re-measurement on its own slower by at least
       ``confirm_fraction * min_effect`` (so one disturbed measurement cannot fail the build). Pooling halves the
       variance of the estimate, which is what lets a real 20% slowdown clear a 15% bar every time.
    Without ``remeasure`` (offline comparisons) the first comparison decides. ``foreign`` names a machine-kind
    mismatch with the baseline (see ``machine_mismatch``).
    """
    first = compare(current, baseline, cfg)
    triggered = first.suspected or (first.slowdown > cfg.remeasure_above and first.p_slower < cfg.alpha)
    if not triggered:
        if first.unstable:
            return Verdict("unstable", f"unstable, not gated: {'; '.join(first.unstable_reasons)}; "
                                       f"{first.describe()}", first, final=first)
        if first.improved:
            return Verdict("improved", f"faster than the baseline: {first.describe()}", first, final=first)
        return Verdict("ok", first.describe(), first, final=first)
    second = pooled = None
    if cfg.remeasure and remeasure is not None:
        fresh = np.asarray(remeasure(), dtype=np.float64)
        second = compare(fresh, baseline, cfg)
        pooled = compare(np.concatenate([np.asarray(current, dtype=np.float64), fresh]), baseline, cfg)
        final = pooled
        confirmed = pooled.suspected and second.slowdown > cfg.confirm_fraction * cfg.min_effect
    else:
        final = first
        confirmed = first.suspected
    detail = (f"first {first.describe()}; re-measured {second.describe()}; pooled {pooled.describe()}"
              if second else first.describe())
    if not confirmed:
        reasons = list(dict.fromkeys(first.unstable_reasons + (second.unstable_reasons if second else [])))
        if reasons:
            return Verdict("unstable", f"unstable, not gated: {'; '.join(reasons)}; {detail}", first, second, final)
        if first.suspected:
            return Verdict("transient", f"suspected, not confirmed by re-measurement: {detail}", first, second, final)
        return Verdict("ok", f"borderline, cleared by re-measurement: {detail}", first, second, final)
    if final.unstable:
        return Verdict("unstable", f"slower but unstable, not gated: {'; '.join(final.unstable_reasons)}; "
                                   f"{detail}", first, second, final)
    what = (f"{final.slowdown:+.1%} slower relative to PyTorch eager than the baseline, above the minimum effect "
            f"{cfg.min_effect:.0%} and the noise ±{final.noise:.1%}"
            + (" (confirmed by re-measurement)" if second else ""))
    if foreign and cfg.machine_mismatch == "report":
        return Verdict("foreign", f"{what}, but the baseline is from another machine kind ({foreign}); "
                                  f"not failing (gate.machine_mismatch = 'report'); {detail}", first, second, final)
    return Verdict("regression", f"{what}; {detail}", first, second, final)


# ---------------------------------------------------------------------------------------------- baselines


@dataclass
class BaselineEntry:
    """One benchmark of a saved run (or pooled over several baseline sessions) with its per-round ratios."""

    name: str
    extra: dict[str, Any]
    stats: dict[str, Any]
    sessions: list[np.ndarray] = field(default_factory=list)
    """Per-round ratios of each session this entry pools (one array per saved run)."""

    @property
    def ratios(self) -> np.ndarray | None:
        return np.concatenate(self.sessions) if self.sessions else None

    @property
    def between_spread(self) -> float | None:
        """``(max - min) / median`` of the per-session median ratios; None with fewer than two sessions."""
        if len(self.sessions) < 2:
            return None
        medians = [float(np.median(s)) for s in self.sessions]
        return (max(medians) - min(medians)) / float(np.median(medians))


def _session_ratios(extra: Mapping[str, Any]) -> list[np.ndarray]:
    paired = extra.get("paired")
    if not isinstance(paired, dict) or not paired.get("eager_ms"):
        return []
    try:
        ratios = (np.asarray(paired["target_ms"], dtype=np.float64) /
                  np.asarray(paired["eager_ms"], dtype=np.float64))
    except (KeyError, TypeError, ValueError):
        return []
    return [ratios] if ratios.ndim == 1 and ratios.size and np.isfinite(ratios).all() and (ratios > 0).all() else []


@dataclass
class Baseline:
    path: Path
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    datetime: str
    entries: dict[str, BaselineEntry]
    paths: list[Path] = field(default_factory=list)
    """Every saved run pooled into this baseline (newest last); ``path`` is the newest."""
    lost: frozenset[str] = frozenset()
    """Benchmarks a run lists in its ``harness_cases`` manifest that none of its pooled runs holds: the file lost
    them (damaged or edited); their gate fails instead of reading them as new benchmarks."""

    @property
    def machine_kind(self) -> dict[str, Any] | None:
        kinds = [e.extra.get("machine_kind") for e in self.entries.values() if e.extra.get("machine_kind")]
        return kinds[0] if kinds else None


def load_run(path: str | Path) -> Baseline:
    """Read a pytest-benchmark JSON (saved with ``--benchmark-save``/``--benchmark-autosave``/``--benchmark-json``)."""
    path = Path(path)
    fix = "re-record it (tox -e bench-baseline) or remove it"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(f"{path}: damaged benchmark baseline, not readable JSON ({exc}); {fix}") from None
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, list) or not benchmarks:
        raise BaselineError(f"{path}: damaged benchmark baseline, no 'benchmarks' in it; {fix}")
    entries = {}
    for i, b in enumerate(benchmarks):
        if not isinstance(b, dict) or not isinstance(b.get("name"), str):
            raise BaselineError(f"{path}: damaged benchmark baseline, benchmark {i} has no name; {fix}")
        extra = dict(b.get("extra_info") or {})
        entries[b["name"]] = BaselineEntry(b["name"], extra, dict(b.get("stats") or {}), _session_ratios(extra))
    manifest = data.get(MANIFEST, [])
    if not isinstance(manifest, list) or not all(isinstance(n, str) for n in manifest):
        raise BaselineError(f"{path}: damaged benchmark baseline, '{MANIFEST}' is not a list of names; {fix}")
    return Baseline(path, data.get("machine_info", {}), data.get("commit_info", {}), data.get("datetime", ""),
                    entries, [path], frozenset(manifest) - set(entries))


def load_baseline(directory: str | Path, ref: str, sessions: int = 3) -> Baseline:
    """The gate's baseline. A run *name* (``baseline``) pools the newest ``sessions`` runs saved under that name
    (recording a baseline = running the suite that many times), so one session's process-level luck (memory
    layout moves a ratio by a few percent from process to process) does not become the baseline, and the spread
    between sessions tells which benchmarks are too unstable to gate. Any other reference is one run."""
    path = resolve_run(directory, ref)
    match = RUN_FILE.match(path.name)
    if not match or match.group(2) != ref or sessions <= 1:
        return load_run(path)
    same = [p for p in saved_runs(directory) if RUN_FILE.match(p.name).group(2) == ref][-sessions:]
    runs = [load_run(p) for p in same]
    newest = runs[-1]
    entries: dict[str, BaselineEntry] = {}
    for run in runs:
        for name, entry in run.entries.items():
            if name not in entries:
                entries[name] = BaselineEntry(name, entry.extra, entry.stats, [])
            else:  # the newest session's metadata wins
                entries[name].extra, entries[name].stats = entry.extra, entry.stats
            entries[name].sessions.extend(entry.sessions)
    lost = frozenset().union(*(run.lost for run in runs)) - set(entries)
    return Baseline(newest.path, newest.machine_info, newest.commit_info, newest.datetime, entries, same, lost)


RUN_FILE = re.compile(r"^(\d{4})_(.+)\.json$")


def saved_runs(directory: str | Path) -> list[Path]:
    """pytest-benchmark files ``NNNN_name.json`` of one machine folder, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if RUN_FILE.match(p.name)), key=lambda p: p.name)


def resolve_run(directory: str | Path, ref: str) -> Path:
    """A saved run by reference: a path, ``latest``, a number (``0003`` / ``3``), ``-1`` (last), ``-2``, or a
    name: the newest run whose name part equals it (``baseline`` -> newest ``NNNN_baseline.json``)."""
    candidate = Path(ref)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    runs = saved_runs(directory)
    if not runs:
        raise FileNotFoundError(f"no saved runs in {directory}")
    if ref == "latest":
        return runs[-1]
    if re.fullmatch(r"-\d+", ref):
        index = int(ref)
        if -index > len(runs):
            raise FileNotFoundError(f"only {len(runs)} saved runs in {directory}, asked for {ref}")
        return runs[index]
    if ref.isdigit():
        hits = [p for p in runs if int(RUN_FILE.match(p.name).group(1)) == int(ref)]
    else:
        hits = [p for p in runs if RUN_FILE.match(p.name).group(2) == ref]
        hits = hits or [p for p in runs if ref in p.name]
    if not hits:
        raise FileNotFoundError(f"no saved run matching {ref!r} in {directory}; have: "
                                + ", ".join(p.name for p in runs))
    return hits[-1]


def kind_mismatch(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> str | None:
    """Human description of how two machine kinds differ, or None when they match (or one is unknown)."""
    if not a or not b:
        return None
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(diffs) or None


# ------------------------------------------------------------------------------------------------ budgets


@dataclass(frozen=True)
class Budget:
    """An opt-in latency budget (guide 004 "Performance Targets") for models/targets matching the globs."""

    profile: str
    models: str = "*"
    targets: str = "*"
    median_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    min_throughput: float | None = None
    max_peak_rss_mb: float | None = None
    source: str = ""

    def applies(self, model: str, target: str) -> bool:
        return star_match(self.models, model) and star_match(self.targets, target)

    def violations(self, stats: LatencyStats, batch: int, peak_rss_mb: float | None) -> list[str]:
        """Every budget line the measurement breaks, each with the measured value and the limit."""
        out = []
        for key, value in (("median_ms", stats.median_ms), ("p95_ms", stats.p95_ms), ("p99_ms", stats.p99_ms)):
            limit = getattr(self, key)
            if limit is not None and value > limit:
                out.append(f"{key.replace('_ms', '')} {value:.2f} ms > {limit:g} ms")
        if self.min_throughput is not None and stats.throughput(batch) < self.min_throughput:
            out.append(f"throughput {stats.throughput(batch):.1f}/s < {self.min_throughput:g}/s")
        if self.max_peak_rss_mb is not None and peak_rss_mb is not None and peak_rss_mb > self.max_peak_rss_mb:
            out.append(f"peak RSS {peak_rss_mb:.0f} MB > {self.max_peak_rss_mb:g} MB")
        return out


def load_budgets(entries: Sequence[Mapping[str, Any]]) -> list[Budget]:
    known = {f.name for f in fields(Budget)}
    out = []
    for i, entry in enumerate(entries):
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"[[budgets]] entry {i}: unknown keys {unknown}; known: {sorted(known)}")
        if "profile" not in entry:
            raise ValueError(f"[[budgets]] entry {i}: needs a profile name")
        budget = Budget(**dict(entry))
        check_numbers(budget, f"[[budgets]] entry {i} ({budget.profile})")
        out.append(budget)
    return out
