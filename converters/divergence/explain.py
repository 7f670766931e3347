"""Explain a failing fp32 / fp16 cell: which side of which converter computes something else, the first diverging op,
the reduced reproducer; cached with the artifact so only failing cells pay, and once.

The cache entry is ``<cache>/divergence/<key>/`` (``result.json`` plus ``reproducer/``), keyed on the artifact's and
its source ONNX's content sha256, the inputs, the tier, the backend's versions and this package's code; verified on
read (each file's sha256 is recorded in ``result.json``), a damaged entry is computed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from export_harness.converters.cache import CONTENT, Artifact
from export_harness.converters.conformance import CellFailure, export_artifact
from export_harness.converters.divergence import (
    finder,
    graph,
    probe_worker,
    probes,
    reduce,
    reproducer,
    standalone,
    torch_finder,
    torch_graph,
    venv,
)
from export_harness.converters.measurements import arrays_digest, code_hash, measurement_key
from export_harness.converters.target import Target
from export_harness.converters.tf.tflite import image_inputs
from export_harness.converters.util.files import write_json_atomic
from export_harness.models.spec import ModelSpec, run_torch, to_torch

DIRECTORY = "divergence"
VENVS = "venvs"
"""``<cache>/divergence/venvs/``: the fresh venvs reproducers are confirmed in."""
ONNX_SIDE = "ONNX -> {backend}"
TORCH_SIDE = "PyTorch -> {backend}"
"""The side of a converter that starts from PyTorch: litert-torch, or the exporter itself (PyTorch -> ONNX)."""


class Session(Protocol):
    """What the finder uses of a harness session (``export_harness.converters.session.Session``, a layer above)."""

    models: Any
    targets: Any
    cache: Any
    thresholds: Any
    identities: Any

    def model(self, spec: ModelSpec) -> Any: ...

    def cell_spec(self, spec: ModelSpec) -> ModelSpec: ...

    def run(self, spec: ModelSpec, target: Target, localise: bool = True) -> Any: ...


class DivergenceError(Exception):
    """The cell cannot be explained as asked (unknown name, a passing cell, not a parity failure): one line."""


@dataclass
class DivergenceResult:
    """What the finder concluded for one failing cell."""

    cell: str
    side: str
    backend: str
    first_op: dict[str, Any] | None = None
    verified: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    reduction_steps: list[dict[str, Any]] = field(default_factory=list)
    reduced_nodes: int | None = None
    reduced_how: str = ""
    reproduces_standalone: bool | None = None
    standalone_output: str = ""
    standalone_in: str = ""
    """Where ``repro.py`` ran: ``fresh venv`` (only its requirements.txt installed) or ``backend interpreter``."""
    reproducer_dir: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    source_nodes: int = 0
    batch: int = 0
    seconds: float = 0.0
    cached: bool = False

    def summary(self) -> str:
        """One line: the op and the reproducer, or why no op is named."""
        if self.first_op is None:
            return f"divergence finder ({self.side}): no diverging op named: {self.reason}"
        where = f"; reproducer: {self.reproducer_dir}" if self.reproducer_dir else ""
        size = f"; reduced to {self.reduced_nodes} node(s) ({self.reduced_how})" if self.reduced_nodes else ""
        return f"first diverging op: {graph.short(self.first_op)} in {self.side}{size}{where}"

    def report(self) -> str:
        """The summary and every probe in the order it ran (what the CLI prints)."""
        kind = "ONNX" if self.side.startswith("ONNX") else "ATen (torch.export)"
        lines = [self.summary(), f"  bisection over {self.source_nodes} {kind} nodes (batch {self.batch}):"]
        lines += [f"    {finder.Step(**s).line()}" for s in self.steps]
        if self.reduction_steps:
            lines.append("  reduction:")
            lines += [f"    {finder.Step(**s).line()}" for s in self.reduction_steps]
        if self.reproduces_standalone is not None:
            verdict = "reproduces" if self.reproduces_standalone else "does NOT reproduce"
            lines.append(f"  repro.py standalone ({self.standalone_in or 'backend interpreter'}): {verdict}"
                         + (f" ({self.standalone_output.splitlines()[-1]})" if self.standalone_output else ""))
        lines.append(f"  {self.seconds:.1f} s" + (" (cached)" if self.cached else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def resolve(session: Session, spec: ModelSpec | str, target: Target | str) -> tuple[ModelSpec, Target]:
    """Names -> registered objects; :class:`DivergenceError` naming what is unknown."""
    if isinstance(spec, str):
        if spec not in session.models:
            raise DivergenceError(f"unknown model {spec!r} (known: {', '.join(session.models.names())})")
        spec = session.models.get(spec)
    if isinstance(target, str):
        if target not in session.targets.names():
            raise DivergenceError(f"unknown target {target!r} (e.g. tflite:fp32[onnx2tf], onnx:fp16)")
        target = session.targets.get(target)
    return spec, target


def source_target(target: Target, session: Session) -> Target | None:
    """The fp32 ONNX target the cell's backend converted (walking its dependencies), None when it has none."""
    todo = [target]
    while todo:
        current = todo.pop(0)
        if current.format == "onnx" and current.precision == "fp32" and current is not target:
            return current
        todo += [session.targets.get(current.dependency(d)) for d in current.depends_on]
    return None


