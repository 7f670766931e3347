"""Structure checks and runners on real .tflite files (litert-torch + ai-edge-litert, through the workers).

A small two-input MLP goes through the four litert-torch targets; each file must store what its name says, the
runner must hide int8 I/O and the fixed batch, and a file checked under the wrong precision must be rejected.
Skipped (with the tox env to use) where the TF stack is not installed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from export_harness.converters.cache import ArtifactCache
from export_harness.converters.checks.tflite_structure import check_tflite_structure
from export_harness.converters.checks.thresholds import DEFAULT_THRESHOLDS, Thresholds
from export_harness.converters.conformance import ModelIdentities, export_artifact, run_cell
from export_harness.converters.registry import default_target_registry
from export_harness.converters.target import StructureError
from export_harness.converters.tf.tflite import TFLiteTarget
from export_harness.converters.tf.tflite_runtime import TFLiteRunner
from export_harness.models.spec import InputSpec, ModelSpec, OutputSpec

REGISTRY = default_target_registry(include_entry_points=False)
BACKEND = REGISTRY.get("tflite:fp32[litert-torch]")
pytestmark = pytest.mark.skipif(bool(BACKEND.unavailable_reason()), reason=str(BACKEND.unavailable_reason()))


class TwoInputMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(48, 96)
        self.b = nn.Linear(16, 96)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 10))

    def forward(self, features: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.a(features) + self.b(context)
        return self.head(h), h.mean(dim=-1, keepdim=True)


def _features(rng: np.random.Generator, b: int) -> np.ndarray:
    t = np.linspace(0, 1, 48, dtype=np.float32)
    return (np.sin(2 * np.pi * (t[None] * rng.uniform(1, 3, (b, 1)) + rng.uniform(0, 1, (b, 1))))).astype(np.float32)


SPEC = ModelSpec(
    name="structure_mlp", family="selftest", factory=TwoInputMLP,
    inputs=(InputSpec("features", ("B", 48), "float32", "NC", _features),
            InputSpec("context", ("B", 16), "float32", "NC",
                      lambda rng, b: rng.uniform(0, 1, (b, 16)).astype(np.float32))),
    outputs=(OutputSpec("scores", ("B", 10), kind="logits"), OutputSpec("pooled", ("B", 1), kind="value")),
)


def _thresholds() -> Thresholds:
    data = tomllib.loads(DEFAULT_THRESHOLDS.read_text())
    data.setdefault("cells", {})["structure_mlp-tflite:int8-full[litert-torch]"] = {
        "cosine_min": 0.95, "reason": "untrained toy MLP with small logits: this test is about structure, not fidelity"}
    return Thresholds(data)


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = ArtifactCache(tmp_path_factory.mktemp("cache"))
    model = SPEC.build()
    out = {}
    for precision in ("fp32", "fp16", "int8-dynamic", "int8-full"):
        target = REGISTRY.get(f"tflite:{precision}[litert-torch]")
        out[precision] = run_cell(SPEC, target, model, cache=cache, thresholds=_thresholds(), targets=REGISTRY)
    out["cache"] = cache
    out["model"] = model
    return out


def test_each_precision_stores_what_its_name_says(cells: dict) -> None:
    facts = {p: cells[p].runtime["structure"] for p in ("fp32", "fp16", "int8-dynamic", "int8-full")}
    share = {p: {k: v["elements"] for k, v in f["weights"].items()} for p, f in facts.items()}
    assert max(share["fp32"], key=share["fp32"].get) == "float32"
    assert max(share["fp16"], key=share["fp16"].get) == "float16"
    assert max(share["int8-dynamic"], key=share["int8-dynamic"].get) == "int8"
    assert max(share["int8-full"], key=share["int8-full"].get) == "int8"
    assert {d["dtype"] for d in facts["int8-dynamic"]["inputs"] + facts["int8-dynamic"]["outputs"]} == {"float32"}
    assert {d["dtype"] for d in facts["int8-full"]["inputs"] + facts["int8-full"]["outputs"]} == {"int8"}
    for precision in ("fp16", "int8-dynamic", "int8-full"):  # size recorded and compared with the FP32 file
        assert facts[precision]["fp32_size_bytes"] == facts["fp32"]["size_bytes"]
        assert facts[precision]["size_ratio_vs_fp32"] < 0.75


def test_runner_hides_int8_io_fixed_batch_and_runs_reference_kernels(cells: dict) -> None:
    full = cells["int8-full"]
    assert full.runtime["runtime"] == "ai-edge-litert" and full.runtime["version"] == "2.3.0"
    assert full.runtime["batch_mode"].startswith("fixed batch 1")
    assert full.runtime["inputs"]["features"]["quantization"] is not None
    assert full.runtime["names_matched_by"] == {"inputs": "position (args_{i})", "outputs": "position (output_{i})"}
    check = full.runtime["reference_kernels_check"]
    assert check["checked"] and check["calls"] == 2 and check["max_lsb"] <= 16
    assert [p.batch for p in full.parity] == [1, 3]
    assert cells["fp32"].worst()["cosine"] > 0.999999


def test_a_file_checked_under_the_wrong_precision_is_rejected(cells: dict) -> None:
    fp32 = export_artifact(REGISTRY.get("tflite:fp32[litert-torch]"), SPEC, cells["model"], cells["cache"],
                           REGISTRY, ModelIdentities())
    for precision, message in (("int8-full", "mostly not int8"), ("fp16", "mostly not float16"),
                               ("int8-dynamic", "mostly not int8")):
        target = REGISTRY.get(f"tflite:{precision}[litert-torch]")
        assert isinstance(target, TFLiteTarget)
        with pytest.raises(StructureError, match=message):
            target.check_structure(fp32, SPEC)


def test_runner_layout_from_a_real_signature(cells: dict, tmp_path: Path) -> None:
    fp32 = cells["fp32"]
    runner = TFLiteRunner(Path(fp32.runtime["artifact_file"]), SPEC, positional=("args_{i}", "output_{i}"))
    inputs = SPEC.example_inputs(2, seed=5)
    out = runner(inputs)
    assert out["scores"].shape == (2, 10) and out["pooled"].shape == (2, 1)
    with torch.no_grad():
        ref = cells["model"](*(torch.from_numpy(inputs[n]) for n in SPEC.input_names))
    assert np.allclose(out["scores"], ref[0].numpy(), atol=1e-5)


class EmbeddingEncoder(nn.Module):
    """A pretrained-encoder shape: a 30k-row embedding table that dominates the element count, small matmuls."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(30000, 32)
        self.proj = nn.Linear(32, 64)
        self.head = nn.Linear(64, 8)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(self.embedding(token_ids).mean(dim=1))))


