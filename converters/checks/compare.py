"""Parity comparison of an artifact's outputs against PyTorch, returning rich results (Polygraphy-style).

A comparison never returns a bare bool: each output carries cosine, max abs/rel error, the worst element,
top-1 agreement for classifier outputs and the smallest atol that would have passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from export_harness.converters.checks.thresholds import Tolerance


@dataclass
class OutputComparison:
    """Parity of one named output at one batch size."""

    name: str
    shape: tuple[int, ...]
    cosine: float
    max_abs: float
    max_rel: float
    mean_abs: float
    worst_index: tuple[int, ...]
    worst_expected: float
    worst_actual: float
    min_passing_atol: float
    top1_agreement: float | None = None
    """Share of rows whose PyTorch and artifact argmax agree (reported)."""
    decisive_top1: float | None = None
    """Share of rows whose top-1 holds where it is decisive: a row counts as agreeing when PyTorch's top two are
    within both elements' allowed error of each other (a tie the tolerance cannot resolve). Gated by top1_min."""
    decisive_top5: float | None = None
    """The same for top-5 membership (outputs with more than 5 classes): every member of PyTorch's top 5 that leads
    the sixth by more than their allowed errors must be in the artifact's top 5. Gated by top1_min."""
    violator_index: tuple[int, ...] = ()
    """The element with the largest ``|diff|`` over its allowed error (:meth:`Tolerance.allowed`): the one that fails
    the tolerance first (the largest ``|diff|``, ``worst_index``, may sit where ``rtol*|ref|`` allows it)."""
    violator_expected: float = 0.0
    violator_actual: float = 0.0
    violator_ratio: float = 0.0
    """``|diff|`` over the error allowed there: above 1 fails."""
    scale: float = 0.0
    """The output's largest finite ``|ref|`` (what a tier's ``scale_atol`` is relative to)."""
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        top1 = "" if self.top1_agreement is None else f" top1={self.top1_agreement:.3f}"
        return (
            f"{self.name} (shape {list(self.shape)}): cosine={self.cosine:.9f} max_abs={self.max_abs:.3g} "
            f"max_rel={self.max_rel:.3g}{top1} worst@{list(self.worst_index)} "
            f"expected={self.worst_expected:.6g} got={self.worst_actual:.6g} "
            f"(atol that would pass: {self.min_passing_atol:.3g})"
        )


@dataclass
class ParityResult:
    """All outputs of one run at one batch size, judged against one tolerance."""

    batch: int
    tolerance: Tolerance
    outputs: list[OutputComparison]
    errors: list[str] = field(default_factory=list)
    lengths: dict[str, int] = field(default_factory=dict)
    """Dynamic non-batch axes run at a length other than their default (``{"frames": 500}``)."""

    @property
    def label(self) -> str:
        return f"batch {self.batch}" + "".join(f", {s}={n}" for s, n in sorted(self.lengths.items()))

    @property
    def passed(self) -> bool:
        return not self.errors and all(o.passed for o in self.outputs)

    def failure_lines(self) -> list[str]:
        lines = list(self.errors)
        for out in self.outputs:
            lines += [f"{out.name}: {msg}" for msg in out.failures]
        return lines

    def to_dict(self) -> dict:
        return {"batch": self.batch, **({"lengths": self.lengths} if self.lengths else {}),
                "tolerance": asdict(self.tolerance), "errors": self.errors,
                "outputs": [asdict(o) | {"passed": o.passed} for o in self.outputs]}


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a64, b64) / (na * nb))


