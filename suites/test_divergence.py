"""The divergence finder (``export_harness.converters.divergence``, docs/divergence.md) on synthetic graphs with an
injected wrong op per backend: it must name the injected op.

- the finder's logic: a real probe (ONNX Runtime) whose copy of the graph computes one node wrong (a perturbing
  wrapper rewires that node's output through ``Mul 1.5``); every position, first to last, is named;
- ONNX Runtime's fp16 conversion: a real wrong op (a Div by a constant beyond float16's range, clamped to 65504);
- onnx2tf (TFLite fp32) and onnx-tf (SavedModel, its own venv): real conversions of a tiny graph whose copy handed to
  the backend has one node replaced (Relu -> Sigmoid);
- the reproducer's ``repro.py`` run in a subprocess shows the mismatch (exit 1, the numbers);
- a correct backend and a passing cell are not reported; bad names are one line.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.cli import EXIT_FAILED, EXIT_USAGE
from export_harness.converters.cli.main import main
from export_harness.converters.divergence import (
    explain,
    finder,
    graph,
    reduce,
    reproducer,
    torch_finder,
    torch_graph,
)
from export_harness.converters.divergence.probes import LocalProbe, NoProbe, Probe, probe_for
from export_harness.converters.registry import default_target_registry

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = Thresholds.load(None)
FP32 = THRESHOLDS.tier("fp32")
FP16 = THRESHOLDS.tier("fp16")


def mlp(overflow: bool = False) -> onnx.ModelProto:
    """x[B, 16] -> fc1 -> bias1 -> relu1 -> fc2 -> bias2 -> relu2 -> fc3 -> softmax (8 nodes). ``overflow``: 'amplify'
    (x 1000) and 'shrink' (/ 1e5) after relu2, no softmax: the constant 1e5 is beyond float16's 65504, the fp16
    conversion clamps it to 65504, so 'shrink' returns values 1.53x too large (cosine 1, max_abs 0.023)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
             for name, shape in (("W1", (16, 32)), ("b1", (32,)), ("W2", (32, 32)), ("b2", (32,)), ("W3", (32, 10)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1"),
             helper.make_node("Add", ["h1", "b1"], ["a1"], name="bias1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "W2"], ["h2"], name="fc2"),
             helper.make_node("Add", ["h2", "b2"], ["a2"], name="bias2"),
             helper.make_node("Relu", ["a2"], ["r2"], name="relu2")]
    if overflow:
        inits += [numpy_helper.from_array(np.array(1e3, np.float32), "k"),
                  numpy_helper.from_array(np.array(1e5, np.float32), "d")]
        nodes += [helper.make_node("Mul", ["r2", "k"], ["m"], name="amplify"),
                  helper.make_node("Div", ["m", "d"], ["n"], name="shrink"),
                  helper.make_node("MatMul", ["n", "W3"], ["probs"], name="fc3")]
    else:
        nodes += [helper.make_node("MatMul", ["r2", "W3"], ["logits"], name="fc3"),
                  helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 16])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", 10])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def tiny() -> onnx.ModelProto:
    """x[B, 16] -> fc1 -> relu1 -> fc2 -> relu2 (4 nodes: few conversions for the real onnx2tf test)."""
    weights = {t.name: t for t in mlp().graph.initializer}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "W2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["out"], name="relu2")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 16])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 32])],
                          [weights["W1"], weights["W2"]])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


FEEDS = {"x": np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)}


