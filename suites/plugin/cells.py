"""The cells of every suite: one generator of (model, target) parameters, the matrix's check, the ``cell`` marker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from export_harness.plugin.core import Cell, ExpectedCellFailure, get_harness, harness_tier

if TYPE_CHECKING:  # imported by the functions that need them, once a harness item is collected
    from export_harness.converters.conformance import CellResult
    from export_harness.converters.expectations import Expectation
    from export_harness.converters.target import Target
    from export_harness.models.spec import ModelSpec
    from export_harness.plugin.harness import Harness


def cells(harness: Harness, *, eager: bool = False, opset_axis: bool = False,
          guide_chains: bool = False) -> Iterator[tuple[ModelSpec, Target | None, list[Any]]]:
    """The one cell generator of every suite: each (model, target) of the registries in matrix order with the marks
    all suites share (``smoke`` / ``slow`` from the spec; a skip naming the tox env when the target's backend is not
    installed). ``eager`` puts the PyTorch-eager pseudo-target (``None``) first. ``opset_axis`` adds the copies of
    ``export_harness.converters.variants`` a model declares (its ``guide_opsets`` and ``guide_chains``; with
    ``--harness-tier=full``
    every opset of the plain ONNX chain); ``guide_chains`` adds only its guide-chain copies. Suites add their own
    filters and declared failures."""
    every_opset = harness_tier(harness.config) == "full"
    for spec in harness.models.specs():
        for target in [None, *harness.targets.targets()] if eager else harness.targets.targets():
            if target is not None and target.opset_variant is not None and not _runs_variant(
                    spec, target, opset_axis=opset_axis, guide_chains=guide_chains, every_opset=every_opset):
                continue
            marks = [getattr(pytest.mark, m) for m in ("smoke", "slow") if getattr(spec, m)]
            unavailable = getattr(target, "unavailable_reason", None)
            reason = unavailable() if unavailable else None
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
            yield spec, target, marks


def _runs_variant(spec: ModelSpec, target: Target, *, opset_axis: bool, guide_chains: bool, every_opset: bool) -> bool:
    declared = target.opset_variant in spec.guide_opsets and (not target.chain or target.chain in spec.guide_chains)
    if target.chain:
        return (opset_axis or guide_chains) and declared
    return opset_axis and (declared or every_opset)


def expectation_marks(declared: Expectation | None) -> list[Any]:
    """The pytest marks of a cell's declaration: a skip, or an xfail that only a failure the declaration explains
    satisfies (:class:`ExpectedCellFailure`)."""
    if declared is None:
        return []
    if declared.kind == "skip":
        return [pytest.mark.skip(reason=declared.reason)]
    return [pytest.mark.xfail(strict=declared.strict, reason=declared.reason, raises=ExpectedCellFailure)]


def _matrix_params(harness: Harness, globs: tuple[str, ...], lengths: bool = False) -> list[Any]:
    from export_harness.models.spec import star_match

    params = []
    for spec, target, marks in cells(harness, opset_axis=not lengths):
        if globs and not any(star_match(g, target.name) for g in globs):
            continue
        if lengths and not spec.axis_lengths:
            continue
        cell = Cell(spec, target)
        marks += expectation_marks(harness.expectations.for_cell(cell.id, "lengths" if lengths else "parity"))
        params.append(pytest.param(cell, id=cell.id, marks=marks))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not {"cell", "length_cell", "model_spec"} & set(metafunc.fixturenames):
        return
    harness = get_harness(metafunc.config)
    marker = metafunc.definition.get_closest_marker("harness_targets")
    globs = tuple(marker.args) if marker else ()
    if "cell" in metafunc.fixturenames:
        metafunc.parametrize("cell", _matrix_params(harness, globs))
    if "length_cell" in metafunc.fixturenames:
        metafunc.parametrize("length_cell", _matrix_params(harness, globs, lengths=True))
    if "model_spec" in metafunc.fixturenames:
        metafunc.parametrize("model_spec", [
            pytest.param(s, id=s.name, marks=[getattr(pytest.mark, m) for m in ("smoke", "slow") if getattr(s, m)])
            for s in harness.models.specs()
        ])


CELL_PARAMS = ("cell", "length_cell", "decoding_cell", "accuracy_cell")


def item_model(item: pytest.Item) -> str | None:
    """The model a matrix / accuracy / latency item exercises, None for other tests."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in CELL_PARAMS:
        spec = getattr(params.get(name), "spec", None)
        if spec is not None:
            return spec.name
    return None


