"""The first diverging op on the PyTorch side of the chain: bisection over the model's ATen graph (``torch.export``),
each prefix converted by a converter that starts from PyTorch (litert-torch, or the ONNX exporter run on ONNX Runtime)
and compared with PyTorch's own value of that node; then reduction to the smallest cut that still diverges, fed its
captured inputs. The search is :func:`~export_harness.converters.divergence.finder.locate`, as for ONNX graphs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from export_harness.converters.checks.thresholds import Tolerance
from export_harness.converters.divergence import standalone
from export_harness.converters.divergence.finder import Bisector, Finding, Step, locate, timed
from export_harness.converters.divergence.probes import Probe, ProbeError
from export_harness.converters.divergence.reduce import Reduction
from export_harness.converters.divergence.torch_graph import TorchGraph

DEPTHS = (0, 1, 2, 4, 8)
"""Hops before the diverging op the reduction tries, in turn (0: the op alone)."""


def find_first_divergence(tg: TorchGraph, probe: Probe, tol: Tolerance) -> Finding:
    """The first ATen op (graph order) whose output the backend computes beyond ``tol`` from PyTorch."""
    saturated = standalone.saturation(probe.precision)
    nodes = tg.nodes

    def measure(index: int) -> Step:
        node = nodes[index]
        step = Step(index=index, op_type=str(node.target), name=node.name, outputs=[node.name])

        def run() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            program, inputs, expected = tg.prefix(index)
            step.nodes = sum(1 for n in program.graph.nodes if n.op == "call_function")
            return expected, probe(program, inputs, expected)

        return timed(step, run, tol, saturated)

    ops = sum(1 for n in nodes if n.op == "call_function")
    whole = Step(index=len(nodes), op_type="(whole graph)", name="outputs", outputs=["output"], nodes=ops)
    expected = tg.outputs()

    def run_whole() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        from export_harness.converters.divergence.torch_graph import export

        return expected, probe(export(tg.module, tg.args), tg.inputs, expected)

    timed(whole, run_whole, tol, saturated)
    return locate(Bisector(measure), tg.candidates(), whole, tg.producers, tg.describe, probe.label,
                  reference="PyTorch")


def reduce(tg: TorchGraph, index: int, probe: Probe, tol: Tolerance) -> Reduction:
    """The op alone with its captured inputs; else it and its producers up to 1, 2, 4, 8 hops back; else the
    prefix from the model's inputs (what the finder probed)."""
    saturated = standalone.saturation(probe.precision)
    steps: list[Step] = []
    node = tg.nodes[index]
    for depth in DEPTHS:
        t0 = time.perf_counter()
        try:
            program, inputs, expected, count = tg.cut(index, depth)
        except Exception as exc:  # torch.export of a cut can fail where the whole model did not: try a larger one
            steps.append(Step(index=index, op_type=str(node.target), name=f"{node.name} (cut {depth})",
                              outputs=[node.name], error=f"{type(exc).__name__}: {str(exc)[:200]}",
                              seconds=round(time.perf_counter() - t0, 2)))
            continue
        step = Step(index=index, op_type=str(node.target), name=f"{node.name} (cut {depth})", outputs=[node.name],
                    nodes=count)
        actual: dict[str, np.ndarray] = {}

        def run(program: Any = program, inputs: dict[str, np.ndarray] = inputs, expected: dict[str, np.ndarray] =
                expected, actual: dict[str, np.ndarray] = actual) -> tuple[dict[str, np.ndarray],
                                                                           dict[str, np.ndarray]]:
            actual.update(probe(program, inputs, expected))
            return expected, actual

        steps.append(timed(step, run, tol, saturated))
        if step.diverged:
            how = "single node" if depth == 0 else f"{depth} hops back"
            return Reduction(program, inputs, expected, True, how, steps, actual)
    program, inputs, expected = tg.prefix(index)
    try:
        actual = probe(program, inputs, expected)
    except ProbeError:
        actual = {}
    return Reduction(program, inputs, expected, False, "prefix", steps, actual)

