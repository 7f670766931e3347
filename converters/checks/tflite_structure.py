"""What a .tflite file stores must match its name (fp32 / fp16 / int8 weights, float or int8 I/O).

The facts come from the worker's flatbuffer inspection (``tflite_inspect``). Kept apart from the TFLite targets: a
check is not conversion code, so changing it does not re-key cached artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from export_harness.converters.target import StructureError
from export_harness.models.spec import ModelSpec


def weight_fractions(weights: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Share of constant-tensor *elements* per dtype."""
    total = sum(w["elements"] for w in weights.values()) or 1
    return {dtype: round(w["elements"] / total, 4) for dtype, w in weights.items()}


def check_tflite_structure(precision: str, facts: Mapping[str, Any], spec: ModelSpec) -> None:
    """What the file stores must match its name, judged on the weights of its quantizable compute ops (convolutions,
    fully-connected, batch matmul, LSTM) when it has any, else on every constant: a float embedding table the
    quantizer keeps float does not make an int8 file "not int8". Raises StructureError with the evidence."""
    compute = facts.get("compute_weights") or {}
    fractions = weight_fractions(compute or facts["weights"])
    float_inputs = {i.name for i in spec.inputs if np.dtype(i.dtype).kind == "f"}
    io_types = [(d["name"], d["dtype"]) for d in facts["inputs"] + facts["outputs"]]
    basis = "compute-op weights" if compute else "constants (no compute-op weights found)"
    tables = {dtype: t["elements"] for dtype, t in (facts.get("tables") or {}).items()}
    evidence = f"{basis} by element share {fractions}; lookup-table elements {tables}; I/O {io_types}"
    problems = []
    if precision == "fp32":
        if fractions.get("float32", 0.0) < 0.5:
            problems.append("fp32 file whose weights are mostly not float32")
    elif precision == "fp16":
        if fractions.get("float16", 0.0) < 0.5:
            problems.append("fp16 file whose weights are mostly not float16")
    elif precision.startswith("int8"):
        if fractions.get("int8", 0.0) < 0.5:
            problems.append(f"{precision} file whose weights are mostly not int8")
    io_dtypes = [d["dtype"] for d in facts["inputs"]] + [d["dtype"] for d in facts["outputs"]]
    n_float_io = len(float_inputs) + len(spec.outputs)
    if precision == "int8-full":
        if sum(1 for d in io_dtypes if d == "int8") < n_float_io:
            problems.append(f"int8-full file without int8 I/O for all {n_float_io} float inputs/outputs")
    elif any(d in ("int8", "uint8") for d in io_dtypes):
        problems.append(f"{precision} file with quantized I/O (float I/O expected)")
    if problems:
        raise StructureError("; ".join(problems) + f" ({evidence})")
