"""The PyTorch side of the divergence finder: the model as ``torch.export``'s ATen graph with every node's output
captured (PyTorch's own intermediates), and prefixes and small cuts of that graph as programs a converter that starts
from PyTorch converts: litert-torch (PyTorch -> .tflite, no ONNX in between) and the ONNX exporter itself (PyTorch ->
ONNX, judged on ONNX Runtime).

Node names are torch.export's (``linear_1``, ``add_3``); :func:`TorchGraph.describe` adds the module path
(``decoder.layers.0.self_attn``) and the source line each op came from, which is what a model's author looks for.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from export_harness.converters.exporters.onnx_export import export_mode

ARG = "args_{i}"
"""Names of a probed program's inputs and outputs: the ones litert-torch gives its signature (``args_0``,
``output_0``), so a reproducer's files and the .tflite agree without a mapping."""
OUT = "output_{i}"


def export(module: nn.Module, args: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """``module`` as the harness exports it for litert-torch (eval, no grad, the exporters' mode)."""
    with export_mode(), torch.no_grad():
        return torch.export.export(module, args)


@dataclass
class TorchGraph:
    """A model's ATen graph (``torch.export``, parameters as attributes) and every node's value on ``args``."""

    module: fx.GraphModule
    args: tuple[torch.Tensor, ...]
    raw: dict[str, Any] = field(default_factory=dict)
    """Node name -> the value PyTorch computed (tensors, and the ints / tuples between them)."""

    @classmethod
    def capture(cls, model: nn.Module, args: tuple[torch.Tensor, ...]) -> TorchGraph:
        """Export ``model`` and run its graph node by node on ``args``, keeping every output."""
        graph = cls(export(model, args).module(), tuple(args))
        raw = graph.raw

        class Capture(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                value = super().run_node(n)
                # a copy: an in-place op later in the graph (a residual's add_) would change a tensor kept as is
                raw[n.name] = value.detach().clone() if isinstance(value, torch.Tensor) else value
                return value

        with torch.no_grad():
            Capture(graph.module).run(*args)
        return graph

    @property
    def nodes(self) -> list[fx.Node]:
        return list(self.module.graph.nodes)

    def value(self, name: str) -> np.ndarray | None:
        """A node's captured float tensor as numpy (None for anything else)."""
        v = self.raw.get(name)
        return v.float().numpy() if isinstance(v, torch.Tensor) and v.is_floating_point() else None

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        return {ARG.format(i=i): a.numpy() for i, a in enumerate(self.args)}

    def outputs(self) -> dict[str, np.ndarray]:
        """The model's float outputs (PyTorch), as ``output_<i>``."""
        out = next(n for n in self.nodes if n.op == "output")
        flat: list[fx.Node] = []
        fx.node.map_arg(out.args[0], flat.append)  # every node the output holds, nested or not
        values = [self.value(n.name) for n in flat]
        return {OUT.format(i=i): v for i, v in enumerate(v for v in values if v is not None)}

    def candidates(self) -> list[int]:
        """Indices (graph order) of the ops worth probing: a float tensor output that depends on an input."""
        live: set[str] = set()
        found = []
        for i, node in enumerate(self.nodes):
            if node.op == "placeholder":
                live.add(node.name)
            elif node.op == "call_function" and any(a.name in live for a in node.all_input_nodes):
                live.add(node.name)
                if self.value(node.name) is not None:
                    found.append(i)
        return found

    def producers(self, index: int) -> list[int]:
        """Indices of the ops producing node ``index``'s float inputs."""
        position = {n.name: i for i, n in enumerate(self.nodes)}
        node = self.nodes[index]
        return sorted({position[a.name] for a in node.all_input_nodes
                       if a.op == "call_function" and self.value(a.name) is not None})

    def describe(self, index: int) -> dict[str, Any]:
        """The op in words, in the shape :func:`~export_harness.converters.divergence.graph.describe` gives an ONNX
        node (type, name, attributes, input / output shapes), plus its module path and source line."""
        node = self.nodes[index]

        def shape_of(a: Any) -> str:
            v = self.raw.get(a.name) if isinstance(a, fx.Node) else None
            if isinstance(v, torch.Tensor):
                return f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}"
            return repr(v)

        schema = getattr(node.target, "_schema", None)
        names = [a.name for a in schema.arguments] if schema is not None else []
        named = [(names[k] if k < len(names) else f"arg{k}", a) for k, a in enumerate(node.args)]
        named += list(node.kwargs.items())
        stack = node.meta.get("nn_module_stack") or {}
        trace = [ln.strip() for ln in (node.meta.get("stack_trace") or "").strip().splitlines()]
        return {"index": index, "op_type": str(node.target), "name": node.name, "domain": "aten",
                "attributes": {k: a for k, a in named if not isinstance(a, (fx.Node, list, tuple))
                               or (isinstance(a, (list, tuple)) and not any(isinstance(x, fx.Node) for x in a))},
                "inputs": [[k, shape_of(a)] for k, a in named if isinstance(a, fx.Node)],
                "outputs": [[node.name, shape_of(node)]],
                "module": list(stack.values())[-1][0] if stack else "",
                "source": " ".join(trace[-2:]) if trace else ""}

    def prefix(self, index: int) -> tuple[torch.export.ExportedProgram, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The program from the model's inputs to node ``index``'s output: (program, inputs, PyTorch's output)."""
        module = copy.deepcopy(self.module)
        node = next(n for n in module.graph.nodes if n.name == self.nodes[index].name)
        output = next(n for n in module.graph.nodes if n.op == "output")
        output.args = ((node,),)
        module.graph._codegen = fx.graph.CodeGen()  # plain tuple output, not the original pytree spec
        for later in reversed(list(module.graph.nodes)):  # everything after the node, in-place ops included
            if later is node:
                break
            if later.op != "output":
                module.graph.erase_node(later)
        module.graph.eliminate_dead_code()
        module.recompile()
        return export(module, self.args), self.inputs, {OUT.format(i=0): self.value(node.name)}

    def cut(self, index: int, depth: int) -> tuple[torch.export.ExportedProgram, dict[str, np.ndarray],
                                                    dict[str, np.ndarray], int]:
        """Node ``index`` and the ops up to ``depth`` hops before it, fed PyTorch's captured values where the cut
        begins (float tensors become inputs; integer tensors and Python values constants): (program, inputs,
        PyTorch's output, how many ops)."""
        nodes = self.nodes
        keep = {nodes[index].name}
        frontier = [nodes[index]]
        for _ in range(depth):
            frontier = [a for n in frontier for a in n.all_input_nodes
                        if a.op == "call_function" and a.name not in keep]
            keep |= {a.name for a in frontier}
        graph, attrs = fx.Graph(), {}
        env: dict[str, fx.Node] = {}
        inputs: dict[str, np.ndarray] = {}

        def constant(value: Any) -> fx.Node:
            name = f"c{len(attrs)}"
            attrs[name] = value
            return graph.get_attr(name)

        def fetch(a: fx.Node) -> Any:
            if a.name in env:
                return env[a.name]
            value = self.raw.get(a.name)
            if a.op == "get_attr":
                env[a.name] = constant(_attr(self.module, str(a.target)))
            elif isinstance(value, torch.Tensor) and value.is_floating_point():
                name = ARG.format(i=len(inputs))
                inputs[name] = value.numpy()
                env[a.name] = graph.placeholder(name)
            elif isinstance(value, torch.Tensor):
                env[a.name] = constant(value.clone())
            else:
                return value
            return env[a.name]

        for node in nodes:
            if node.name in keep:
                env[node.name] = graph.node_copy(node, fetch)
        graph.output((env[nodes[index].name],))
        module = fx.GraphModule(attrs, graph)
        args = tuple(torch.from_numpy(v) for v in inputs.values())
        return export(module, args), inputs, {OUT.format(i=0): self.value(nodes[index].name)}, len(keep)


def _attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value.detach().clone() if isinstance(value, torch.Tensor) else value

