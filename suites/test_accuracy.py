"""The accuracy matrix: (model with a proxy task) x (compression method with a budget), ids ``MODEL-TARGET``.

Each cell measures the method's task metric on the proxy task's held-out eval split against the FP32 PyTorch
reference (trained reference weights, or ``--harness-weights``), and fails when the drop exceeds its budget
(baselines/accuracy_budgets.toml) beyond bootstrap noise, or falls below the stored baseline (ratchet). A failing
cell prints a per-layer localisation table. Update baselines: ``pytest suites/test_accuracy.py
--accuracy-update-baselines``.
"""

from export_harness.plugin.items import test_accuracy

__all__ = ["test_accuracy"]
