"""The latency suite: one pytest-benchmark benchmark per passing cell and batch size, plus PyTorch eager rows.

Ids are ``MODEL-TARGET-bB`` (``sign_gru-onnx:fp32-b4``, ``sign_gru-torch:eager-b4``). The default scope times the
smoke models at batch 1; ``--latency-scope=full`` times every cell at every batch of ``--latency-batches``
(default 1,4,16). ``--latency-gate`` compares each with the stored baseline. See the README, "Latency benchmarks".
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.latency


def test_latency(latency_case, latency, harness, benchmark) -> None:
    """Conformance first (failing cells skip, saying why), then fixed-round pedantic timing of the artifact's
    runner on prepared inputs, paired round by round with PyTorch eager, recorded in ``benchmark.extra_info``."""
    latency.require_timing(benchmark)
    prepared = latency.prepare(latency_case, harness)
    timed = latency.bench(prepared, benchmark)
    record = latency.record(prepared, timed, benchmark)
    latency.gate(prepared, timed, record)


def test_latency_budget(budget_case, latency, harness) -> None:
    """Opt-in (``--latency-budgets=PROFILE``): p95/p99/median at batch 1 within the model's declared budget."""
    latency.check_budget(budget_case, harness)
