"""The first diverging op: bisect a graph's topological order with prefix sub-models run through a backend probe.

ONNX Runtime (fp32, every node output exposed) gives each node's reference output. A candidate node's prefix (the
graph inputs -> that node's float outputs) goes through the probe; it *diverges* when an output fails the cell's own
threshold tier (:func:`export_harness.converters.checks.compare.compare_output`). Assuming that once the graph has
diverged it stays diverged (as Polygraphy's ``debug reduce`` does), a binary search over the candidates finds the
first diverging node in about log2(N) conversions; then its float predecessors are probed too, and when one of them
diverges already (the assumption broke) the search continues before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from export_harness.converters.checks.compare import compare_output
from export_harness.converters.checks.thresholds import Tolerance
from export_harness.converters.divergence import graph, standalone
from export_harness.converters.divergence.probes import Probe, ProbeError

NON_CANDIDATES = frozenset({"Constant", "ConstantOfShape", "Shape", "Size"})
MAX_RESTARTS = 4
NEIGHBOURS = 3
"""How many neighbours of a candidate whose prefix the backend cannot convert are tried instead."""


@dataclass
class Step:
    """One probe: the prefix ending at node ``index`` through the backend, against ONNX Runtime."""

    index: int
    op_type: str
    name: str
    outputs: list[str]
    cosine: float | None = None
    max_abs: float | None = None
    diverged: bool | None = None
    error: str = ""
    seconds: float = 0.0
    nodes: int = 0

    def line(self) -> str:
        verdict = ("error: " + self.error) if self.diverged is None else ("DIVERGED" if self.diverged else "agrees")
        numbers = "" if self.cosine is None else f" cosine {self.cosine:.6f} max_abs {self.max_abs:.3g}"
        where = f"#{self.index} {self.op_type} '{self.name}' ({self.nodes} nodes)"
        return f"{where}{numbers}: {verdict} [{self.seconds:.1f} s]"


@dataclass
class Finding:
    """Where the backend first computes something else; ``index`` None when no node is named (``reason`` says why)."""

    index: int | None
    op: dict[str, Any] | None
    steps: list[Step] = field(default_factory=list)
    verified: bool = False
    """The found node's float predecessors agree through the backend (probed)."""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "verified": self.verified, "reason": self.reason,
                "steps": [asdict(s) for s in self.steps]}


def judge(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance,
          saturated: float = standalone.SATURATED) -> tuple[bool, float, float]:
    """(diverged, worst cosine, worst max-abs) of ``actual`` against ``expected`` under the tier ``tol``; a NaN where
    the reference has NaN too counts as agreement (ONNX Runtime's own NaN is not the backend's fault), and so do two
    values of the same sign beyond ``saturated`` (an attention mask's -inf written as the format's lowest value:
    :func:`~export_harness.converters.divergence.standalone.saturation`)."""
    diverged, cosine, max_abs = False, 1.0, 0.0
    for name, exp in expected.items():
        exp = np.asarray(exp, np.float64)
        act = np.asarray(actual.get(name), np.float64) if name in actual else None
        if act is None or act.shape != exp.shape:
            return True, float("nan"), float("inf")
        same = (np.isnan(exp) & np.isnan(act)) | ((exp <= -saturated) & (act <= -saturated))
        same |= (exp >= saturated) & (act >= saturated)
        if same.any():
            exp, act = exp[~same], act[~same]
        comp = compare_output(name, exp, act, tol)
        diverged |= not comp.passed
        cosine = min(cosine, comp.cosine) if not np.isnan(comp.cosine) else float("nan")
        max_abs = max(max_abs, comp.max_abs)
    return diverged, cosine, max_abs


def output_numbers(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance,
                   precision: str = "fp32") -> dict[str, dict[str, Any]]:
    """Per output the backend returned: cosine, max_abs, how many elements are beyond the tier (and ``shape``, the
    backend's, when it is not the reference's)."""
    out: dict[str, dict[str, Any]] = {}
    bound = {"atol": tol.atol, "rtol": tol.rtol, "scale_atol": tol.scale_atol}
    limit = standalone.saturation(precision)
    for name, exp in expected.items():
        if name in actual:
            _, cosine, max_abs = judge({name: exp}, {name: actual[name]}, tol, limit)
            out[name] = {"cosine": cosine, "max_abs": max_abs, "elements": float(np.size(exp)),
                         "mismatched": float(standalone.mismatches(exp, actual[name], bound, limit))}
            if np.shape(actual[name]) != np.shape(exp):
                out[name]["shape"] = [list(np.shape(actual[name])), list(np.shape(exp))]
    return out