def compare_output(name: str, expected: np.ndarray, actual: np.ndarray, tol: Tolerance,
                   classifier: bool = False) -> OutputComparison:
    """Compare one output; ``classifier`` adds top-1 agreement over the last axis."""
    exp = np.asarray(expected, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    diff = np.abs(exp - act)
    finite = np.isfinite(exp) & np.isfinite(act)
    same_nonfinite = (~np.isfinite(exp)) & (exp == act)  # equal infinities count as agreement
    diff = np.where(finite | same_nonfinite, np.nan_to_num(diff, nan=0.0), np.inf)
    rel = diff / np.maximum(np.abs(np.nan_to_num(exp)), np.finfo(np.float32).tiny)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    scaled = tol.scaled_allowance(exp)
    allowed = tol.atol + scaled
    excess = diff - scaled
    nonfinite = int((~finite & ~same_nonfinite).sum())
    comp = OutputComparison(
        name=name,
        shape=tuple(exp.shape),
        # NaN, not a number computed with NaN zeroed out (which once printed cosine 1.000000000 for all-NaN outputs)
        cosine=cosine_similarity(exp[finite], act[finite]) if not nonfinite else float("nan"),
        max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        worst_index=tuple(int(i) for i in worst),
        worst_expected=float(exp[worst]) if diff.size else 0.0,
        worst_actual=float(act[worst]) if diff.size else 0.0,
        min_passing_atol=float(max(0.0, excess.max())) if diff.size else 0.0,
        scale=float(np.abs(np.nan_to_num(exp, posinf=0.0, neginf=0.0)).max()) if diff.size else 0.0,
    )
    if diff.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(allowed > 0, diff / np.where(allowed > 0, allowed, 1.0), np.where(diff > 0, np.inf, 0.0))
        violator = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        comp.violator_index = tuple(int(i) for i in violator)
        comp.violator_expected, comp.violator_actual = float(exp[violator]), float(act[violator])
        comp.violator_ratio = float(ratio[violator])
    if classifier and exp.ndim >= 1 and exp.shape[-1] > 1:
        # argmax of a row with NaN is the NaN's index: two all-NaN rows would "agree"
        comp.top1_agreement = (float(np.mean(np.argmax(exp, -1) == np.argmax(act, -1))) if not nonfinite
                               else float("nan"))
        comp.decisive_top1 = decisive_agreement(exp, act, allowed, 1) if not nonfinite else float("nan")
        if exp.shape[-1] > 5:
            comp.decisive_top5 = decisive_agreement(exp, act, allowed, 5) if not nonfinite else float("nan")
    ref_nan, act_nan = int(np.isnan(exp).sum()), int(np.isnan(act).sum())
    if ref_nan:
        comp.failures.append(f"PyTorch's own output has {ref_nan} NaN value(s) of {exp.size}: the reference is "
                             f"broken (weights or inputs), no parity verdict is possible")
    elif nonfinite:
        comp.failures.append(f"{nonfinite} non-finite value(s) where PyTorch differs (the artifact's output has "
                             f"{act_nan} NaN, {int(np.isinf(act).sum())} Inf)")
    if comp.cosine < tol.cosine_min:
        comp.failures.append(f"cosine {comp.cosine:.9f} < {tol.cosine_min}")
    if comp.min_passing_atol > tol.atol and not nonfinite:  # non-finite values are reported as such above
        comp.failures.append(violation_message(comp, tol))
    if comp.decisive_top1 is not None and not comp.decisive_top1 >= tol.top1_min:
        comp.failures.append(f"top-1 agreement {comp.top1_agreement:.3f} ({comp.decisive_top1:.3f} of the rows where "
                             f"it is decisive) < {tol.top1_min}")
    if comp.decisive_top5 is not None and not comp.decisive_top5 >= tol.top1_min:
        comp.failures.append(f"top-5 membership held in {comp.decisive_top5:.3f} of the rows < {tol.top1_min}")
    return comp


def decisive_agreement(expected: np.ndarray, actual: np.ndarray, allowed: np.ndarray, k: int) -> float:
    """Share of rows (over the last axis) where every member of ``expected``'s top ``k`` that leads the next
    element by more than both their allowed errors is in ``actual``'s top ``k``: a class closer than that to the
    boundary may legitimately swap places within the tolerance."""
    classes = expected.shape[-1]
    exp, act = expected.reshape(-1, classes), actual.reshape(-1, classes)
    allow = np.broadcast_to(allowed, expected.shape).reshape(-1, classes)
    order = np.argsort(-exp, axis=1, kind="stable")
    row = np.arange(len(exp))
    top, nxt = order[:, :k], order[:, k]
    lead = exp[row[:, None], top] - exp[row, nxt][:, None]
    decisive = lead > allow[row[:, None], top] + allow[row, nxt][:, None]
    act_top = np.argsort(-act, axis=1, kind="stable")[:, :k]
    kept = (top[:, :, None] == act_top[:, None, :]).any(-1)
    return float(np.mean((kept | ~decisive).all(1))) if len(exp) else 1.0


def violation_message(comp: OutputComparison, tol: Tolerance) -> str:
    """The tolerance failure: where the largest ``|diff|`` is, then the element that violates ``atol + rtol*|ref|``
    most (its ``|diff|`` against what is allowed there: often another element), then the atol that would pass."""
    v = comp.violator_index
    diff = abs(comp.violator_actual - comp.violator_expected)
    allowed = tol.atol + tol.rtol * abs(comp.violator_expected) + tol.scale_atol * comp.scale
    largest = f"max_abs {comp.max_abs:.3g} at {list(comp.worst_index)}"
    if v != comp.worst_index:
        largest += f" (expected {comp.worst_expected:.6g}, got {comp.worst_actual:.6g}: within its allowed error)"
    bound = f"atol {tol.atol:g} + rtol {tol.rtol:g}*|ref|"
    if tol.scale_atol:
        bound += f" + {tol.scale_atol:g}*max|ref| (max|ref| {comp.scale:.4g})"
    return (f"{largest}; |diff| exceeds {bound} most at {list(v)}: "
            f"{diff:.3g} > {allowed:.3g} allowed ({comp.violator_ratio:.3g}x; expected {comp.violator_expected:.6g}, "
            f"got {comp.violator_actual:.6g}); atol {comp.min_passing_atol:.3g} would pass")


def compare(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance, batch: int,
            classifier_outputs: Sequence[str] = ()) -> ParityResult:
    """Compare every expected output; missing outputs and shape mismatches are errors, not crashes."""
    result = ParityResult(batch=batch, tolerance=tol, outputs=[])
    for name, exp in expected.items():
        if name not in actual:
            result.errors.append(f"output {name!r} missing from artifact outputs {sorted(actual)}")
            continue
        act = np.asarray(actual[name])
        if act.shape != np.shape(exp):
            result.errors.append(f"output {name!r}: shape {list(act.shape)} != PyTorch {list(np.shape(exp))}")
            continue
        result.outputs.append(compare_output(name, exp, act, tol, classifier=name in classifier_outputs))
    return result
