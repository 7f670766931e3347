"""Structure of an ONNX artifact: onnx.checker, the declared I/O names, the declared-dynamic axes symbolic.

Kept apart from the exporters: a check is not conversion code, so changing it does not re-key cached artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from export_harness.converters.target import StructureError
from export_harness.converters.util.errors import error_head
from export_harness.models.spec import ModelSpec


def onnx_opset(model: onnx.ModelProto) -> int:
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def check_onnx_structure(path: Path, spec: ModelSpec) -> dict[str, Any]:
    """onnx.checker (full), I/O names as declared, and the declared-dynamic batch axes really symbolic (the length
    axes are the dynamic-lengths check's: :func:`frozen_axes`)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise StructureError(f"onnx.checker rejected {path.name}: {error_head(exc)}") from exc
    proto = onnx.load(str(path), load_external_data=False)
    inputs = {vi.name: vi for vi in proto.graph.input}
    outputs = {vi.name: vi for vi in proto.graph.output}
    for names, found, kind in ((spec.input_names, inputs, "input"), (spec.output_names, outputs, "output")):
        missing = [n for n in names if n not in found]
        if missing:
            raise StructureError(f"{kind} {missing[0]!r} not in graph {kind}s {sorted(found)}")
    frozen = frozen_axes(proto, spec, lengths=False)
    if frozen:
        raise StructureError("declared-dynamic axis frozen in the graph: " + ", ".join(frozen))
    return {"opset": onnx_opset(proto), "nodes": len(proto.graph.node),
            "op_types": sorted({n.op_type for n in proto.graph.node})}


def frozen_axes(proto: onnx.ModelProto, spec: ModelSpec, *, lengths: bool) -> list[str]:
    """Declared-dynamic axes the graph's I/O fixes to a number: the batch axes, or (``lengths``) the others."""
    values = {vi.name: vi for vi in [*proto.graph.input, *proto.graph.output]}
    frozen = []
    for name, axes in spec.onnx_dynamic_axes().items():
        dims = values[name].type.tensor_type.shape.dim
        for axis, symbol in sorted(axes.items()):
            if (symbol != "batch") == lengths and len(dims) > axis and dims[axis].HasField("dim_value"):
                frozen.append(f"{name}[{axis}] ({symbol})={dims[axis].dim_value}")
    return frozen
