"""The harness's test items: the conformance matrix, the accuracy gates and the latency suite.

A project collects them by importing them into a test module of its own (one line:
``from export_harness.plugin.items import *``), as this repository's ``suites/test_matrix.py``, ``test_accuracy.py`` and
``test_latency.py`` do; node ids are then ``THAT_FILE::test_cell[MODEL-TARGET]``. Cells come from the registries
(the zoo plus the project's ``pytest_harness_models`` / ``pytest_harness_targets``).
"""

from __future__ import annotations

import pytest

__all__ = ["test_accuracy", "test_cell", "test_dynamic_lengths", "test_latency", "test_latency_budget"]


def test_cell(cell, check_cell) -> None:
    """Export, check structure, run at two batch sizes, and compare with PyTorch against the cell's tier."""
    result = check_cell(cell)
    assert result.status == "passed"
    assert result.parity, "a passing cell must have compared at least one batch"


def test_dynamic_lengths(length_cell, check_lengths) -> None:
    """A model with dynamic non-batch axes (``axis_lengths``): its passing artifact at the other lengths (e.g. 500
    frames), the ONNX graph keeping those axes symbolic; a backend that froze them fails or is declared."""
    result = check_lengths(length_cell)
    assert result.status == "passed" and result.parity and all(p.lengths for p in result.parity)


def test_accuracy(accuracy_cell, check_accuracy) -> None:
    """Task-metric drop of one compression method on one model, within budget and ratchet."""
    result = check_accuracy(accuracy_cell)
    assert result.passed
    assert result.metrics, "an accuracy cell must measure at least one metric"


@pytest.mark.latency
def test_latency(latency_case, latency, harness, benchmark) -> None:
    """Conformance first (failing cells skip, saying why), then fixed-round pedantic timing of the artifact's
    runner on prepared inputs, paired round by round with PyTorch eager, recorded in ``benchmark.extra_info``."""
    latency.require_timing(benchmark)
    prepared = latency.prepare(latency_case, harness)
    timed = latency.bench(prepared, benchmark)
    record = latency.record(prepared, timed, benchmark)
    latency.gate(prepared, timed, record)


@pytest.mark.latency
def test_latency_budget(budget_case, latency, harness) -> None:
    """Opt-in (``--latency-budgets=PROFILE``): p95/p99/median at batch 1 within the model's declared budget."""
    latency.check_budget(budget_case, harness)