EMBEDDING_SPEC = ModelSpec(
    name="structure_embedding", family="selftest", factory=EmbeddingEncoder,
    inputs=(InputSpec("token_ids", ("B", 16), "int64", "NT",
                      lambda rng, b: rng.integers(0, 30000, (b, 16)).astype(np.int64)),),
    outputs=(OutputSpec("logits", ("B", 8), kind="logits"),),
)


@pytest.mark.parametrize("precision", ["int8-dynamic", "int8-full"])
def test_int8_judged_on_compute_weights_not_on_the_embedding_table(precision: str,
                                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 12 item 8: an int8 file whose every matmul weight is int8 is int8, whatever dtype its embedding table
    keeps; the table is reported apart."""
    cache = ArtifactCache(tmp_path_factory.mktemp(f"emb-{precision}"))
    target = REGISTRY.get(f"tflite:{precision}[litert-torch]")
    artifact = export_artifact(target, EMBEDDING_SPEC, EMBEDDING_SPEC.build(), cache, REGISTRY, ModelIdentities())
    facts = target.check_structure(artifact, EMBEDDING_SPEC)  # raises StructureError when judged not int8
    compute = {dtype: w["elements"] for dtype, w in facts["compute_weights"].items()}
    assert compute.get("int8", 0) == 32 * 64 + 64 * 8, facts
    assert sum(t["elements"] for t in facts["tables"].values()) == 30000 * 32, facts
    print(precision, "compute", compute, "tables", {d: t["elements"] for d, t in facts["tables"].items()},
          "all constants", {d: w["elements"] for d, w in facts["weights"].items()})


def test_compute_weight_rule_on_recorded_facts() -> None:
    """The rule itself: int8 compute weights beside a float table pass; float compute weights fail, naming both."""
    def facts(compute: dict[str, int], table: dict[str, int]) -> dict:
        as_weights = {d: {"tensors": 1, "bytes": n, "elements": n} for d, n in compute.items()}
        as_tables = {d: {"tensors": 1, "bytes": n, "elements": n} for d, n in table.items()}
        everything = {**as_tables, **{d: {**w, "elements": w["elements"] + table.get(d, 0)}
                                      for d, w in as_weights.items()}}
        return {"weights": everything, "compute_weights": as_weights, "tables": as_tables,
                "inputs": [{"name": "token_ids", "dtype": "int64"}],
                "outputs": [{"name": "logits", "dtype": "float32"}]}

    check_tflite_structure("int8-dynamic", facts({"int8": 2560}, {"float32": 960000}), EMBEDDING_SPEC)
    with pytest.raises(StructureError, match=r"mostly not int8 .*compute-op weights.*lookup-table elements"):
        check_tflite_structure("int8-dynamic", facts({"float32": 2560}, {"int8": 960000}), EMBEDDING_SPEC)