STANDALONE = ("venv", "interpreter", "none")
"""Where the written ``repro.py`` is run once to confirm it reproduces: a fresh venv holding only its
``requirements.txt`` (:mod:`~export_harness.converters.divergence.venv`, made once per set of pins), the backend's
own interpreter in isolated mode, or not at all."""


def explain_cell(session: Session, spec: ModelSpec | str, target: Target | str, *, out: Path | None = None,
                 standalone: str = "venv") -> DivergenceResult:
    """Run the cell; when it fails at parity, explain it on the first failing batch's inputs (see
    :func:`explain_failure`). :class:`DivergenceError` when it passes or fails elsewhere."""
    spec, target = resolve(session, spec, target)
    try:
        session.run(spec, target, localise=False)
    except CellFailure as failure:
        result = failure.result
        if result.stage != "parity":
            first = result.message.strip().splitlines()[0] if result.message.strip() else ""
            raise DivergenceError(f"{result.cell_id} fails at stage {result.stage}, not parity: {first}") from None
        bad = next((p for p in result.parity if not p.passed), None)
        if bad is None:
            raise DivergenceError(f"{result.cell_id}: parity failed without a failing batch") from None
        inputs = spec.example_inputs(bad.batch, seed=0, lengths=bad.lengths)
        return explain_failure(session, spec, target, inputs, batch=bad.batch, out=out, standalone=standalone)
    raise DivergenceError(f"{spec.name}-{target.name} passes: nothing diverges to explain")


def explain_failure(session: Session, spec: ModelSpec | str, target: Target | str,
                    inputs: Mapping[str, np.ndarray], *, batch: int | None = None, artifact: Artifact | None = None,
                    out: Path | None = None, standalone: str = "interpreter") -> DivergenceResult:
    """The divergence of a failing cell on ``inputs`` (its parity inputs), from the cache when this artifact was
    explained on these inputs before. ``out``: also copy the reproducer there. Never runs the cell itself."""
    spec, target = resolve(session, spec, target)
    cell_spec, model = session.cell_spec(spec), session.model(spec)
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    batch = batch if batch is not None else int(next(iter(inputs.values())).shape[0])
    args = (cell_spec, model, session.cache, session.targets, session.identities)
    artifact = artifact or export_artifact(target, *args)
    source = source_target(target, session)
    side = (ONNX_SIDE if source else TORCH_SIDE).format(backend=target.backend or target.name)
    source_artifact = export_artifact(source, *args) if source is not None else None
    tol = session.thresholds.resolve(spec.name, target.name, target.tier, spec.tolerances)
    try:
        probe = probes.probe_for(target, keep_shape=tuple(keep_layout(spec)))
        exporter = probes.exporter_probe(source) if source is not None else None
    except probes.NoProbe as exc:
        return DivergenceResult(cell=f"{spec.name}-{target.name}", side=side, backend=target.backend or "",
                                batch=batch, reason=str(exc))
    key = measurement_key(kind="divergence", artifact=artifact.meta.get(CONTENT),
                          source=source_artifact.meta.get(CONTENT) if source_artifact else None,
                          inputs=arrays_digest([inputs[k] for k in sorted(inputs)]), tolerance=asdict(tol),
                          probe=probe.label, versions=probe.versions(), code=code_hash(*MODULES),
                          standalone=standalone)
    entry = Path(session.cache.root) / DIRECTORY / key
    result = load_entry(entry)
    if result is None:
        check = Checker(entry, standalone, Path(session.cache.root) / DIRECTORY / VENVS)
        cell = f"{spec.name}-{target.name}"
        if source_artifact is None:  # litert-torch: PyTorch straight to .tflite
            result = compute_torch(cell, spec, model, inputs, probe, tol, check, side)
        else:
            result = compute(cell, spec, model, source_artifact.path, inputs, probe, exporter, tol, check)
        result.batch = batch
        store_entry(entry, result)
    if out is not None and result.reproducer_dir:
        dest = Path(out)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(result.reproducer_dir, dest)
        result.reproducer_dir = str(dest)
    return result


