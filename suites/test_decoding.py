"""Greedy decoding on exported decoder-step artifacts (issue 13, item 5).

For every model that declares ``extra["greedy_decoding"]`` and every target whose matrix cell passes, the host
greedy loop runs on the artifact over the model's evaluation memories and its token sequences are compared with the
same loop on PyTorch (equal to ``generate()``, checked here too): exact-sequence agreement, gated per threshold tier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from export_harness.converters.checks.decoding import GreedyContract, agreement, greedy_decode
from export_harness.converters.conformance import CellFailure, export_artifact
from export_harness.models.spec import run_torch
from export_harness.plugin.cells import cells
from export_harness.plugin.core import Cell, get_harness
from export_harness.plugin.harness import Harness

EVAL_SAMPLES = 128
"""Evaluation memories decoded per cell (the first of the task's eval split): 128 x 16 steps."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "decoding_cell" not in metafunc.fixturenames:
        return
    harness = get_harness(metafunc.config)
    params = [pytest.param(Cell(spec, target), id=Cell(spec, target).id, marks=marks)
              for spec, target, marks in cells(harness) if GreedyContract.of(spec) is not None]
    metafunc.parametrize("decoding_cell", params)


def _memories(harness: Harness, cell: Cell, contract: GreedyContract) -> np.ndarray:
    from export_harness.models.training import has_task, task_for

    if has_task(cell.spec):
        return task_for(cell.spec).eval_inputs[contract.memory][:EVAL_SAMPLES]
    return cell.spec.example_inputs(EVAL_SAMPLES, seed=11)[contract.memory]


def test_greedy_decoding_on_artifact(decoding_cell: Cell, harness: Harness, harness_record: Any) -> None:
    spec, target = decoding_cell.spec, decoding_cell.target
    contract = GreedyContract.of(spec)
    assert contract is not None
    try:
        harness.run(spec, target, localise=False)
    except CellFailure as exc:
        pytest.skip(f"decoding runs on passing artifacts; the matrix cell fails at [{exc.result.stage}]")
    model, cspec = harness.model(spec), harness.cell_spec(spec)
    memory = _memories(harness, decoding_cell, contract)

    reference = greedy_decode(lambda feeds: run_torch(spec, model, dict(feeds)), contract, memory)
    generate = getattr(getattr(model, "gcode_head", None), "generate", None)
    if generate is not None:  # the loop is the model's own generate()
        with torch.no_grad():
            ids = generate(torch.from_numpy(memory), contract.steps, bos_id=contract.bos_id).numpy()
        assert np.array_equal(ids, reference)

    artifact = export_artifact(target, cspec, model, harness.cache, harness.targets, harness.identities)
    decoded = greedy_decode(target.load(artifact, cspec), contract, memory)
    result = agreement(reference, decoded)
    result["minimum"] = contract.minimum(target.tier)
    harness_record("decoding", result)
    print(f"{decoding_cell.id}: {result}")
    assert result["exact_sequence"] >= result["minimum"], (
        f"greedy decoding on {target.name}: {result['exact_sequence']:.4f} of {result['samples']} sequences equal "
        f"PyTorch's (tier {target.tier} needs {result['minimum']}); token agreement {result['token']:.4f}, "
        f"{result['diverged']} diverged, median first divergence at step {result['first_divergence_step_median']}")
