"""The latency suite: one pytest-benchmark benchmark per passing cell and batch size, plus PyTorch eager rows.

Ids are ``MODEL-TARGET-bB`` (``sign_gru-onnx:fp32-b4``, ``sign_gru-torch:eager-b4``). The default scope times the
smoke models at batch 1; ``--latency-scope=full`` times every cell at every batch of ``--latency-batches``
(default 1,4,16). ``--latency-gate`` compares each with the stored baseline. See docs/latency.md.
"""

from export_harness.plugin.items import test_latency, test_latency_budget

__all__ = ["test_latency", "test_latency_budget"]
