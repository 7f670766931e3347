"""Copies of target chains in other settings: the ONNX opset axis and guide 001's quantize -> ONNX -> TF chain.

- ``onnx:fp32`` and every target built from it (ORT fp16/int8, onnx2tf, onnx-tf), again at each opset of the axis
  (``converters/defaults/opsets.toml``): ``onnx:fp32@opset12``, ``tflite:int8-full[onnx-tf]@opset12``.
- Guide 001's chain: the guide-quantized ONNX (``onnx:fp32[guide-quantizer-int8]@opsetN``) through the TF backends
  (``tflite:fp32[onnx-tf]@guide-int8-opsetN``), judged with the ``guide-int8`` tier where the target's own tier is
  stricter (its fp32 and fp16 files hold the guide's int8-grid weights).

Copies share their original's code (same class), so their cache keys differ only by name, opset and dependencies.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable

from export_harness.converters.defaults import default_path
from export_harness.converters.target import Target

ONNX_ROOT = "onnx:fp32"
GUIDE_ROOT = "onnx:fp32[guide-quantizer-int8]"
GUIDE_CHAIN = "guide-int8"
_GUIDE_TIER_OVER = ("fp32", "fp16")
"""Tiers stricter than ``guide-int8``: a guide-chain copy with one of these is judged with ``guide-int8``."""


def sweep_opsets() -> tuple[int, ...]:
    """The opsets of the axis, from the packaged ``opsets.toml`` (``sweep``)."""
    path = default_path("opsets.toml")
    with path.open("rb") as fh:
        sweep = tomllib.load(fh).get("sweep", [])
    if not isinstance(sweep, list) or not all(isinstance(n, int) and 7 <= n <= 30 for n in sweep):
        raise ValueError(f"{path}: 'sweep' must be a list of ONNX opsets (integers 7-30), got {sweep!r}")
    return tuple(sweep)


def onnx_chain(targets: Iterable[Target]) -> list[Target]:
    """``onnx:fp32`` and every target built from it, directly or through another target of the chain."""
    targets = list(targets)
    chain: set[str] = set()
    changed = True
    while changed:
        changed = False
        for target in targets:
            if target.name not in chain and (target.name == ONNX_ROOT or any(d in chain for d in target.depends_on)):
                chain.add(target.name)
                changed = True
    return [t for t in targets if t.name in chain]


def _copy(target: Target, *, variant: str, opset: int, chain: str = "",
          deps: tuple[tuple[str, str], ...] = ()) -> Target:
    clone = copy.copy(target)
    clone.variant, clone.opset_variant, clone.chain, clone.variant_deps = variant, opset, chain, deps
    if hasattr(clone, "opset") and not target.depends_on:  # an exporter: it writes the chain's opset
        clone.opset = opset  # type: ignore[attr-defined]
    return clone


def opset_variants(targets: Iterable[Target], opsets: Iterable[int]) -> list[Target]:
    """A copy of the ``onnx:fp32`` chain per opset, in chain order."""
    chain = onnx_chain(targets)
    return [_copy(t, variant=f"@opset{n}", opset=n) for n in opsets for t in chain]


def guide_chain_variants(targets: Iterable[Target], opsets: Iterable[int]) -> list[Target]:
    """Per opset, the guide-quantized ONNX export and the TF backends' targets built from it."""
    targets = list(targets)
    root = next((t for t in targets if t.name == GUIDE_ROOT), None)
    if root is None:
        return []
    tf_chain = [t for t in onnx_chain(targets) if t.format in ("tf", "tflite")]
    out = []
    for n in opsets:
        guide = _copy(root, variant=f"@opset{n}", opset=n, chain=GUIDE_CHAIN)
        out.append(guide)
        for target in tf_chain:
            clone = _copy(target, variant=f"@{GUIDE_CHAIN}-opset{n}", opset=n, chain=GUIDE_CHAIN,
                          deps=((ONNX_ROOT, guide.name),))
            if clone.tier in _GUIDE_TIER_OVER:
                clone.tier = root.tier
            out.append(clone)
    return out
