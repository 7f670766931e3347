"""Execution and inspection ops of the TF worker (:mod:`export_harness.converters.tf.tf_worker`): ai-edge-litert
interpreters,
TensorFlow SavedModels, and flatbuffer inspection for the structure checks.

Kept apart from the conversion ops so that changing how artifacts are *run* does not invalidate converted
artifacts in the cache. stdlib + numpy at import time; frameworks are imported inside each op.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.util.versions import package_versions

MAX_LOADED = 8
"""Interpreters / SavedModels kept loaded per worker (a cell loads one or two, then the next cell's replace them)."""


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _remember(store: dict[str, Any], handle: str, value: Any, limit: int = MAX_LOADED) -> None:
    store.pop(handle, None)
    store[handle] = value
    while len(store) > limit:
        store.pop(next(iter(store)))


# ------------------------------------------------------------------------------------------------ structure


COMPUTE_WEIGHT_INPUTS = {
    "CONV_2D": (1,), "DEPTHWISE_CONV_2D": (1,), "TRANSPOSE_CONV": (1,), "CONV_3D": (1,), "FULLY_CONNECTED": (1,),
    "BATCH_MATMUL": (0, 1), "UNIDIRECTIONAL_SEQUENCE_LSTM": tuple(range(1, 9)),
}
"""Quantizable compute ops and the inputs that hold their weights (a constant there is a weight tensor)."""
TABLE_INPUTS = {"GATHER": (0,), "EMBEDDING_LOOKUP": (1,)}
"""Lookup ops and their table input: embedding tables, which quantizers may keep float, are reported apart."""


def tflite_inspect(path: str) -> dict[str, Any]:
    """Facts from the flatbuffer: I/O tensors, constant tensors by dtype (``weights``), the constant weights of
    quantizable compute ops by dtype (``compute_weights``; a weight stored in another dtype and DEQUANTIZEd first
    counts in its stored dtype), lookup tables by dtype (``tables``), op names."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = set()
    code_names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, str(builtin))
        code_names.append(name)
        ops.add(code.CustomCode().decode() if name == "CUSTOM" and code.CustomCode() else name)
    weights: dict[str, dict[str, int]] = {}
    compute: dict[str, dict[str, int]] = {}
    tables: dict[str, dict[str, int]] = {}
    io: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}

    def add(into: dict[str, dict[str, int]], dtype: str, elements: int, size: int) -> None:
        entry = into.setdefault(dtype, {"tensors": 0, "bytes": 0, "elements": 0})
        entry["tensors"] += 1
        entry["bytes"] += size
        entry["elements"] += elements

    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        constants: dict[int, tuple[str, int, int]] = {}  # tensor index -> (dtype, elements, bytes)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            dtype = type_names.get(tensor.Type(), str(tensor.Type()))
            buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
            size = buffer.DataLength() if buffer is not None else 0
            if size == 0 and buffer is not None and buffer.Size() > 0:  # large models keep data after the buffers
                size = buffer.Size()
            if size:
                elements = int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
                constants[t] = (dtype, elements, int(size))
                add(weights, dtype, elements, int(size))
        dequantized: dict[int, int] = {}  # output tensor of a DEQUANTIZE of a constant -> that constant
        operators = [graph.Operators(o) for o in range(graph.OperatorsLength())]
        for op in operators:
            if code_names[op.OpcodeIndex()] == "DEQUANTIZE" and op.InputsLength() and op.Inputs(0) in constants:
                dequantized[op.Outputs(0)] = op.Inputs(0)
        seen: set[tuple[str, int]] = set()
        for op in operators:
            name = code_names[op.OpcodeIndex()]
            for kind, positions in (("compute", COMPUTE_WEIGHT_INPUTS.get(name, ())),
                                    ("table", TABLE_INPUTS.get(name, ()))):
                for pos in positions:
                    if pos >= op.InputsLength():
                        continue
                    idx = dequantized.get(op.Inputs(pos), op.Inputs(pos))
                    if idx in constants and (kind, idx) not in seen:
                        seen.add((kind, idx))
                        dtype, elements, size = constants[idx]
                        add(compute if kind == "compute" else tables, dtype, elements, size)
        if s == 0:
            for kind, idx in (("inputs", graph.InputsAsNumpy()), ("outputs", graph.OutputsAsNumpy())):
                for i in np.atleast_1d(idx).tolist():
                    tensor = graph.Tensors(int(i))
                    io[kind].append({"name": tensor.Name().decode(), "dtype": type_names.get(tensor.Type())})
    return {"size_bytes": len(buf), "weights": weights, "compute_weights": compute, "tables": tables,
            "ops": sorted(ops), **io, "versions": package_versions("ai-edge-litert")}


# ------------------------------------------------------------------------------------------------ execution

_INTERPRETERS: dict[str, Any] = {}
_SAVEDMODELS: dict[str, Any] = {}


def _details(d: dict[str, Any]) -> dict[str, Any]:
    q = d.get("quantization_parameters", {})
    return {"name": d["name"], "index": int(d["index"]), "shape": d["shape"].tolist(),
            "shape_signature": d["shape_signature"].tolist(), "dtype": np.dtype(d["dtype"]).name,
            "scales": np.asarray(q.get("scales", [])).tolist(),
            "zero_points": np.asarray(q.get("zero_points", [])).tolist(),
            "quantized_dimension": int(q.get("quantized_dimension", 0))}


def tflite_load(path: str, delegates: str = "default", threads: int = 2) -> dict[str, Any]:
    """Open a .tflite on ai-edge-litert; ``delegates`` is ``default`` (XNNPACK) or ``none`` (builtin kernels only)."""
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates == "default" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=path, num_threads=threads, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    handle = f"{path}|{delegates}|{threads}"
    _remember(_INTERPRETERS, handle, interp)
    signatures = interp.get_signature_list()
    sig = {}
    if signatures:
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = interp.get_signature_runner(key)
        sig = {"key": key, "inputs": {n: _details(d) for n, d in runner.get_input_details().items()},
               "outputs": {n: _details(d) for n, d in runner.get_output_details().items()}}
    version = getattr(ai_edge_litert, "__version__", None) or package_versions("ai-edge-litert")["ai-edge-litert"]
    return {"handle": handle, "signature": sig, "runtime_version": version,
            "inputs": [_details(d) for d in interp.get_input_details()],
            "outputs": [_details(d) for d in interp.get_output_details()]}


def _timed_calls(call: Callable[[], dict[str, Any]], repeat: int, cpu_clock: Callable[[], float] = time.process_time
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``repeat`` calls back to back, each timed on this process's wall clock and ``cpu_clock`` around the invoke
    alone: (the last call's outputs, ``seconds`` / ``cpu_seconds`` summed over the calls and ``calls``). Repeating
    here, on one exchange of the inputs, is how a loop on the runtime's own API runs: the exchange's reading and
    writing of .npz files between two invokes would otherwise evict the artifact's weights from the CPU caches."""
    seconds = cpu = 0.0
    calls = max(1, int(repeat))
    for _ in range(calls):
        w0, c0 = time.perf_counter(), cpu_clock()
        result = call()
        cpu, seconds = cpu + cpu_clock() - c0, seconds + time.perf_counter() - w0
    return result, {"seconds": seconds, "cpu_seconds": cpu, "calls": calls}


def tflite_run(handle: str, inputs: str, outputs: str, repeat: int = 1) -> dict[str, Any]:
    """Run ``repeat`` invocations (see :func:`_timed_calls`): ``inputs`` .npz keyed by signature input name (or
    ``#index``), outputs likewise. An interpreter with one thread runs every kernel on the calling thread, so its
    CPU time is that thread's: other threads of this worker (other interpreters' pools) never count."""
    interp = _INTERPRETERS[handle]
    feeds = load_npz(inputs)
    one_thread = handle.rsplit("|", 1)[-1] == "1"
    result, timing = _timed_calls(lambda: _invoke(interp, feeds), repeat,
                                  time.thread_time if one_thread else time.process_time)
    np.savez(outputs, **{k: np.asarray(v) for k, v in result.items()})
    return timing


def _invoke(interp: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not any(k.startswith("#") for k in feeds):
        runner = getattr(interp, "_harness_signature_runner", None)
        if runner is None:  # made once per interpreter: building it per call cost ~15% of a 5 ms invoke
            signatures = interp.get_signature_list()
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            runner = interp._harness_signature_runner = interp.get_signature_runner(key)
        result = runner(**feeds)
    else:
        for k, v in feeds.items():
            index = int(k[1:])
            if tuple(interp.get_tensor(index).shape) != v.shape:
                interp.resize_tensor_input(index, list(v.shape))
                interp.allocate_tensors()
            interp.set_tensor(index, v)
        interp.invoke()
        result = {f"#{d['index']}": interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    return result


def _dequantized(value: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """A tensor's real value: int8/uint8/int16 tensors through their (per-tensor or per-axis) scale and zero point."""
    q = details.get("quantization_parameters", {})
    scales, zps = np.asarray(q.get("scales", [])), np.asarray(q.get("zero_points", []))
    if value.dtype.kind not in "iu" or not scales.size:
        return value.astype(np.float32) if value.dtype.kind == "f" else value
    shape = [1] * value.ndim
    if scales.size > 1 and value.ndim:
        shape[int(q.get("quantized_dimension", 0))] = scales.size
    return ((value.astype(np.float64) - zps.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def _real_valued(details: dict[str, Any]) -> bool:
    """Float tensors, and integer tensors carrying a quantization scale (not indices, shapes or token ids)."""
    kind = np.dtype(details["dtype"]).kind
    return kind == "f" or (kind in "iu" and len(details.get("quantization_parameters", {}).get("scales", [])) > 0)


def tflite_intermediates(path: str, inputs: list[str], outputs: str) -> dict[str, Any]:
    """Every operator's output tensors, for localisation (what TFLite's quantization debugger compares).

    Runs each feed file of ``inputs`` (one sample each, keyed like :func:`tflite_run`) once on the reference
    kernels with ``experimental_preserve_all_tensors`` (delegates would fuse and free intermediates), and writes
    every float or quantized operator output, dequantized to float32 and stacked over the samples, into the
    ``outputs`` .npz keyed by tensor name. Returns the operators in execution order with their output names.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=path, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details() if _real_valued(d)}
    ops = [op for op in interp._get_ops_details() if len(op["outputs"])]  # the only API giving execution order
    values: dict[str, list[np.ndarray]] = {}
    for feed in inputs:
        _invoke(interp, load_npz(feed))
        for op in ops:
            for index in op["outputs"]:
                det = details.get(int(index))
                if det is None:
                    continue
                try:
                    value = interp.get_tensor(int(index))
                except ValueError:  # freed or never written (e.g. a control-flow subgraph's tensor)
                    continue
                values.setdefault(det["name"], []).append(_dequantized(np.array(value), det))
    stacked = {name: np.stack(v) for name, v in values.items() if len(v) == len(inputs)
               and len({a.shape for a in v}) == 1}
    np.savez(outputs, **{f"t{i}": v for i, v in enumerate(stacked.values())})
    order = [{"op": op["op_name"], "outputs": [details[int(i)]["name"] for i in op["outputs"]
                                                if int(i) in details and details[int(i)]["name"] in stacked]}
             for op in ops]
    return {"names": list(stacked), "ops": [o for o in order if o["outputs"]]}


def tflite_unload(handle: str) -> dict[str, Any]:
    _INTERPRETERS.pop(handle, None)
    _SAVEDMODELS.pop(handle, None)
    return {}


def savedmodel_load(path: str) -> dict[str, Any]:
    """Load a SavedModel on TensorFlow; returns the serving signature's input and output specs."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    _remember(_SAVEDMODELS, path, (loaded, fn), limit=2)
    specs = fn.structured_input_signature[1]
    inputs = {n: {"shape": [d if d is not None else -1 for d in s.shape.as_list()], "dtype": s.dtype.name}
              for n, s in specs.items()}
    outs = {n: {"shape": [d if d is not None else -1 for d in s.shape.as_list()], "dtype": s.dtype.name}
            for n, s in fn.structured_outputs.items()}
    return {"handle": path, "inputs": inputs, "outputs": outs, "runtime_version": tf.__version__}


def savedmodel_run(handle: str, inputs: str, outputs: str, repeat: int = 1) -> dict[str, Any]:
    """Run the serving signature ``repeat`` times (see :func:`_timed_calls`)."""
    import tensorflow as tf

    _, fn = _SAVEDMODELS[handle]
    feeds = {k: tf.constant(v) for k, v in load_npz(inputs).items()}
    result, timing = _timed_calls(lambda: {k: v.numpy() for k, v in fn(**feeds).items()}, repeat)
    np.savez(outputs, **result)
    return timing


RUNTIME_HANDLERS = {
    "tflite_inspect": tflite_inspect,
    "tflite_intermediates": tflite_intermediates,
    "tflite_load": tflite_load,
    "tflite_run": tflite_run,
    "tflite_unload": tflite_unload,
    "savedmodel_load": savedmodel_load,
    "savedmodel_run": savedmodel_run,
}
