"""The conformance matrix: one test per (model variant, target) cell, generated from the registries.

Ids are ``MODEL-TARGET`` (``bst_cg_ap-onnx:fp32[dynamo]``); select with ``-k`` or ``-m smoke``. Models with
dynamic non-batch axes also get ``test_dynamic_lengths[MODEL-TARGET]``: the same artifact at their other lengths.
"""

from export_harness.plugin.items import test_cell, test_dynamic_lengths

__all__ = ["test_cell", "test_dynamic_lengths"]