def candidates(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> list[int]:
    """Nodes worth probing, in topological order: with a float output that depends on a graph input (a constant
    sub-expression is folded by every converter and has no inputs to feed)."""
    live = graph.depends_on_inputs(model)
    return [i for i, node in enumerate(model.graph.node)
            if node.op_type not in NON_CANDIDATES and any(o in live for o in graph.float_outputs(node, values))]


def timed(step: Step, run: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
          tol: Tolerance, saturated: float) -> Step:
    """Fill ``step`` from ``run()`` -> (expected, actual): the verdict, the numbers, the seconds; a
    :class:`ProbeError` is recorded as the step's error (the backend could not convert or run it)."""
    t0 = time.perf_counter()
    try:
        expected, actual = run()
        step.diverged, step.cosine, step.max_abs = judge(expected, actual, tol, saturated)
    except ProbeError as exc:
        step.error = str(exc)[:300]
    step.seconds = round(time.perf_counter() - t0, 2)
    return step


class Bisector:
    """Probes positions through ``measure`` (memoised) and bisects; ``steps`` records every probe in the order it
    ran. ``measure(index)`` runs the prefix ending at graph node ``index`` through the backend (ONNX nodes here,
    ATen nodes in :mod:`~export_harness.converters.divergence.torch_finder`)."""

    def __init__(self, measure: Callable[[int], Step]) -> None:
        self.measure = measure
        self.steps: list[Step] = []
        self._seen: dict[int, Step] = {}

    def probe_node(self, index: int) -> Step:
        if index not in self._seen:
            self._seen[index] = self.measure(index)
            self.steps.append(self._seen[index])
        return self._seen[index]

    def agrees(self, index: int) -> bool:
        """Whether node ``index`` was probed and agreed."""
        return index in self._seen and self._seen[index].diverged is False

    def first_bad(self, cands: list[int], lo: int, hi: int) -> int | None:
        """Bisect ``cands`` between a known-agreeing position ``lo`` (-1: the inputs) and a known-diverging ``hi``;
        returns the first diverging position, None when probes kept failing to convert."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            tried = [mid] + [p for d in range(1, NEIGHBOURS + 1) for p in (mid + d, mid - d) if lo < p < hi]
            verdict = None
            for pos in tried:
                step = self.probe_node(cands[pos])
                if step.diverged is not None:
                    verdict = pos, step.diverged
                    break
            if verdict is None:
                return None
            pos, diverged = verdict
            if diverged:
                hi = pos
            else:
                lo = pos
        return hi


def locate(bisector: Bisector, cands: list[int], whole: Step, producers: Callable[[int], list[int]],
           describe: Callable[[int], dict[str, Any]], label: str, reference: str = "ONNX Runtime") -> Finding:
    """From the whole graph's probe ``whole``: bisect ``cands`` for the first diverging node, check its float
    ``producers`` agree, and restart before any that does not (the divergence was not monotonic)."""
    bisector.steps.insert(0, whole)
    if whole.diverged is None:
        return Finding(None, None, bisector.steps, reason=f"the backend cannot convert the whole graph: {whole.error}")
    if not whole.diverged:
        return Finding(None, None, bisector.steps, reason=(
            f"through {label} the whole graph agrees with {reference} within the tier on these inputs "
            f"(cosine {whole.cosine:.6f}): nothing diverges between the source graph and the backend"))
    hi, lo = len(cands), -1
    found = None
    for _ in range(MAX_RESTARTS):
        pos = bisector.first_bad(cands, lo, hi)
        if pos is None:
            return Finding(None, None, bisector.steps, reason="the backend failed to convert every prefix tried "
                           "around the divergence: " + next((s.error for s in reversed(bisector.steps) if s.error), ""))
        if pos == len(cands):
            return Finding(None, None, bisector.steps, reason="every node's prefix agrees; only the whole graph "
                           "diverges (an interaction of several outputs)")
        found = cands[pos]
        earlier = [cands.index(p) for p in producers(found) if p in cands]
        bad = [p for p in earlier if bisector.probe_node(cands[p]).diverged]
        if not bad:
            verified = all(bisector.probe_node(cands[p]).diverged is False for p in earlier)
            return Finding(found, describe(found), bisector.steps, verified=verified)
        hi = min(bad)
        lo = max([-1] + [p for p in range(hi) if bisector.agrees(cands[p])])
    return Finding(found, describe(found) if found is not None else None, bisector.steps,
                   reason="the divergence is not monotonic along the graph: the search stopped after "
                          f"{MAX_RESTARTS} restarts")


def find_first_divergence(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], probe: Probe, tol: Tolerance,
                          values: Mapping[str, np.ndarray] | None = None) -> Finding:
    """The first node (topological order) whose output the backend computes beyond ``tol`` from ONNX Runtime."""
    values = values if values is not None else graph.reference_values(model, feeds)
    saturated = standalone.saturation(probe.precision)

    def measure(index: int) -> Step:
        node = model.graph.node[index]
        outputs = graph.float_outputs(node, values)
        step = Step(index=index, op_type=node.op_type, name=node.name or f"#{index}", outputs=outputs)

        def run() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            sub = graph.cut(model, outputs, values)
            step.nodes = len(sub.graph.node)
            expected = {o: values[o] for o in outputs}
            return expected, probe(sub, {i.name: feeds[i.name] for i in sub.graph.input}, expected)

        return timed(step, run, tol, saturated)

    outputs = [o.name for o in model.graph.output if graph.is_float(values.get(o.name))]
    whole = Step(index=len(model.graph.node), op_type="(whole graph)", name="outputs", outputs=outputs,
                 nodes=len(model.graph.node))
    expected = {o: values[o] for o in outputs}
    timed(whole, lambda: (expected, probe(model, {i.name: feeds[i.name] for i in model.graph.input}, expected)),
          tol, saturated)
    return locate(Bisector(measure), candidates(model, values), whole,
                  lambda index: _float_producers(model, index, values),
                  lambda index: graph.describe(model, index, values), probe.label)


def _float_producers(model: onnx.ModelProto, index: int, values: Mapping[str, np.ndarray]) -> list[int]:
    """Indices of the nodes producing ``index``'s float inputs."""
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output if o}
    node = model.graph.node[index]
    return sorted({producer[t] for t in graph.node_inputs(node) if t in producer and graph.is_float(values.get(t))})
