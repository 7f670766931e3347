"""ONNX graph surgery for the divergence finder: every node's reference output (ONNX Runtime, fp32), sub-models cut
out of a graph (a prefix ending at a node, or a few nodes before it with their captured inputs), and a
node described in words."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If / Loop / Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
            produced |= {t.name for t in graph.initializer}
            for inner in graph.node:
                names |= {i for i in (*inner.input, *subgraph_inputs(inner)) if i and i not in produced}
    return names


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs and what its subgraphs take from outside."""
    return list(dict.fromkeys([i for i in node.input if i] + sorted(subgraph_inputs(node))))


def reference_values(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every top-level node output (and the graph inputs) computed by ONNX Runtime in fp32, all exposed as outputs."""
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for out in node.output:
            if out and out not in known:
                exposed.graph.output.append(onnx.ValueInfoProto(name=out))
                known.add(out)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, dict(feeds)), strict=True))
    return {**{k: np.asarray(v) for k, v in feeds.items()}, **values}


def is_float(value: np.ndarray | None) -> bool:
    return value is not None and np.asarray(value).dtype.kind == "f"


def depends_on_inputs(model: onnx.ModelProto) -> set[str]:
    """Tensors computed from a graph input (the rest is constant: weights, shapes a converter folds)."""
    live = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if any(t in live for t in node_inputs(node)):
            live.update(o for o in node.output if o)
    return live


def neighbourhood(model: onnx.ModelProto, index: int, depth: int) -> set[int]:
    """Node ``index`` and the nodes computed from the inputs up to ``depth`` producer hops before it."""
    live = depends_on_inputs(model)
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output if o}
    found, frontier = {index}, {index}
    for _ in range(depth):
        frontier = {producer[t] for i in frontier for t in node_inputs(model.graph.node[i])
                    if t in producer and t in live} - found
        if not frontier:
            break
        found |= frontier
    return found


def ancestors(model: onnx.ModelProto, outputs: Iterable[str]) -> list[int]:
    """Indices (topological order) of the nodes ``outputs`` depend on."""
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output if o}
    wanted, todo = set(), [producer[o] for o in outputs if o in producer]
    while todo:
        i = todo.pop()
        if i in wanted:
            continue
        wanted.add(i)
        todo += [producer[t] for t in node_inputs(model.graph.node[i]) if t in producer]
    return sorted(wanted)


def cut(model: onnx.ModelProto, outputs: Sequence[str], values: Mapping[str, np.ndarray],
        within: Collection[int] | None = None) -> onnx.ModelProto:
    """The sub-model computing ``outputs``: the nodes they depend on (only those in ``within`` when given). A tensor
    it reads from outside is a graph input of the original graph (with its declared shape), else a graph input of the
    captured shape when it is a float computed from the inputs (an activation), else an initializer holding the
    captured value (weights, shape tensors, masks and indices: what the converter constant-folds in the full graph).
    """
    graph = model.graph
    live = depends_on_inputs(model)
    keep = [i for i in ancestors(model, outputs)
            if within is None or (i in within and any(o in live for o in graph.node[i].output))]
    nodes = [graph.node[i] for i in keep]
    produced = {o for n in nodes for o in n.output if o}
    inits = {t.name: t for t in graph.initializer}
    declared = {i.name: i for i in graph.input}
    read = list(dict.fromkeys(t for n in nodes for t in node_inputs(n) if t not in produced))
    inputs, initializers = [], []
    for name in read:
        if name in inits:
            initializers.append(inits[name])
        elif name in declared:
            inputs.append(declared[name])
        elif is_float(values.get(name)) and name in live:
            value = np.asarray(values[name])
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                        list(value.shape)))
        elif name in values:
            initializers.append(numpy_helper.from_array(np.asarray(values[name]), name))
        else:
            raise KeyError(f"no captured value for {name!r}, read by the sub-graph")
    infos = typed_values(model)
    outs = []
    for name in outputs:
        if name in infos and (within is None or not _symbolic(infos[name])):
            outs.append(infos[name])
            continue
        value = np.asarray(values[name])
        outs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                  list(value.shape)))
    kept = produced | set(read)
    sub = helper.make_graph(nodes, f"{graph.name or 'graph'}_cut", inputs, outs, initializers,
                            value_info=[v for v in infos.values() if v.name in kept and v.name not in outputs
                                        and v.name not in {i.name for i in inputs}
                                        and (within is None or not _symbolic(v))])
    out = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            producer_name="export-harness-divergence")
    out.functions.extend(model.functions)
    return out


_INFERRED: dict[int, tuple[onnx.ModelProto, dict[str, onnx.ValueInfoProto]]] = {}


def typed_values(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every tensor's type and shape as ONNX shape inference states them (symbolic dims kept), once per model."""
    held = _INFERRED.get(id(model))
    if held is None or held[0] is not model:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a graph shape inference rejects: the captured shapes are used instead
            inferred = model
        infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)
                 if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
        held = _INFERRED[id(model)] = (model, infos)
    return held[1]


def _symbolic(info: onnx.ValueInfoProto) -> bool:
    return any(not d.HasField("dim_value") for d in info.type.tensor_type.shape.dim)


def float_outputs(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> list[str]:
    """The node's outputs that are float tensors (what the finder compares)."""
    return [o for o in node.output if o and is_float(values.get(o))]


def _attribute(attr: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, onnx.TensorProto):
        array = numpy_helper.to_array(value)
        return array.tolist() if array.size <= 8 else f"tensor {array.dtype}{list(array.shape)}"
    if isinstance(value, onnx.GraphProto):
        return f"graph '{value.name}' ({len(value.node)} nodes)"
    if isinstance(value, list):
        return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in value][:16]
    return value


def describe(model: onnx.ModelProto, index: int, values: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A node in words: type, name, attributes, input and output shapes and dtypes (from the captured values)."""
    node = model.graph.node[index]
    inits = {t.name: t for t in model.graph.initializer}

    def shape_of(name: str) -> str:
        if name in values:
            v = np.asarray(values[name])
            return f"{v.dtype}{list(v.shape)}"
        if name in inits:
            return f"{numpy_helper.to_array(inits[name]).dtype}{list(inits[name].dims)} (initializer)"
        return "?"

    return {"index": index, "op_type": node.op_type, "name": node.name or f"#{index}", "domain": node.domain,
            "attributes": {a.name: _attribute(a) for a in node.attribute},
            "inputs": [[i, shape_of(i)] for i in node.input if i],
            "outputs": [[o, shape_of(o)] for o in node.output if o]}


def short(op: Mapping[str, Any]) -> str:
    """``Conv 'conv3' (kernel_shape=[3, 3], ...; inputs float32[1, 8, 8, 8], ...)``."""
    attrs = ", ".join(f"{k}={v}" for k, v in op["attributes"].items() if not str(v).startswith("graph"))
    ins = ", ".join(s for _, s in op["inputs"])
    inner = "; ".join(p for p in (attrs, f"inputs {ins}" if ins else "") if p)
    where = f" in {op['module']}" if op.get("module") else ""
    return f"{op['op_type']} '{op['name']}'{where}" + (f" ({inner})" if inner else "")