class Perturbed:
    """A real probe whose backend computes node ``name`` wrong: its output goes through ``Mul 1.5`` in the copy
    handed to the backend (what a converter that miscompiles that one op does)."""

    def __init__(self, probe: Probe, name: str, replace_with: str | None = None) -> None:
        self.probe, self.name, self.replace_with = probe, name, replace_with
        self.backend, self.precision, self.keep_shape = probe.backend, probe.precision, probe.keep_shape
        self.label = probe.label

    def __call__(self, model: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        nodes = list(copy.graph.node)
        for i, node in enumerate(nodes):
            if node.name != self.name:
                continue
            if self.replace_with:
                node.op_type = self.replace_with
                break
            raw = node.output[0] + "_raw"
            copy.graph.initializer.append(numpy_helper.from_array(np.array(1.5, np.float32), "fault_k"))
            wrong = helper.make_node("Mul", [raw, "fault_k"], [node.output[0]], name="fault")
            node.output[0] = raw
            del copy.graph.node[:]
            copy.graph.node.extend([*nodes[:i + 1], wrong, *nodes[i + 1:]])
            break
        return self.probe(copy, inputs, expected)

    def versions(self) -> dict[str, str]:
        return self.probe.versions()


ORT = LocalProbe("ort", "fp32", "ONNX Runtime")
ORT_FP16 = LocalProbe("ort-fp16", "fp16", "ONNX Runtime convert_float_to_float16 -> ONNX Runtime")


@pytest.mark.parametrize("name", ["fc1", "relu1", "bias2", "fc3", "softmax"])
def test_finder_names_the_injected_op(name: str) -> None:
    found = finder.find_first_divergence(mlp(), FEEDS, Perturbed(ORT, name), FP32)
    assert found.op is not None, found.reason
    assert found.op["name"] == name
    assert found.verified  # its float predecessors agree through the backend
    assert found.steps[0].diverged and all(s.cosine is not None for s in found.steps)
    assert len(found.steps) <= 6  # bisection: whole graph + log2(8) + the predecessor check


def test_a_correct_backend_is_not_reported() -> None:
    found = finder.find_first_divergence(mlp(), FEEDS, ORT, FP32)
    assert found.index is None and "agrees with ONNX Runtime" in found.reason
    assert len(found.steps) == 1  # the whole graph agreed: nothing bisected


def test_ort_fp16_out_of_range_constant_is_named_and_reduced_to_one_node() -> None:
    model = mlp(overflow=True)
    values = graph.reference_values(model, FEEDS)
    found = finder.find_first_divergence(model, FEEDS, ORT_FP16, FP16, values)
    assert found.op is not None and found.op["name"] == "shrink", [s.line() for s in found.steps]
    assert found.op["op_type"] == "Div" and found.op["inputs"][0][1] == "float32[2, 32]"
    reduced = reduce.reduce(model, found.index, values, ORT_FP16, FP16)
    assert reduced.reproduces and reduced.how == "single node" and reduced.nodes == 1
    assert list(reduced.inputs) == ["m"]  # the captured activation is the reduced graph's input


def _real_probe(target: str) -> Probe:
    """The backend's real probe (its converter and runtime), or a skip saying why this machine has none."""
    try:
        return probe_for(default_target_registry().get(target))
    except NoProbe as exc:
        pytest.skip(str(exc))


def test_onnx2tf_replaced_op_is_named() -> None:
    """A real onnx2tf conversion and TFLite run: the backend's copy of the graph has relu2 replaced by Sigmoid."""
    probe = _real_probe("tflite:fp32[onnx2tf]")
    found = finder.find_first_divergence(tiny(), FEEDS, Perturbed(probe, "relu1", replace_with="Sigmoid"), FP32)
    assert found.op is not None and found.op["name"] == "relu1", [s.line() for s in found.steps]
    assert found.op["op_type"] == "Relu" and found.verified
    assert len(found.steps) == 3  # whole graph, relu1 (diverged), fc1 (agrees): three onnx2tf conversions


def _ort_fp16_reproducer(directory: Path) -> Path:
    """The reproducer of ``mlp(overflow=True)``'s Div through ONNX Runtime's fp16 conversion, into ``directory``."""
    model = mlp(overflow=True)
    values = graph.reference_values(model, FEEDS)
    index = [n.name for n in model.graph.node].index("shrink")
    reduced = reduce.reduce(model, index, values, ORT_FP16, FP16)
    op = graph.describe(model, index, values)
    case = reproducer.Case(backend="ort-fp16", precision="fp16", label=ORT_FP16.label,
                           tolerance={"cosine_min": FP16.cosine_min, "atol": FP16.atol, "rtol": FP16.rtol,
                                      "scale_atol": FP16.scale_atol},
                           keep_shape=[], versions=ORT_FP16.versions(), op=op, cell="synthetic-onnx:fp16",
                           source_nodes=len(model.graph.node), numbers=reduced.numbers(FP16, "fp16"))
    return reproducer.write_reproducer(directory, case, reduced.model, reduced.inputs, reduced.expected)


def test_reproducer_runs_standalone_and_shows_the_mismatch(tmp_path: Path) -> None:
    directory = _ort_fp16_reproducer(tmp_path / "repro")
    assert {p.name for p in directory.iterdir()} == set(reproducer.FILES) - {"model.pt2"}
    source = (directory / "repro.py").read_text()
    assert "export_harness" not in source.split('"""', 2)[2]  # the converter and the runtime only
    headline = (directory / "ISSUE.md").read_text().splitlines()[0]
    assert headline.startswith("# [ort-fp16 ") and "Div" in headline and "cosine" in headline
    code, output = reproducer.run_standalone(directory, sys.executable, timeout=300)
    assert code == 1, output
    assert "n: MISMATCH cosine" in output and "ort-fp16 fp16: MISMATCH" in output


@pytest.mark.slow
def test_a_reproducer_runs_in_a_fresh_venv_holding_only_its_requirements(tmp_path: Path) -> None:
    """A new venv (not the harness's, no export_harness, no torch) with only the reproducer's requirements.txt
    installed from the package registry: repro.py alone shows the mismatch."""
    from export_harness.converters.divergence.venv import fresh_venv

    directory = _ort_fp16_reproducer(tmp_path / "repro")
    wanted = (directory / "requirements.txt").read_text().split()
    assert wanted and all(line.split("==")[0] in reproducer.PIP["ort-fp16"] for line in wanted)
    python = fresh_venv(wanted, tmp_path / "venvs", sys.executable)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"onnxruntime", "onnx", "numpy"} <= installed
    assert not installed & {"torch", "tensorflow", "export-conformance-harness", "pytest"}, installed
    code, output = reproducer.run_standalone(directory, str(python), timeout=300)
    assert code == 1, output
    assert "ort-fp16 fp16: MISMATCH" in output
    assert fresh_venv(wanted, tmp_path / "venvs", sys.executable) == python  # made once, then reused


