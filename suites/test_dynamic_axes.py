"""Dynamic non-batch axes (issue 13, item 2): declared on the spec, exported dynamic, checked symbolic, run at every
declared length; and the artifact sidecar that records them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from export_harness.converters.cache import SIDECAR, ArtifactCache
from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.conformance import ModelIdentities, export_artifact, parity_probes, run_cell
from export_harness.converters.registry import default_target_registry
from export_harness.models.registry import default_registry
from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec

REGISTRY = default_target_registry(include_entry_points=False)


class MeanOverTime(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).mean(dim=1)


def _spec(**overrides: object) -> ModelSpec:
    fields = dict(name="frames_mean", family="selftest", factory=MeanOverTime,
                  inputs=(InputSpec("x", ("B", "frames", 6), "float32", "NTC",
                                    lambda rng, b, frames=10: rng.normal(size=(b, frames, 6)).astype(np.float32)),),
                  outputs=(OutputSpec("y", ("B", 4)),), axis_lengths={"frames": (10, 17)})
    fields.update(overrides)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def test_the_zoo_declares_the_guides_dynamic_axes() -> None:
    zoo = default_registry()
    assert zoo.get("sign_gru").axis_lengths == {"frames": (300, 500)}
    assert zoo.get("sign_gru").onnx_dynamic_axes()["input"] == {0: "batch", 1: "frames"}
    assert zoo.get("gcode_fingerprint").onnx_dynamic_axes()["memory"] == {0: "batch", 1: "seq"}
    assert zoo.get("sign_gru").example_inputs(2, lengths={"frames": 500})["input"].shape == (2, 500, 178)


def test_undeclared_or_unused_lengths_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"frames_mean.*missing \['frames'\]"):
        _spec(axis_lengths={})
    with pytest.raises(ValueError, match=r"unknown \['steps'\]"):
        _spec(axis_lengths={"frames": (10,), "steps": (3,)})


def test_parity_runs_every_batch_then_each_other_length() -> None:
    """test_cell: every batch at the default lengths; test_dynamic_lengths: the largest batch at each other length."""
    assert parity_probes(_spec()) == [(1, {}), (3, {})]
    assert parity_probes(_spec(), lengths=True) == [(3, {"frames": 17})]
    default = _spec().example_inputs(3)["x"]
    assert default.shape == (3, 10, 6) and _spec().example_inputs(3, lengths={"frames": 17})["x"].shape == (3, 17, 6)


def test_exported_dynamic_run_at_both_lengths_and_the_sidecar_says_so(tmp_path) -> None:
    spec = _spec()
    cache = ArtifactCache(tmp_path)
    for lengths, probes in ((False, [(1, {}), (3, {})]), (True, [(3, {"frames": 17})])):
        result = run_cell(spec, REGISTRY.get("onnx:fp32"), spec.build(), cache=cache, thresholds=Thresholds.load(),
                          targets=REGISTRY, lengths=lengths)
        assert [(p.batch, p.lengths) for p in result.parity] == probes
    artifact = export_artifact(REGISTRY.get("onnx:fp32"), spec, spec.build(), cache, REGISTRY, ModelIdentities())
    assert not artifact.converted_now  # the sidecar is not content: the entry still verifies
    sidecar = json.loads((artifact.directory / SIDECAR).read_text())
    assert sidecar["dynamic_axes"] == {"x": {"0": "batch", "1": "frames"}, "y": {"0": "batch"}}
    assert sidecar["sha256"] == artifact.meta["content_sha256"] and sidecar["opset"] == 17
    assert sidecar["inputs"] == [{"name": "x", "shape": ["B", "frames", 6], "dtype": "float32", "layout": "NTC"}]
    assert "torch" in sidecar["versions"]


def test_a_backend_that_freezes_the_axis_fails_the_lengths_check(tmp_path) -> None:
    """An export that froze ``frames`` (here: exported from a spec with a fixed length) passes the default-length
    structure check, but the dynamic-lengths run of the spec that declares it dynamic rejects it: never silently
    passed."""
    import onnx

    from export_harness.converters.checks.onnx_structure import check_onnx_structure, frozen_axes

    fixed = _spec(inputs=(InputSpec("x", ("B", 10, 6), "float32", "NTC",
                                    lambda rng, b: rng.normal(size=(b, 10, 6)).astype(np.float32)),),
                  axis_lengths={})
    artifact = export_artifact(REGISTRY.get("onnx:fp32"), fixed, fixed.build(), ArtifactCache(tmp_path), REGISTRY,
                               ModelIdentities())
    check_onnx_structure(artifact.path, _spec())  # batch stays dynamic: test_cell passes
    proto = onnx.load(str(artifact.path))
    assert frozen_axes(proto, _spec(), lengths=True) == ["x[1] (frames)=10"]
    assert frozen_axes(proto, _spec(), lengths=False) == []
