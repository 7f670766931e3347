"""Reduce a divergence to the smallest sub-graph that still reproduces it through the same backend.

First the diverging node alone, fed its real captured inputs (float activations become graph inputs of their captured
shape; weights, shape tensors, masks and indices initializers holding their captured value). When the node alone
computes correctly (the miscompile needs its context: a layout the converter chose upstream, a fused pattern), the
sub-graph grows backwards: the node and its producers up to ``d`` hops before it, ``d`` = 1, 2, 4, ... until it
diverges, then bisected between the last ``d`` that did not and the first that did (Polygraphy's ``debug reduce``
bisects the same way). When no captured-input cut diverges, the prefix from the real graph inputs (what the finder
probed) is the reproducer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from export_harness.converters.checks.thresholds import Tolerance
from export_harness.converters.divergence import graph, standalone
from export_harness.converters.divergence.finder import Step, judge, output_numbers
from export_harness.converters.divergence.probes import Probe, ProbeError


@dataclass
class Reduction:
    """The reduced model with its inputs and the reference's outputs on them (ONNX Runtime's; PyTorch's for a
    ``torch.export`` program cut by :mod:`~export_harness.converters.divergence.torch_finder`)."""

    model: Any
    """An ``onnx.ModelProto``, or a ``torch.export.ExportedProgram``."""
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    reproduces: bool
    """Diverges through the probe (False only when nothing smaller than the whole prefix could be checked)."""
    how: str
    """``single node``, ``from #S`` (grown backwards) or ``prefix`` (from the graph inputs)."""
    steps: list[Step] = field(default_factory=list)
    actual: dict[str, np.ndarray] = field(default_factory=dict)
    """The backend's outputs on ``inputs``."""

    def numbers(self, tol: Tolerance, precision: str = "fp32") -> dict[str, dict[str, Any]]:
        """Per output: the backend against the reference (:func:`~...finder.output_numbers`)."""
        return output_numbers(self.expected, self.actual, tol, precision)

    @property
    def nodes(self) -> int:
        if isinstance(self.model, onnx.ModelProto):
            return len(self.model.graph.node)
        return sum(1 for n in self.model.graph.nodes if n.op == "call_function")


def _attempt(model: onnx.ModelProto, outputs: list[str], values: Mapping[str, np.ndarray], probe: Probe,
             tol: Tolerance, index: int, depth: int | None) -> tuple[Reduction, Step]:
    within = None if depth is None else graph.neighbourhood(model, index, depth)
    sub = graph.cut(model, outputs, values, within=within)
    names = [i.name for i in sub.graph.input]
    inputs = {n: np.asarray(values[n]) for n in names}
    expected = {o: np.asarray(v) for o, v in graph.reference_values(sub, inputs).items() if o in outputs}
    node = model.graph.node[index]
    how = "prefix" if depth is None else ("single node" if len(sub.graph.node) == 1 else f"{depth} hops back")
    step = Step(index=index, op_type=node.op_type, name=f"{node.name or index} ({how})", outputs=outputs,
                nodes=len(sub.graph.node))
    t0 = time.perf_counter()
    actual: dict[str, np.ndarray] = {}
    try:
        actual = probe(sub, inputs, expected)
        step.diverged, step.cosine, step.max_abs = judge(expected, actual, tol, standalone.saturation(probe.precision))
    except ProbeError as exc:
        step.error = str(exc)[:300]
    step.seconds = round(time.perf_counter() - t0, 2)
    return Reduction(sub, inputs, expected, bool(step.diverged), how, actual=actual), step


def reduce(model: onnx.ModelProto, index: int, values: Mapping[str, np.ndarray], probe: Probe, tol: Tolerance
           ) -> Reduction:
    """The smallest sub-graph ending at node ``index`` that still diverges through ``probe``."""
    outputs = graph.float_outputs(model.graph.node[index], values)
    steps: list[Step] = []
    tried: dict[int | None, Reduction] = {}

    def attempt(depth: int | None) -> Reduction:
        if depth not in tried:
            reduction, step = _attempt(model, outputs, values, probe, tol, index, depth)
            steps.append(step)
            tried[depth] = reduction
        return tried[depth]

    lo, hi, depth = 0, None, 0  # depth lo does not diverge; depth hi does
    while True:
        if attempt(depth).reproduces:
            hi = depth
            break
        lo = depth
        if graph.neighbourhood(model, index, depth) == graph.neighbourhood(model, index, depth + 1):
            break  # every ancestor computed from the inputs is in: only the prefix is left
        depth = 2 * depth if depth else 1
    if hi is None:
        best = attempt(None)
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(mid).reproduces:
                hi = mid
            else:
                lo = mid
        best = attempt(hi)
    best.steps = steps
    return best