MODULES = (finder, graph, probes, probe_worker, reduce, reproducer, standalone, torch_finder, torch_graph, venv,
           sys.modules[__name__])
"""The finder's code: part of every cached result's key."""


def keep_layout(spec: ModelSpec) -> list[str]:
    """Rank >= 3 inputs that are not images: onnx2tf keeps their layout (``-kat``), as the harness converts them."""
    nchw = image_inputs(spec)
    return [i.name for i in spec.inputs if len(i.shape) >= 3 and i.name not in nchw]


@dataclass
class Checker:
    """Where a computed result's reproducer goes and how it is confirmed (:data:`STANDALONE`)."""

    entry: Path
    standalone: str
    venvs: Path


def compute(cell: str, spec: ModelSpec, model: Any, source: Path, inputs: Mapping[str, np.ndarray],
            probe: probes.Probe, exporter: probes.Probe | None, tol: Any, check: Checker) -> DivergenceResult:
    """Side, finder, reduction, reproducer (into ``check.entry``), standalone run. When ONNX Runtime on the source
    ONNX already disagrees with PyTorch, the exporter is the side that diverges: the finder runs over PyTorch's
    graph with the exporter as the backend (``exporter``)."""
    t0 = time.perf_counter()
    onnx_model = onnx.load(str(source))
    values = graph.reference_values(onnx_model, inputs)
    torch_out = run_torch(spec, model, inputs)
    onnx_out = {o: values[o] for o in torch_out if o in values}
    exporter_diverged, _, _ = finder.judge(torch_out, onnx_out, tol)
    if exporter_diverged and exporter is not None:
        result = compute_torch(cell, spec, model, inputs, exporter, tol, check)
        result.seconds = round(time.perf_counter() - t0, 1)
        return result
    result = DivergenceResult(cell=cell, side=ONNX_SIDE.format(backend=probe.label), backend=probe.backend,
                              versions=probe.versions(), source_nodes=len(onnx_model.graph.node))
    finding = finder.find_first_divergence(onnx_model, inputs, probe, tol, values)
    result.steps = [asdict(s) for s in finding.steps]
    result.first_op, result.verified, result.reason = finding.op, finding.verified, finding.reason
    if finding.index is not None:
        reduction = reduce.reduce(onnx_model, finding.index, values, probe, tol)
        result.reduction_steps = [asdict(s) for s in reduction.steps]
        result.reduced_nodes, result.reduced_how = reduction.nodes, reduction.how
        case = reproducer.Case(backend=probe.backend, precision=probe.precision, label=probe.label,
                               tolerance=_tolerance(tol),
                               keep_shape=[k for k in probe.keep_shape
                                           if k in {i.name for i in reduction.model.graph.input}],
                               versions=result.versions, op=finding.op, cell=cell,
                               source_nodes=len(onnx_model.graph.node), numbers=reduction.numbers(tol, probe.precision))
        _reproduce(result, case, reduction.model, reduction.inputs, reduction.expected, probe, check)
    result.seconds = round(time.perf_counter() - t0, 1)
    return result


def compute_torch(cell: str, spec: ModelSpec, model: Any, inputs: Mapping[str, np.ndarray], probe: probes.Probe,
                  tol: Any, check: Checker) -> DivergenceResult:
    """The same over PyTorch's ATen graph (:mod:`~export_harness.converters.divergence.torch_finder`), for a
    converter that starts from PyTorch: litert-torch, or the ONNX exporter."""
    t0 = time.perf_counter()
    result = DivergenceResult(cell=cell, side=TORCH_SIDE.format(backend=probe.label), backend=probe.backend,
                              versions=probe.versions())
    try:
        tg = torch_graph.TorchGraph.capture(model, to_torch(dict(inputs), spec.input_names))
    except Exception as exc:  # any export error: no ATen graph to bisect, said in one line
        text = str(exc).strip().splitlines()
        result.reason = f"torch.export cannot export the model, so there is no ATen graph to bisect: " \
                        f"{type(exc).__name__}: {text[0] if text else ''}"
        return result
    ops = result.source_nodes = sum(1 for n in tg.nodes if n.op == "call_function")
    finding = torch_finder.find_first_divergence(tg, probe, tol)
    result.steps = [asdict(s) for s in finding.steps]
    result.first_op, result.verified, result.reason = finding.op, finding.verified, finding.reason
    if finding.index is not None:
        reduction = torch_finder.reduce(tg, finding.index, probe, tol)
        result.reduction_steps = [asdict(s) for s in reduction.steps]
        result.reduced_nodes, result.reduced_how = reduction.nodes, reduction.how
        case = reproducer.Case(backend=probe.backend, precision=probe.precision, label=probe.label,
                               tolerance=_tolerance(tol), keep_shape=[], versions=result.versions, op=finding.op,
                               cell=cell, source_nodes=ops, numbers=reduction.numbers(tol, probe.precision),
                               reference="PyTorch", opset=getattr(probe, "opset", None))
        _reproduce(result, case, reduction.model, reduction.inputs, reduction.expected, probe, check)
    result.seconds = round(time.perf_counter() - t0, 1)
    return result


