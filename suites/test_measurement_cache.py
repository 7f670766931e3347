"""Parity measurements cached like artifacts: the artifact's outputs on the parity inputs are served on a re-run
(no runtime loaded), judged afresh against the thresholds in force, and measured again when the artifact's bytes, the
inputs or the runtime change."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_harness.converters.cache import ArtifactCache
from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.conformance import CellFailure, run_cell

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
    first = _run(harness, cache, Thresholds.load(None))
    assert first.status == "passed" and first.measured == "computed"

    target_class = type(harness.targets.get(TARGET))
    monkeypatch.setattr(target_class, "load", lambda *a: pytest.fail("a served measurement loaded the runtime"))
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
