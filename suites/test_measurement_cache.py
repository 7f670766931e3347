"""Parity measurements cached like artifacts: the artifact's outputs on the parity inputs are served on a re-run
(no runtime loaded), judged afresh against the thresholds in force, and measured again when the artifact's bytes, the
inputs or the runtime change."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_harness.converters import conformance
from export_harness.converters.cache import ArtifactCache
from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.conformance import CellFailure, run_cell
from export_harness.converters.report import matrix_report
from suites.matrix_helpers import essentials, run_matrix

MODEL, TARGET = "tiny_ladeda", "onnx:int8-dynamic"


def _run(harness, cache: ArtifactCache, thresholds: Thresholds, seed: int = 0):
    spec, target = harness.models.get(MODEL), harness.targets.get(TARGET)
    try:
        return run_cell(spec, target, harness.model(spec), cache=cache, thresholds=thresholds,
                        targets=harness.targets, identities=harness.identities, seed=seed, localise=False)
    except CellFailure as failure:
        return failure.result


def test_parity_outputs_are_served_and_rejudged(harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    conformance._TORCH_REFERENCES.clear()  # held by this process for the session's cache: computed into this one
    first = _run(harness, cache, Thresholds.load(None))
    assert first.status == "passed" and first.measured == "computed"

    target_class = type(harness.targets.get(TARGET))
    monkeypatch.setattr(target_class, "load", lambda *a: pytest.fail("a served measurement loaded the runtime"))
    monkeypatch.setattr(conformance, "run_torch", lambda *a: pytest.fail("a served reference ran PyTorch"))
    conformance._TORCH_REFERENCES.clear()  # this process's copies: served from the store below
    second = _run(harness, cache, Thresholds.load(None))
    assert second.status == "passed" and second.measured == "served" and second.runtime == first.runtime
    assert [o.cosine for p in second.parity for o in p.outputs] == [o.cosine for p in first.parity
                                                                    for o in p.outputs]
    strict = tmp_path / "thresholds.toml"
    strict.write_text("[tiers.int8-dynamic]\ncosine_min = 0.9999999\n")
    rejudged = _run(harness, cache, Thresholds.load(strict))  # a tighter tier: judged again, nothing run
    assert rejudged.status == "failed" and rejudged.stage == "parity" and rejudged.measured == "served"

    monkeypatch.undo()
    assert _run(harness, cache, Thresholds.load(None), seed=1).measured == "computed"  # other inputs
    monkeypatch.setattr(target_class, "versions", lambda self: {"onnxruntime": "another"})
    assert _run(harness, cache, Thresholds.load(None)).measured == "computed"  # another runtime
    monkeypatch.undo()
    assert _run(harness, ArtifactCache(tmp_path / "cache", remeasure=True), Thresholds.load(None)).measured == \
        "computed"


@pytest.mark.slow
def test_served_measurements_give_the_verdicts_of_measuring_again(pytestconfig: pytest.Config, tmp_path: Path) -> None:
    """Every cell of one model (each runtime: ONNX Runtime, TorchScript, TFLite and TensorFlow workers; passing,
    failing and declared cells) decides the same with every measurement computed and with every one served."""
    selection = "tiny_ladeda-"
    computed = run_matrix(pytestconfig, tmp_path / "computed.json", selection, "--harness-remeasure")
    served = run_matrix(pytestconfig, tmp_path / "served.json", selection)
    for run in (computed, served):
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " 0 served" in computed.stdout and " 0 computed" in served.stdout, (computed.stdout[-600:],
                                                                               served.stdout[-600:])
    first, second = (matrix_report.load_report(tmp_path / f"{name}.json") for name in ("computed", "served"))
    assert len(first) > 40 and {c["measured"] for c in second if c["parity"]} == {"served"}
    assert essentials(second) == essentials(first)


def test_a_run_failure_is_replayed_without_the_runtime(harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deterministic load / run error of the same bytes on the same runtime is served like outputs (a declared
    runtime limitation costs a warm run no TensorFlow worker); --harness-remeasure runs it again."""
    spec, target = harness.models.get("sign_gru"), harness.targets.get("tflite:fp32[litert-torch]")

    def run(cache: ArtifactCache) -> conformance.CellResult:
        with pytest.raises(CellFailure) as failed:  # resized to another length, XNNPACK cannot prepare the file
            run_cell(spec, target, harness.model(spec), cache=cache, thresholds=Thresholds.load(None),
                     targets=harness.targets, identities=harness.identities, localise=False, lengths=True)
        return failed.value.result

    first = run(ArtifactCache(harness.cache.root, remeasure=True))
    assert first.stage == "run" and "XNNPack delegate failed to reshape" in first.message, first.message
    monkeypatch.setattr(type(target), "load", lambda *a: pytest.fail("a replayed failure loaded the runtime"))
    second = run(harness.cache)
    assert (second.stage, second.message, second.measured) == (first.stage, first.message, "served")
