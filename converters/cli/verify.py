"""``export-harness verify``: the parity checks of one artifact file against a model.

The file goes through the matrix's own cell (``export_harness.converters.conformance.run_cell``: structure, load on
the target's
runtime, run at batch 1 and 3, parity per output against PyTorch with the target's threshold tier, or ``--tier``),
with the conversion replaced by the file: a stand-in for the artifact cache hands ``run_cell`` an ``Artifact``
pointing at it (through a link in a scratch directory, so nothing is written beside the file). The target is
``--target``, else the one named by the file's sidecar (``FILE.json``, written by ``export``), else inferred from
the suffix: ``.onnx`` -> ``onnx:fp32``, ``.pt`` -> ``torchscript:trace``, ``.tflite`` -> ``tflite:fp32[onnx2tf]``,
a directory with ``saved_model.pb`` -> ``tf:savedmodel[onnx2tf]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export_harness.converters.cache import CONTENT, Artifact, artifact_sha256
from export_harness.converters.cli import EXIT_FAILED, EXIT_OK, UsageError
from export_harness.converters.cli.session import add_model_arguments, load_model, open_session, weights_label
from export_harness.converters.conformance import CellFailure, CellResult, run_cell
from export_harness.converters.registry import TargetRegistry
from export_harness.converters.report.matrix_report import fmt_optional
from export_harness.converters.target import Target
from export_harness.models.spec import ModelSpec

BY_SUFFIX = {".onnx": "onnx:fp32", ".pt": "torchscript:trace", ".tflite": "tflite:fp32[onnx2tf]"}
SAVEDMODEL = "tf:savedmodel[onnx2tf]"
FORMAT_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "tflite": ".tflite"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", metavar="ARTIFACT",
                        help="an .onnx, .pt (TorchScript) or .tflite file, or a SavedModel directory")
    add_model_arguments(parser, positional=False)
    parser.add_argument("--target", metavar="NAME", default=None,
                        help="the target the file is an artifact of (onnx:fp16, tflite:int8-full[onnx2tf], ...); "
                             "default: from its sidecar FILE.json, else from the suffix")
    parser.add_argument("--tier", metavar="TIER", default=None,
                        help="threshold tier to judge with (fp32, fp16, int8-dynamic, int8-static, int8-full, ...; "
                             "default: the target's)")


class FileCache:
    """Stands in for ``ArtifactCache`` in ``run_cell``: the verified target's artifact is the user's file; the
    targets it would be built from are never built (a placeholder each)."""

    def __init__(self, root: Path, artifact: Artifact, scratch: Path) -> None:
        self.root = root
        self.artifact = artifact
        self.scratch = scratch

    def get_or_create(self, key: str, target: str, produce: Callable[[Path], dict[str, Any]],
                      cacheable_error: Any = None, sources: Any = None, reserve_bytes: Any = None) -> Artifact:
        if target == self.artifact.target:
            return self.artifact
        directory = self.scratch / re.sub(r"[^A-Za-z0-9.-]+", "_", target)
        directory.mkdir(exist_ok=True)
        return Artifact(target=target, key=key, directory=directory, meta={"main": "not-built", CONTENT: "not-built"})


def read_sidecar(path: Path) -> dict[str, Any]:
    """The artifact's ``export`` sidecar (``FILE.json``), {} when absent or unreadable."""
    side = path.with_name(path.name + ".json")
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_target(path: Path, given: str | None, sidecar: dict[str, Any], targets: TargetRegistry) -> Target:
    if given is not None:
        if given not in targets.names():
            raise UsageError(f"--target {given}: unknown target; targets: "
                             + ", ".join(n for n in targets.names() if "@" not in n))
        target = targets.get(given)
    elif sidecar.get("target") in targets.names():
        target = targets.get(sidecar["target"])
    elif path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise UsageError(f"ARTIFACT {path}: a directory without saved_model.pb (expected a SavedModel directory, "
                             "or an .onnx, .pt or .tflite file)")
        target = targets.get(SAVEDMODEL)
    elif path.suffix.lower() in BY_SUFFIX:
        target = targets.get(BY_SUFFIX[path.suffix.lower()])
    else:
        raise UsageError(f"ARTIFACT {path}: cannot tell the target from the suffix {path.suffix or '(none)'!r} "
                         "(.onnx, .pt, .tflite or a SavedModel directory); pass --target")
    want = FORMAT_SUFFIX.get(target.format)
    if (want and (path.is_dir() or path.suffix.lower() != want)) or (target.format == "tf" and not path.is_dir()):
        kind = "a directory" if path.is_dir() else f"a {path.suffix or 'suffix-less'} file"
        raise UsageError(f"ARTIFACT {path}: {kind} cannot be a {target.name} artifact "
                         f"(expected {want or 'a SavedModel directory'})")
    return target


