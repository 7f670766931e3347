"""A small model with BST's exact I/O contract, for the TFLite serving handler (``suites/test_serving.py``).

No BST cell converts to TFLite (every TFLite backend is a declared limitation of the BST specs), so the TFLite
handler is exercised on this model instead: the same four inputs and the same 25-class logits, small enough for
litert-torch to convert in seconds. It lives in an importable module (not the test file) because litert-torch's
worker unpickles the model.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from export_harness.models.spec import ModelSpec


class BSTContractStub(nn.Module):
    """Per-frame MLP over JnB, shuttle and pos, mean-pooled over the ``video_len`` valid frames, then 25 logits."""

    def __init__(self, seq_len: int = 100, n_people: int = 2, in_dim: int = 72, hidden: int = 64,
                 n_class: int = 25) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.frame = nn.Sequential(nn.Linear(n_people * in_dim + 2 + n_people * 2, hidden), nn.GELU())
        self.head = nn.Linear(hidden, n_class)

    def forward(self, JnB: Tensor, shuttle: Tensor, pos: Tensor, video_len: Tensor) -> Tensor:
        b, t = JnB.shape[0], JnB.shape[1]
        x = torch.cat((JnB.reshape(b, t, -1), shuttle, pos.reshape(b, t, -1)), dim=-1)
        h = self.frame(x)
        valid = (torch.arange(t).unsqueeze(0) < video_len.unsqueeze(1)).to(h.dtype).unsqueeze(-1)
        pooled = (h * valid).sum(dim=1) / valid.sum(dim=1)
        return self.head(pooled) * 4.0


def stub_spec(bst: ModelSpec) -> ModelSpec:
    """``bst``'s inputs and output with :class:`BSTContractStub` as the model; no task or weights."""
    return dataclasses.replace(
        bst, name="bst_contract_stub", family="serving", factory=BSTContractStub, reference_params=None,
        description="BST I/O contract stand-in for the TFLite serving handler", smoke=False, slow=False,
        guide_opsets=(), guide_chains=(), tolerances={}, notes="", extra={}, task=None, training=None,
        weights_from=None)
