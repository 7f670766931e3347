"""The conformance matrix: one test per (model variant, target) cell, generated from the registries.

Ids are ``MODEL-TARGET`` (``bst_cg_ap-onnx:fp32[dynamo]``); select with ``-k`` or ``-m smoke``.
"""

from __future__ import annotations


def test_cell(cell, check_cell) -> None:
    """Export, check structure, run at two batch sizes, and compare with PyTorch against the cell's tier."""
    result = check_cell(cell)
    assert result.status == "passed"
    assert result.parity, "a passing cell must have compared at least one batch"