def _no_cells(item: pytest.Item) -> bool:
    """A harness item whose suite has no cell in this project (e.g. no model with dynamic lengths): pytest's
    placeholder for an empty parameter set, deselected instead of shown as a skipped ``[NOTSET]`` test."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(name in params and getattr(params[name], "spec", None) is None for name in CELL_PARAMS)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every matrix and accuracy cell gets the ``cell`` marker; ``--harness-tier=smoke`` keeps only smoke models'."""
    smoke_only = harness_tier(config) == "smoke"
    kept, dropped = [], []
    for item in items:
        if _no_cells(item):
            dropped.append(item)
            continue
        if item_model(item) is not None:
            item.add_marker(pytest.mark.cell)
            if smoke_only and not item.get_closest_marker("smoke"):
                dropped.append(item)
                continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def check_cell(harness: Harness, harness_record: Any) -> Any:
    """``check_cell(cell) -> CellResult``: runs it, records metrics, maps a declared limitation to xfail."""
    return lambda cell: _check_cell(cell, harness, harness_record)


@pytest.fixture
def check_lengths(harness: Harness, harness_record: Any) -> Any:
    """``check_lengths(cell) -> CellResult``: the cell's artifact at the other lengths of its dynamic axes. Skipped
    when the cell fails at the default lengths (``test_cell`` has that verdict); declarations name
    ``MODEL-TARGET#lengths``."""

    from export_harness.converters.conformance import CellFailure

    def run(cell: Cell) -> CellResult:
        try:
            harness.run(cell.spec, cell.target, localise=False)
        except CellFailure as exc:
            pytest.skip(f"the cell fails at the default lengths ([{exc.result.stage}], test_cell's verdict)")
        return _check_cell(cell, harness, harness_record, lengths=True)

    return run


def _check_cell(cell: Cell, harness: Harness, harness_record: Any, lengths: bool = False) -> CellResult:
    from export_harness.converters.conformance import CellFailure

    prop = "harness_lengths" if lengths else "harness"  # the matrix table and report read "harness" rows only
    declared = harness.expectations.for_cell(cell.id, "lengths" if lengths else "parity")
    try:
        # the layer table only for a failure its declaration does not explain (a strict xfail shows no message)
        result = harness.run(cell.spec, cell.target, lengths=lengths,
                             localise=lambda message: not (declared and declared.explains(message)))
    except CellFailure as exc:
        failure = exc
    else:
        harness_record(prop, result.to_dict())
        return result
    limitation = declared
    explained = bool(limitation and limitation.explains(failure.result.message))
    if not lengths and harness.config.getoption("--harness-explain") in (("all", "undeclared") if not explained
                                                                          else ("all",)):
        line = divergence(harness, cell, failure.result)
        if line:
            failure.result.message += f"\n{line}"
            failure = CellFailure(failure.result)  # its text is made when it is built
    harness_record(prop, failure.result.to_dict())
    if explained:
        raise ExpectedCellFailure(str(failure))
    expected = f"\n(declared limitation expected /{limitation.match}/: {limitation.reason})" if limitation else ""
    pytest.fail(f"{failure}{expected}", pytrace=False)


EXPLAINED_TIERS = ("fp32", "fp16")
"""Tiers whose parity failure means the artifact computes something else (quantized tiers have the layer table)."""


def divergence(harness: Harness, cell: Cell, result: CellResult) -> str:
    """"first diverging op: ..." with the reproducer's path for a failing fp32 / fp16 parity cell, from its first
    failing batch ("" for other failures); cached with the artifact (docs/divergence.md)."""
    failing = next((p for p in result.parity if not p.passed), None)
    if result.stage != "parity" or failing is None or cell.target.tier not in EXPLAINED_TIERS:
        return ""
    from export_harness.converters.divergence.explain import divergence_line

    inputs = cell.spec.example_inputs(failing.batch, seed=0, lengths=failing.lengths or None)
    return divergence_line(harness, cell.spec, cell.target, inputs)