def _tolerance(tol: Any) -> dict[str, float]:
    return {k: float(v) for k, v in asdict(tol).items() if k != "top1_min"}


def _reproduce(result: DivergenceResult, case: reproducer.Case, reduced: Any, inputs: Mapping[str, np.ndarray],
               expected: Mapping[str, np.ndarray], probe: probes.Probe, check: Checker) -> None:
    try:  # pin every package requirements.txt names, not only those the backend reports versions of
        have = venv.installed(_python(probe))
        missing = {p: have[venv.normalise(p)] for p in reproducer.PIP.get(case.backend, [])
                   if venv.normalise(p) in have and venv.normalise(p) not in map(venv.normalise, case.versions)}
        case.versions = result.versions = {**case.versions, **missing}
    except (OSError, subprocess.SubprocessError, venv.VenvError):
        pass  # named unpinned: the fresh venv's constraints still hold them to this environment's versions
    directory = reproducer.write_reproducer(check.entry / "reproducer", case, reduced, inputs, expected)
    result.reproducer_dir = str(directory)
    if check.standalone != "none":
        check_standalone(result, directory, probe, check.standalone, check.venvs)


def check_standalone(result: DivergenceResult, directory: Path, probe: probes.Probe, where: str,
                     venvs: Path) -> None:
    """Run the reproducer's ``repro.py`` ``where`` (:data:`STANDALONE`) and record whether it shows the mismatch."""
    python = _python(probe)
    result.standalone_in = "backend interpreter"
    if where == "venv":
        try:
            wanted = (directory / "requirements.txt").read_text().split()
            python = str(venv.fresh_venv(wanted, venvs, python))
            result.standalone_in = f"fresh venv ({len(wanted)} requirements)"
        except (OSError, venv.VenvError) as exc:
            result.reproduces_standalone, result.standalone_output = False, f"no fresh venv: {exc}"
            return
    code, output = reproducer.run_standalone(directory, python)
    result.reproduces_standalone, result.standalone_output = reproducer.reproduces(code, output), output


def _python(probe: probes.Probe) -> str:
    """The interpreter of the probe's backend (the onnx-tf venv's, or this one)."""
    return getattr(getattr(probe, "backend_spec", None), "python", lambda: sys.executable)() or sys.executable


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_entry(entry: Path, result: DivergenceResult) -> None:
    """``result.json`` with the sha256 of every reproducer file (written last: its presence marks the entry done)."""
    repro = entry / "reproducer"
    files = {name: _sha(repro / name) for name in reproducer.FILES if (repro / name).is_file()}
    try:
        write_json_atomic(entry / "result.json", {"result": result.to_dict(), "files": files})
    except OSError:
        pass


def load_entry(entry: Path) -> DivergenceResult | None:
    """The stored result when it and its reproducer are intact, else None (and the damaged entry is removed)."""
    meta = entry / "result.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
        for name, digest in data["files"].items():
            if _sha(entry / "reproducer" / name) != digest:
                raise ValueError(f"{name} does not match its recorded sha256")
        result = DivergenceResult(**data["result"])
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(entry, ignore_errors=True)
        return None
    result.cached = True
    with contextlib.suppress(OSError):
        os.utime(meta)  # last use: what `cache prune --unused-days` goes by
    if result.reproducer_dir:
        result.reproducer_dir = str(entry / "reproducer")
    return result


def divergence_line(session: Session, spec: ModelSpec | str, target: Target | str,
                    inputs: Mapping[str, np.ndarray], artifact: Artifact | None = None) -> str:
    """For a failure message: :meth:`DivergenceResult.summary` of :func:`explain_failure` (cached), or one line
    saying why the finder could not run. Never raises (diagnostics must not mask the verdict)."""
    try:
        return explain_failure(session, spec, target, inputs, artifact=artifact).summary()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return f"divergence finder failed: {type(exc).__name__}: {text[0] if text else ''}"
