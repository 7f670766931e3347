"""The cells of every suite: one generator of (model, target) parameters, the matrix's check, the ``cell`` marker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from converters.conformance import CellFailure, CellResult
from converters.target import Target
from models.spec import ModelSpec, star_match
from suites.plugin.core import Cell, ExpectedCellFailure, Harness, get_harness, harness_tier


def cells(harness: Harness, *, eager: bool = False) -> Iterator[tuple[ModelSpec, Target | None, list[Any]]]:
    """The one cell generator of every suite: each (model, target) of the registries in matrix order with the marks
    all suites share (``smoke`` / ``slow`` from the spec; a skip naming the tox env when the target's backend is not
    installed). ``eager`` puts the PyTorch-eager pseudo-target (``None``) first. Suites add their own filters and
    declared failures."""
    for spec in harness.models.specs():
        for target in [None, *harness.targets.targets()] if eager else harness.targets.targets():
            marks = [getattr(pytest.mark, m) for m in ("smoke", "slow") if getattr(spec, m)]
            unavailable = getattr(target, "unavailable_reason", None)
            reason = unavailable() if unavailable else None
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
            yield spec, target, marks


def _matrix_params(harness: Harness, globs: tuple[str, ...]) -> list[Any]:
    params = []
    for spec, target, marks in cells(harness):
        if globs and not any(star_match(g, target.name) for g in globs):
            continue
        limitation = spec.limitation_for(target.name)
        if limitation:
            marks.append(pytest.mark.xfail(strict=limitation.strict, reason=limitation.reason,
                                           raises=ExpectedCellFailure))
        cell = Cell(spec, target)
        params.append(pytest.param(cell, id=cell.id, marks=marks))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" not in metafunc.fixturenames and "model_spec" not in metafunc.fixturenames:
        return
    harness = get_harness(metafunc.config)
    if "cell" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("harness_targets")
        metafunc.parametrize("cell", _matrix_params(harness, tuple(marker.args) if marker else ()))
    if "model_spec" in metafunc.fixturenames:
        metafunc.parametrize("model_spec", [
            pytest.param(s, id=s.name, marks=[getattr(pytest.mark, m) for m in ("smoke", "slow") if getattr(s, m)])
            for s in harness.models.specs()
        ])


def item_model(item: pytest.Item) -> str | None:
    """The model a matrix / accuracy / latency item exercises, None for other tests."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in ("cell", "accuracy_cell"):
        if name in params:
            return params[name].spec.name
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every matrix and accuracy cell gets the ``cell`` marker; ``--harness-tier=smoke`` keeps only smoke models'."""
    smoke_only = harness_tier(config) == "smoke"
    kept, dropped = [], []
    for item in items:
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
def check_cell(harness: Harness, record_property: Any) -> Any:
    """``check_cell(cell) -> CellResult``: runs it, records metrics, maps a declared limitation to xfail."""
    return lambda cell: _check_cell(cell, harness, record_property)


def _check_cell(cell: Cell, harness: Harness, record_property: Any) -> CellResult:
    declared = cell.spec.limitation_for(cell.target.name)
    try:
        # the layer table only for a failure its declaration does not explain (a strict xfail shows no message)
        result = harness.run(cell.spec, cell.target,
                             localise=lambda message: not (declared and declared.explains(message)))
    except CellFailure as exc:
        failure = exc
    else:
        record_property("harness", result.to_dict())
        return result
    record_property("harness", failure.result.to_dict())
    limitation = cell.spec.limitation_for(cell.target.name)
    if limitation and limitation.explains(failure.result.message):
        raise ExpectedCellFailure(str(failure))
    expected = f"\n(declared limitation expected /{limitation.match}/: {limitation.reason})" if limitation else ""
    pytest.fail(f"{failure}{expected}", pytrace=False)


