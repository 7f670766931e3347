"""The conformance matrix: one test per (model variant, target) cell, generated from the registries.

Ids are ``MODEL-TARGET`` (``bst_cg_ap-onnx:fp32[dynamo]``); select with ``-k`` or ``-m smoke``.
"""

from suites.plugin.items import test_cell

__all__ = ["test_cell"]
