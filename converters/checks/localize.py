"""Localisation: which layer broke? Layer-by-layer comparison of a compressed artifact against its FP32 reference.

- ONNX artifacts: each intermediate tensor of the FP32 ONNX graph is compared with the method graph's tensor that
  carries the same value (QDQ, dynamic-quantized and float16 graphs keep the FP32 tensor names). A name is not
  enough: when a quantizer removes an activation (ORT folds a Clip / Relu into the following QuantizeLinear's
  range), it gives the activation's output name to the unclipped input. The producing ops decide (provenance): the
  same op (or its integer form) is compared directly, a removed activation is compared after its Q/DQ (where the
  quantization range applies it), and anything else has no counterpart and is not compared (the report counts
  them). Both graphs run on the same inputs; each tensor gets cosine similarity and SQNR (dB).
- TFLite artifacts: the method's .tflite against the FP32 .tflite of the same converter, tensor by tensor (what
  TFLite's quantization debugger compares): both run on the interpreter's reference kernels keeping every
  intermediate tensor, quantized tensors are dequantized, tensors are matched by name (converters keep the float
  graph's tensor names when they quantize it).
- TorchScript methods (eager transforms): forward hooks on every leaf module of the FP32 model and of the
  transformed copy (same qualified names).

Rows are in execution order; ``first_bad`` are the first rows whose SQNR or cosine falls below threshold (errors
propagate downstream, so the first one is where it broke), and the report also lists the worst rows.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export_harness.converters.checks.compare import cosine_similarity

SQNR_MIN_DB = 20.0
COSINE_MIN = 0.99
FULL_INT8_LIMITS = (10.0, 0.95)
"""Methods that quantize activations too (int8 static / full integer): one int8 rounding of a real activation with
outliers already measures 15-19 dB (TinyLaDeDa-patch int8-full, every layer, both converters), so a layer is
flagged below 10 dB SQNR (noise a tenth of the signal's power) or cosine 0.95."""
FULL_INT8_TIERS = ("int8-static", "int8-full")
MASK_MAGNITUDE = 1e30


@dataclass
class LayerRow:
    """One compared tensor: its producing layer, op, cosine and SQNR against the reference."""

    layer: str
    op: str
    tensor: str
    cosine: float
    sqnr_db: float


@dataclass
class LayerReport:
    """Per-layer comparison in execution order."""

    rows: list[LayerRow]
    reference: str
    sqnr_min_db: float = SQNR_MIN_DB
    cosine_min: float = COSINE_MIN
    clean_hint: str = ""
    """Appended to "no layer below threshold" (what a clean comparison against this reference means)."""
    uncompared: int = 0
    """Reference tensors the method's graph has no counterpart of (an op it removed or fused)."""

    def bad(self, row: LayerRow) -> bool:
        return row.sqnr_db < self.sqnr_min_db or row.cosine < self.cosine_min

    def first_bad(self, n: int = 5) -> list[LayerRow]:
        return [r for r in self.rows if self.bad(r)][:n]

    def worst(self, n: int = 3) -> list[LayerRow]:
        return sorted(self.rows, key=lambda r: r.sqnr_db)[:n]

    def table(self, n: int = 5) -> str:
        first = self.first_bad(n)
        skipped = f" ({self.uncompared} without a counterpart: removed or fused)" if self.uncompared else ""
        lines = [f"localisation vs {self.reference}: {len(self.rows)} tensors compared{skipped}, "
                 f"{sum(map(self.bad, self.rows))} below SQNR {self.sqnr_min_db:g} dB or cosine {self.cosine_min}"]
        head = f"  {'#':>3} {'layer':<48} {'op':<18} {'cosine':>9} {'SQNR dB':>8}"
        if first:
            lines += ["  first layers below threshold (execution order):", head]
            lines += [self._row(self.rows.index(r), r) for r in first]
        else:
            lines.append(f"  no layer below threshold{self.clean_hint}")
        lines += ["  worst layers:", head] + [self._row(self.rows.index(r), r) for r in self.worst()]
        return "\n".join(lines)

    @staticmethod
    def _row(i: int, r: LayerRow) -> str:
        return f"  {i:>3} {r.layer[:48]:<48} {r.op[:18]:<18} {r.cosine:>9.5f} {r.sqnr_db:>8.2f}"


def limits_for(tier: str) -> tuple[float, float]:
    """(SQNR dB, cosine) below which a layer is flagged, for a method of this thresholds tier."""
    return FULL_INT8_LIMITS if tier in FULL_INT8_TIERS else (SQNR_MIN_DB, COSINE_MIN)


def compare_tensors(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(cosine, SQNR dB) of ``test`` against ``ref`` (float64; identical tensors give SQNR inf)."""
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(test, np.float64).ravel()
    # Attention masks hold -inf or the float32 minimum, which FP16 stores as -inf: such elements are compared only
    # in that both are masked; a finite reference element that became inf/NaN is a break (cosine 0, SQNR -inf).
    masked = ~np.isfinite(a) | (np.abs(np.nan_to_num(a)) >= MASK_MAGNITUDE)
    if np.any(~masked & ~np.isfinite(b)):
        return 0.0, float("-inf")
    a, b = a[~masked], np.clip(b[~masked], -MASK_MAGNITUDE, MASK_MAGNITUDE)
    cos = cosine_similarity(a, b)
    noise = float(np.sum((a - b) ** 2))
    sqnr = float("inf") if noise == 0 else 10.0 * np.log10(max(float(np.sum(a * a)), 1e-30) / noise)
    return cos, sqnr


def layer_name(node_name: str) -> str:
    """``/encoder/layers.0/attn/to_qkv/MatMul`` -> ``encoder.layers.0.attn.to_qkv`` (the PyTorch module path)."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1]) if len(parts) > 1 else node_name


def _with_all_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model


def _run_onnx(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(model, str(path))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        wanted = [n for n in names if n in {o.name for o in session.get_outputs()}]
        values = session.run(wanted, dict(feeds))
    return dict(zip(wanted, values, strict=True))


INTEGER_FORMS = {"Conv": {"ConvInteger", "QLinearConv"}, "MatMul": {"MatMulInteger", "QLinearMatMul"},
                 "Gemm": {"QGemm"}, "Add": {"QLinearAdd"}, "Mul": {"QLinearMul"}}
"""Ops a quantizer may replace by an integer op that produces the same value under the same tensor name."""
FOLDABLE_ACTIVATIONS = {"Relu", "Clip"}
"""Activations a quantizer removes when a QuantizeLinear follows: the quantization range then clips instead."""


def counterparts(ref: onnx.ModelProto, cand: onnx.ModelProto) -> tuple[list[tuple[onnx.NodeProto, str, str]], int]:
    """(reference node, reference tensor, candidate tensor carrying the same value) in the reference's order, and how
    many reference tensors have none: absent from the candidate, or the output of an activation the candidate
    removed without a Q/DQ that applies it. A same-named tensor of another op is trusted otherwise (dynamic int8
    rewrites a Conv as ConvInteger ... Mul, whose last op keeps the Conv's output name and value)."""
    cand_producer = {o: n for n in cand.graph.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in cand.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pairs, unmatched = [], 0
    for node in ref.graph.node:
        for out in (o for o in node.output if o):
            op = cand_producer[out].op_type if out in cand_producer else None
            if op is None:
                unmatched += 1
            elif op == node.op_type or op in INTEGER_FORMS.get(node.op_type, ()):
                pairs.append((node, out, out))
            elif node.op_type not in FOLDABLE_ACTIVATIONS:
                pairs.append((node, out, out))
            elif folded := _after_qdq(out, consumers):
                pairs.append((node, out, folded))
            else:
                unmatched += 1
    return pairs, unmatched


def _after_qdq(name: str, consumers: Mapping[str, list[onnx.NodeProto]]) -> str | None:
    """The output of the DequantizeLinear that follows ``name``'s QuantizeLinear, if there is one."""
    for q in (n for n in consumers.get(name, []) if n.op_type == "QuantizeLinear"):
        for dq in (n for n in consumers.get(q.output[0], []) if n.op_type == "DequantizeLinear"):
            return dq.output[0]
    return None


def onnx_layer_report(reference: Path, candidate: Path, feeds: Mapping[str, np.ndarray]) -> LayerReport:
    """Compare each intermediate float tensor of the FP32 ``reference`` graph with its counterpart in
    ``candidate`` (:func:`counterparts`)."""
    ref = onnx.load(str(reference))
    cand = onnx.load(str(candidate))
    pairs, unmatched = counterparts(ref, cand)
    ref_vals = _run_onnx(_with_all_outputs(ref, [r for _, r, _ in pairs]), feeds, [r for _, r, _ in pairs])
    cand_vals = _run_onnx(_with_all_outputs(cand, [c for _, _, c in pairs]), feeds, [c for _, _, c in pairs])
    rows = []
    for node, out, counterpart in pairs:
        a, b = ref_vals.get(out), cand_vals.get(counterpart)
        if a is None or b is None or a.shape != b.shape or not np.issubdtype(a.dtype, np.floating):
            continue
        if not np.issubdtype(b.dtype, np.floating):
            continue
        cos, sqnr = compare_tensors(a, b)
        op = node.op_type if counterpart == out else f"{node.op_type} (after Q/DQ)"
        rows.append(LayerRow(layer_name(node.name or out), op, out, cos, sqnr))
    return LayerReport(rows, reference=f"FP32 ONNX ({reference.parent.name[:12]})", uncompared=unmatched)


def tflite_layer_name(tensor: str) -> str:
    """A readable layer for a TFLite tensor. litert-torch names a fused tensor by the scopes of its ops
    (``pkg.Net/torch.nn.modules.container.Sequential_layer1/pkg.Block_0/torch.nn.modules.activation.ReLU_relu;;
    .../torch.nn.modules.conv.Conv2d_conv1``): these become PyTorch module paths, ``layer1.0.relu+conv1``. Other
    names (onnx2tf's ``model/tf.nn.relu/Relu;...``) keep their first component, without TF's ``model/`` prefix;
    an ONNX-scoped one becomes the module path like :func:`layer_name`."""
    parts = [p for p in tensor.split(";") if p and not p.isdigit()]  # ";1": a uniquifying suffix
    paths = [path for path in map(_litert_module_path, parts) if path]
    if paths and len(paths) == len(parts):
        paths = list(dict.fromkeys(paths))
        prefix = paths[0].rsplit(".", 1)[0] + "." if "." in paths[0] else ""
        return paths[0] + "".join("+" + p.removeprefix(prefix) if p.startswith(prefix) else "+" + p
                                  for p in paths[1:])
    name = parts[0] if parts else tensor
    for prefix in ("StatefulPartitionedCall/", "model/", "wa/"):
        name = name.removeprefix(prefix)
    return layer_name(name) if name.startswith("/") else name


def _litert_module_path(scope: str) -> str | None:
    """``pkg.Net/torch...Sequential_layer1/pkg.Block_0`` -> ``layer1.0``; None when it is not such a scope."""
    scopes = scope.split("/")[1:]  # the first scope is the root module's class
    attrs = [s.rsplit(".", 1)[-1].split("_", 1)[1] for s in scopes if "_" in s.rsplit(".", 1)[-1]]
    return ".".join(attrs) if attrs and len(attrs) == len(scopes) else None


def tflite_layer_report(reference: Any, candidate: Any, inputs: Mapping[str, np.ndarray]) -> LayerReport:
    """Compare every operator output of ``candidate`` (a TFLiteRunner) with the same-named tensor of the FP32
    ``reference`` runner of the same converter, in the reference's execution order."""
    ref_ops, ref_vals = reference.intermediates(inputs)
    _, cand_vals = candidate.intermediates(inputs)
    # Fused tensors are named "a;b;c" and quantizing re-fuses the tail differently: match the exact name, else the
    # first component when it names one tensor on each side.
    firsts = Counter(n.split(";")[0] for n in cand_vals)
    by_first = {n.split(";")[0]: n for n in cand_vals if firsts[n.split(";")[0]] == 1}
    ref_firsts = Counter(n.split(";")[0] for n in ref_vals)
    rows = []
    for op in ref_ops:
        for name in op["outputs"]:
            first = name.split(";")[0]
            match = name if name in cand_vals else by_first.get(first) if ref_firsts[first] == 1 else None
            a, b = ref_vals[name], cand_vals.get(match) if match else None
            if b is None or a.shape != b.shape:
                continue
            cos, sqnr = compare_tensors(a, b)
            rows.append(LayerRow(tflite_layer_name(name), op["op"], name, cos, sqnr))
    return LayerReport(rows, reference=f"FP32 TFLite of the same converter ({reference.path.parent.name[:12]})",
                       clean_hint=": the method's layers match the converter's FP32 .tflite, so what was lost was "
                                  "lost in the FP32 conversion (see its tflite:fp32 conformance cell)")


def torch_layer_report(reference: nn.Module, candidate: nn.Module, args: tuple[torch.Tensor, ...]) -> LayerReport:
    """Compare the outputs of every leaf module present (by name) in both eager models."""
    def leaves(model: nn.Module) -> dict[str, nn.Module]:
        return {n: m for n, m in model.named_modules() if n and not list(m.children())}

    ref_leaves, cand_leaves = leaves(reference), leaves(candidate)
    order: list[str] = []
    captured: dict[str, dict[str, torch.Tensor]] = {"ref": {}, "cand": {}}

    def hook(which: str, name: str):
        def fn(_module: nn.Module, _inp: object, out: object) -> None:
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor) and t.is_floating_point() and name not in captured[which]:
                captured[which][name] = t.detach().float().clone()
                if which == "ref":
                    order.append(name)
        return fn

    handles = [m.register_forward_hook(hook("ref", n)) for n, m in ref_leaves.items() if n in cand_leaves]
    handles += [m.register_forward_hook(hook("cand", n)) for n, m in cand_leaves.items() if n in ref_leaves]
    try:
        with torch.no_grad():
            reference(*args)
            candidate(*args)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name in order:
        a, b = captured["ref"].get(name), captured["cand"].get(name)
        if b is None or a.shape != b.shape:
            continue
        cos, sqnr = compare_tensors(a.numpy(), b.numpy())
        rows.append(LayerRow(name, type(cand_leaves[name]).__name__, name, cos, sqnr))
    return LayerReport(rows, reference="FP32 PyTorch (eager)")
