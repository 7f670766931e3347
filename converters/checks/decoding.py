"""Greedy decoding on an exported decoder-step artifact, against the same loop on PyTorch.

A model whose spec declares ``extra["greedy_decoding"]`` exports one decoding step (memory + a fixed token window
-> next-token logits). The host loop writes BOS, then each step's argmax into the PAD tail, for ``steps`` steps,
as the G-code guide's deployment would; on PyTorch the loop equals ``generate()`` (``test_family_gcode.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export_harness.models.spec import ModelSpec, star_match

Step = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class GreedyContract:
    """Names and ids of a decoder step: ``memory`` / ``tokens`` inputs, ``logits`` output, BOS / PAD ids, how many
    tokens to decode, and the minimum exact-sequence agreement with PyTorch per threshold tier (``*`` wildcards).
    ``window`` (the token input's length) comes from the spec."""

    memory: str
    tokens: str
    logits: str
    bos_id: int
    pad_id: int
    steps: int
    min_agreement: Mapping[str, float]
    window: int = field(default=0)

    @classmethod
    def of(cls, spec: ModelSpec) -> GreedyContract | None:
        raw = spec.extra.get("greedy_decoding")
        if raw is None:
            return None
        window = next(i for i in spec.inputs if i.name == raw["tokens"]).shape[-1]
        if not isinstance(window, int) or not 0 < raw["steps"] < window:
            raise ValueError(f"{spec.name}: greedy_decoding.steps must be in 1..{window}, got {raw['steps']}")
        return cls(**raw, window=window)

    def minimum(self, tier: str) -> float:
        """The gate for a target of threshold tier ``tier`` (first matching key, else ``default``)."""
        return next((v for k, v in self.min_agreement.items() if k != "default" and star_match(k, tier)),
                    self.min_agreement["default"])


def greedy_decode(step: Step, contract: GreedyContract, memory: np.ndarray) -> np.ndarray:
    """[n, steps] token ids decoded by ``step`` (any runner: named numpy in, named numpy out), all samples at once."""
    tokens = np.full((len(memory), contract.window), contract.pad_id, np.int64)
    tokens[:, 0] = contract.bos_id
    for i in range(contract.steps):
        logits = np.asarray(step({contract.memory: memory, contract.tokens: tokens})[contract.logits])
        tokens[:, i + 1] = logits.argmax(-1)
    return tokens[:, 1:contract.steps + 1]


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Exact-sequence and per-token agreement of two [n, steps] decodes, and where the first divergence falls."""
    same = reference == candidate
    exact = same.all(axis=1)
    first = [int(np.argmin(row)) for row in same[~exact]]
    return {"samples": len(reference), "exact_sequence": float(exact.mean()), "token": float(same.mean()),
            "diverged": int((~exact).sum()), "first_divergence_step_median": float(np.median(first)) if first else None}
