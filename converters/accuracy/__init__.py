"""Accuracy measurement: a compression method's artifact run over a proxy task's eval split against the FP32
PyTorch model (``evaluate``), and the calibration-count study (``calibration_curve``). The rules that judge the
numbers (budgets, bootstrap, ratchet, stored baselines) are ``export_harness.converters.checks.accuracy``."""