def test_cached_result_is_served_and_a_damaged_entry_recomputed(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    (entry / "reproducer").mkdir(parents=True)
    for name in reproducer.FILES:
        (entry / "reproducer" / name).write_text(name)
    result = explain.DivergenceResult(cell="m-onnx:fp16", side="ONNX -> x", backend="ort-fp16",
                                      first_op=graph.describe(mlp(), 2, {}), reproducer_dir=str(entry / "reproducer"))
    explain.store_entry(entry, result)
    served = explain.load_entry(entry)
    assert served is not None and served.cached and served.summary().startswith("first diverging op: Relu 'relu1'")
    (entry / "reproducer" / "model.onnx").write_text("tampered")
    assert explain.load_entry(entry) is None and not entry.exists()


def test_backends_without_a_probe_say_why() -> None:
    targets = default_target_registry()
    with pytest.raises(NoProbe, match="int8-full differs from fp32 by design"):
        probe_for(targets.get("tflite:int8-full[litert-torch]"))
    with pytest.raises(NoProbe, match="int8-dynamic differs from fp32 by design"):
        probe_for(targets.get("onnx:int8-dynamic"))


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def test_cli_bad_names_and_a_passing_cell_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, err = _cli("diverge", "no_such_model", "onnx:fp16")
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "no_such_model" in err
    code, err = _cli("diverge", "tiny_ladeda", "onnx:fp99")
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "onnx:fp99" in err
    code, err = _cli("diverge", "tiny_ladeda", "onnx:fp16", "-q")
    assert code == EXIT_FAILED and err.strip() == "export-harness: tiny_ladeda-onnx:fp16 passes: nothing diverges " \
                                                  "to explain"


def test_onnx_tf_replaced_op_is_named() -> None:
    """A real onnx-tf conversion (in its own venv) run as a SavedModel on TensorFlow 2.15: the backend's copy has the
    last node replaced (relu2 -> Sigmoid), found from the other end of the bisection."""
    probe = _real_probe("tf:savedmodel[onnx-tf]")
    found = finder.find_first_divergence(tiny(), FEEDS, Perturbed(probe, "relu2", replace_with="Sigmoid"), FP32)
    assert found.op is not None and found.op["name"] == "relu2", [s.line() for s in found.steps]
    assert found.verified and len(found.steps) == 4  # the whole graph, relu1 and fc2 (agree), relu2


def test_miscompiles_table_selects_the_declared_parity_failures_and_renders_them() -> None:
    from types import SimpleNamespace

    from export_harness.converters.divergence import table
    from export_harness.converters.expectations import Expectations
    from export_harness.models.registry import default_registry

    session = SimpleNamespace(models=default_registry(), targets=default_target_registry())
    cells = table.declared_parity_failures(session, Expectations.load(ROOT / "baselines" / "expectations.toml"))
    assert [f"{s.name}-{t.name}" for s, t in cells] == [
        "sign_gru-tf:savedmodel[onnx2tf]", "gcode_decoder_step-tf:savedmodel[onnx2tf]",
        "gcode_decoder_step-tflite:fp32[onnx2tf]", "gcode_decoder_step-tflite:fp16[onnx2tf]"]
    found = explain.DivergenceResult(cell="m-onnx:fp16", side="ONNX -> x", backend="ort-fp16", reduced_nodes=1,
                                     reduced_how="single node", source_nodes=8, reproduces_standalone=True,
                                     standalone_in="fresh venv (3 requirements)",
                                     first_op=graph.describe(mlp(), 2, {}), versions={"onnxruntime": "1.32.0"})
    page = table.render([table.Row("m-onnx:fp16", found), table.Row("m-tflite:fp32[litert-torch]", None, "no probe")])
    assert page.startswith("# FP32 / FP16 miscompiles") and "Generated by `export-harness diverge --table" in page
    assert "| `m-onnx:fp16` | ONNX -> x | `Relu 'relu1' (inputs ?)` | 1 (single node) of 8 | yes | onnxruntime 1.32.0" \
        in page
    assert "| `m-tflite:fp32[litert-torch]` | - | not explained: no probe |" in page


@pytest.mark.slow
def test_an_undeclared_fp32_failure_names_its_first_diverging_op(pytestconfig: pytest.Config, tmp_path: Path) -> None:
    """Through the plugin: the zoo's onnx2tf miscompile with its declaration removed fails with the first diverging
    op and the reproducer's path in its message and its report record (cached with the artifact: a warm run pays
    nothing); the reproducer shows the mismatch in a fresh venv holding only its requirements.txt; with
    --harness-explain=none the message has no op."""
    from export_harness.converters.report import matrix_report
    from suites.matrix_helpers import run_matrix

    (tmp_path / "expectations.toml").write_text("# nothing declared\n")
    selection = "test_cell and gcode_decoder_step and tflite and fp32 and onnx2tf and not opset"
    run = run_matrix(pytestconfig, tmp_path / "report.json", selection,
                     f"--harness-expectations={tmp_path / 'expectations.toml'}", timeout=1800)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    (cell,) = matrix_report.load_report(tmp_path / "report.json")
    assert "first diverging op: Add '/decoder/layers.0/self_attn/Add_2'" in cell["message"], cell["message"][-2000:]
    assert "reproducer: " in cell["message"] and "first diverging op" in run.stdout  # the failure pytest prints
    directory = Path(cell["message"].rsplit("reproducer: ", 1)[1].split()[0])
    assert (directory / "repro.py").is_file() and (directory / "ISSUE.md").is_file()
    # the table's reproducer, in a fresh venv holding only its requirements.txt (made once per machine, in the cache)
    from export_harness.converters.divergence.venv import fresh_venv
    from export_harness.converters.tf.tf_onnx2tf import ONNX2TF
    from export_harness.plugin.project import cache_dir

    wanted = (directory / "requirements.txt").read_text().split()
    assert all("==" in line for line in wanted), wanted  # every package pinned
    python = fresh_venv(wanted, cache_dir(pytestconfig) / "divergence" / "venvs", ONNX2TF.python() or sys.executable)
    code, output = reproducer.run_standalone(directory, str(python))
    assert reproducer.reproduces(code, output), output
    assert "onnx2tf fp32: MISMATCH" in output
    run_matrix(pytestconfig, tmp_path / "quiet.json", selection, "--harness-explain=none",
                       f"--harness-expectations={tmp_path / 'expectations.toml'}")
    assert "first diverging op" not in matrix_report.load_report(tmp_path / "quiet.json")[0]["message"]


# ---------------------------------------------------------------------------------------------------------------
# The PyTorch side: converters that start from the module (litert-torch, the ONNX exporter), bisected over ATen


class Net(torch.nn.Module):
    """linear -> relu -> linear -> tanh -> mul -> softmax: each op type once, so a wrong op is named by its type."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.tanh(self.fc2(torch.relu(self.fc1(x)))) * 3.0, dim=-1)


class TorchPerturbed:
    """A real PyTorch-side probe whose backend computes every ``op`` as ``wrong`` (in the program handed to it)."""

    def __init__(self, probe: Probe, op: Any, wrong: Any) -> None:
        self.probe, self.op, self.wrong = probe, op, wrong
        self.backend, self.precision, self.keep_shape, self.label = probe.backend, probe.precision, (), probe.label

    def __call__(self, program: Any, inputs: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = program.module()
        for node in module.graph.nodes:
            if node.op == "call_function" and node.target == self.op:
                node.target = self.wrong
        module.recompile()
        return self.probe(torch_graph.export(module, program.example_inputs[0]), inputs, expected)

    def versions(self) -> dict[str, str]:
        return self.probe.versions()


def _net_graph() -> torch_graph.TorchGraph:
    return torch_graph.TorchGraph.capture(Net().eval(), (torch.from_numpy(FEEDS["x"]),))


EXPORTER = LocalProbe("torch-onnx", "fp32", "torch.onnx.export -> ONNX Runtime", opset=17)
ATEN = torch.ops.aten


@pytest.mark.parametrize(("op", "wrong"), [(ATEN.relu.default, ATEN.sigmoid.default),
                                           (ATEN.tanh.default, ATEN.sigmoid.default),
                                           (ATEN.softmax.int, ATEN.log_softmax.int)])
def test_exporter_side_finder_names_the_injected_aten_op(op: Any, wrong: Any) -> None:
    """The exporter (TorchScript-based, ONNX Runtime) as the backend over PyTorch's ATen graph: the op it is made to
    compute wrong is named, with the module path and source line a model's author looks for."""
    tg = _net_graph()
    found = torch_finder.find_first_divergence(tg, TorchPerturbed(EXPORTER, op, wrong), FP32)
    assert found.op is not None, (found.reason, [s.line() for s in found.steps])
    assert found.op["op_type"] == str(op) and found.verified, [s.line() for s in found.steps]
    assert found.op["source"] and "test_divergence.py" in found.op["source"]
    reduced = torch_finder.reduce(tg, found.index, TorchPerturbed(EXPORTER, op, wrong), FP32)
    assert reduced.reproduces and reduced.how == "single node" and reduced.nodes == 1
    assert torch_finder.find_first_divergence(tg, EXPORTER, FP32).index is None  # the real exporter is right


class DataDependent(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x - 1  # control flow on a value: torch.export refuses it


def test_a_model_torch_export_refuses_is_one_line_not_an_exception(tmp_path: Path) -> None:
    from types import SimpleNamespace

    result = explain.compute_torch("m-onnx:fp32", SimpleNamespace(input_names=["x"]), DataDependent(), FEEDS,
                                   EXPORTER, FP32, explain.Checker(tmp_path, "none", tmp_path / "venvs"))
    assert result.first_op is None and result.reason.startswith("torch.export cannot export the model")
    assert len(result.summary().splitlines()) == 1 and result.side.startswith("PyTorch -> torch.onnx.export")

def test_litert_torch_replaced_op_is_named_and_its_reproducer_runs(tmp_path: Path) -> None:
    """Real litert-torch conversions (in its worker) of prefixes of PyTorch's graph: tanh made sigmoid is named and
    reduced to the op alone; the reproducer of the real (correct) op converts model.pt2 with litert-torch alone and
    says it matches PyTorch (exit 0)."""
    probe = _real_probe("tflite:fp32[litert-torch]")
    tg = _net_graph()
    perturbed = TorchPerturbed(probe, ATEN.tanh.default, ATEN.sigmoid.default)
    found = torch_finder.find_first_divergence(tg, perturbed, FP32)
    assert found.op is not None and found.op["op_type"] == "aten.tanh.default", [s.line() for s in found.steps]
    assert found.verified
    reduced = torch_finder.reduce(tg, found.index, probe, FP32)  # the real converter: it computes tanh right
    assert not reduced.reproduces and reduced.how == "prefix"
    single = torch_finder.reduce(tg, found.index, perturbed, FP32)
    assert single.reproduces and single.nodes == 1
    case = reproducer.Case(backend="litert-torch", precision="fp32", label=probe.label,
                           tolerance={"cosine_min": FP32.cosine_min, "atol": FP32.atol, "rtol": FP32.rtol,
                                      "scale_atol": FP32.scale_atol},
                           keep_shape=[], versions=probe.versions(), op=found.op, cell="synthetic-tflite:fp32",
                           source_nodes=len(tg.candidates()), numbers=single.numbers(FP32), reference="PyTorch")
    directory = reproducer.write_reproducer(tmp_path / "repro", case, single.model, single.inputs,
                                            single.expected)
    assert (directory / "model.pt2").is_file() and not (directory / "model.onnx").exists()
    assert "litert-torch==" in (directory / "requirements.txt").read_text()
    assert (directory / "ISSUE.md").read_text().startswith("# [litert-torch ")
    python = probe.backend_spec.python()
    code, output = reproducer.run_standalone(directory, python, timeout=600)
    assert code == 0 and "litert-torch fp32: matches PyTorch" in output, output
