"""Torch's per-operator Python dispatch caches, emptied before each conversion so one conversion cannot change the
next.

``OpOverload`` caches which Python kernel (decomposition) serves each dispatch key the first time it runs. The ONNX
dynamo exporter registers a while-loop decomposition of ``aten.gru`` / ``aten.lstm`` only for the duration of an
export with dynamic shapes, but a cache entry left by an earlier ``torch.export`` in the same process (litert-torch's
export of the same model, say) shadows it: the RNN is unrolled over the example's 300 frames and the length axis is
frozen (torch 2.13; ``suites/test_torch_dispatch.py`` shows it). Under pytest-xdist which cells share a worker, and so
the artifact, depended on scheduling.
"""

from __future__ import annotations

import torch


def clear_dispatch_caches() -> int:
    """Empty the dispatch cache of every operator overload loaded so far; returns how many held entries."""
    cleared = 0
    for namespace in list(vars(torch.ops).values()):
        if not isinstance(namespace, torch._ops._OpNamespace):
            continue
        for packet in list(vars(namespace).values()):
            if not isinstance(packet, torch._ops.OpOverloadPacket):
                continue
            for overload in list(vars(packet).values()):
                if not isinstance(overload, torch._ops.OpOverload):
                    continue
                cache = getattr(overload, "_dispatch_cache", None)
                if cache:
                    cache.clear()
                    cleared += 1
    return cleared