def user_artifact(path: Path, target: Target, spec: ModelSpec, sidecar: dict[str, Any], scratch: Path) -> Artifact:
    """An ``Artifact`` whose main file is a link to ``path`` in ``scratch``."""
    directory = scratch / "artifact"
    directory.mkdir()
    (directory / path.name).symlink_to(path.resolve(), target_is_directory=path.is_dir())
    channels_last = sidecar.get("channels_last")
    if channels_last is None:  # onnx2tf makes image inputs channels-last; the other converters keep the layout
        from export_harness.converters.tf.tflite import image_inputs

        channels_last = image_inputs(spec) if target.backend == "onnx2tf" else []
    digest = artifact_sha256(path)
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return Artifact(target=target.name, key=f"file:{digest[:16]}", directory=directory,
                    meta={"main": path.name, CONTENT: digest, "size_bytes": size, "channels_last": channels_last,
                          "versions": {}})


def print_result(path: Path, target: Target, spec: ModelSpec, result: CellResult, weights: str) -> None:
    tol = next((p.tolerance for p in result.parity), None)
    rule = ""
    if tol is not None:
        rule = f"cosine >= {tol.cosine_min:g}"
        scaled = f" + {tol.scale_atol:g}*max|ref|" if tol.scale_atol else ""
        bound = f", |a-b| <= {tol.atol:g} + {tol.rtol:g}*|ref|{scaled}"
        rule += bound if math.isfinite(tol.atol) else ", error not gated"
        rule += f", top-1 >= {tol.top1_min:g}" if tol.top1_min > 0 else ""
    print(f"{path} as {target.name} (tier {target.tier}{': ' + rule if rule else ''}) against {spec.name} "
          f"({weights})")
    if result.runtime:
        print("runtime: " + ", ".join(f"{k} {v}" for k, v in result.runtime.items()
                                      if k in ("runtime", "version", "delegate", "batch_mode")))
    if result.parity:
        print(f"{'batch':>5} {'output':<24} {'cosine':>12} {'max_abs':>9} {'top1':>6}  result")
        for parity in result.parity:
            for out in parity.outputs:
                top1 = fmt_optional(out.top1_agreement, ".3f")
                verdict = "ok" if out.passed else "FAIL: " + "; ".join(out.failures)
                print(f"{parity.batch:>5} {out.name:<24} {out.cosine:>12.9f} {out.max_abs:>9.3g} {top1:>6}  {verdict}")
            for error in parity.errors:
                print(f"{parity.batch:>5} FAIL: {error}")


def run(args: argparse.Namespace) -> int:
    path = Path(args.artifact)
    if not path.exists():
        raise UsageError(f"ARTIFACT {args.artifact}: no such file or directory")
    sidecar = read_sidecar(path)
    if args.model is None and args.spec is None and isinstance(sidecar.get("model"), str):
        args.model = sidecar["model"]  # the model the sidecar says the file was exported from
    session, spec = open_session(args, model_option="--model")
    target = copy.copy(choose_target(path, args.target, sidecar, session.targets))
    if args.tier is not None:
        if args.tier not in session.thresholds.tiers:
            raise UsageError(f"--tier {args.tier}: unknown tier; tiers: {', '.join(session.thresholds.tiers)}")
        target.tier = args.tier
    model = load_model(session, spec)
    weights = weights_label(session, spec)
    with tempfile.TemporaryDirectory(prefix="export-harness-verify-") as scratch:
        artifact = user_artifact(path, target, spec, sidecar, Path(scratch))
        cache = FileCache(session.cache.root / "verify", artifact, Path(scratch))
        try:
            result = run_cell(spec, target, model, cache=cache, thresholds=session.thresholds,  # type: ignore[arg-type]
                              targets=session.targets, identities=session.identities, localise=False)
        except CellFailure as exc:
            result = exc.result
    print_result(path, target, spec, result, weights)
    if sidecar.get("model") not in (None, spec.name):
        print(f"note: its sidecar says it was exported from {sidecar['model']}, not {spec.name}")
    if result.status == "passed":
        print(f"PASSED: {result.cell_id} (worst cosine {result.worst()['cosine']:.9f})")
        return EXIT_OK
    print(f"FAILED [{result.stage}]: {result.message.strip().splitlines()[0] if result.message else ''}")
    return EXIT_FAILED
