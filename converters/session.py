"""A harness session without pytest: registries, artifact cache, thresholds, and the models every suite converts.

The pytest plugin's ``Harness`` (``suites/plugin/core.py``) is this class plus the pytest config; the
``export-harness`` CLI (``converters/cli``) uses it directly, so both run a cell through the same code: the same
weights (the trained reference weights by default), the same spec (with the proxy task's calibration split
attached), the same cache and thresholds, hence the same verdict.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from export_harness.converters.cache import ArtifactCache
from export_harness.converters.checks.thresholds import Thresholds
from export_harness.converters.conformance import CellFailure, CellResult, ModelIdentities, run_cell
from export_harness.converters.expectations import Expectations
from export_harness.converters.registry import TargetRegistry
from export_harness.converters.target import Target
from export_harness.models.registry import Registry
from export_harness.models.spec import ModelSpec
from export_harness.models.weights import WeightsError


class BadWeights(Exception):
    """A model's weights file does not load; ``error`` is the loader's one-line ``WeightsError``."""

    def __init__(self, message: str, error: WeightsError) -> None:
        super().__init__(message)
        self.error = error


@dataclass(kw_only=True)
class Session:
    """State shared by all cells of one run: registries, cache, thresholds and built models."""

    models: Registry
    targets: TargetRegistry
    cache: ArtifactCache
    thresholds: Thresholds
    expectations: Expectations = field(default_factory=Expectations.load)
    """The project's declared expected failures and skips (the packaged ones alone by default)."""
    weights: dict[str, str] = field(default_factory=dict)
    """Model name -> weights file given by the user (``--harness-weights`` / the CLI's ``--weights``)."""
    allow_pickle: bool = False
    identities: ModelIdentities = field(default_factory=ModelIdentities)
    weights_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights_source: str = "reference"
    weights_option: str = "--harness-weights"
    """How the user named the weights (the prefix of a bad weights file's one-line message)."""
    calibration: dict[str, tuple[Mapping[str, np.ndarray], str]] = field(default_factory=dict)
    """Model name -> (calibration arrays, identity) the user gave (the CLI's ``--calibration-data``): attached to the
    cell spec instead of the proxy task's calibration split."""
    _reference: dict[str, Any] = field(default_factory=dict)
    _seeded: dict[str, Any] = field(default_factory=dict)
    _cell_specs: dict[str, ModelSpec] = field(default_factory=dict)
    _bad_weights: dict[str, str] = field(default_factory=dict)
    _weights_errors: dict[str, WeightsError] = field(default_factory=dict)

    def weights_failure(self, message: str, error: WeightsError) -> BaseException:
        """The exception a bad weights file raises (the pytest plugin fails the test with the same line)."""
        return BadWeights(message, error)

    def model(self, spec: ModelSpec) -> Any:
        """The conformance matrix's model: the reference model (one weights notion for matrix, accuracy and latency),
        or the seeded one with ``weights_source == "seeded"``."""
        return self.seeded_model(spec) if self.weights_source == "seeded" else self.reference_model(spec)

    def seeded_model(self, spec: ModelSpec) -> Any:
        """The user's weights, else the spec's deterministic seeded init. A weights file that does not load fails
        every cell of its model with the same one line (read once, no traceback)."""
        if spec.name not in self._seeded and spec.name not in self._bad_weights:
            try:
                self._seeded[spec.name] = spec.build(self.weights.get(spec.name), allow_pickle=self.allow_pickle)
            except WeightsError as exc:
                self._bad_weights[spec.name] = f"{self.weights_option} {spec.name}: {exc}"
                self._weights_errors[spec.name] = exc
        if spec.name in self._bad_weights:
            raise self.weights_failure(f"[weights] {self._bad_weights[spec.name]}", self._weights_errors[spec.name])
        return self._seeded[spec.name]

    def cell_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec every suite converts: with the proxy task's calibration split attached when the model has a task
        (static quantizers then calibrate on real data, and matrix, accuracy and latency share each artifact), or the
        user's calibration arrays when given (``calibration``)."""
        if spec.name not in self._cell_specs:
            from export_harness.models.training import has_task, task_for

            self._cell_specs[spec.name] = spec
            if spec.name in self.calibration:
                data, identity = self.calibration[spec.name]
                self._cell_specs[spec.name] = replace(spec, extra={**spec.extra, "calibration": dict(data),
                                                                   "calibration_id": identity})
            elif has_task(spec):
                from export_harness.converters.accuracy.evaluate import accuracy_spec

                self._cell_specs[spec.name] = accuracy_spec(spec, task_for(spec))
        return self._cell_specs[spec.name]

    def reference_model(self, spec: ModelSpec) -> Any:
        """The model whose artifacts the accuracy gates measure and the latency suite times (one artifact, one
        sha256): the user's weights, else the cached trained reference weights of a zoo model's proxy task (trained
        on a cache miss), else the model as its spec builds it (a user's pretrained model, or seeded init).
        ``weights_records[spec.name]`` says which."""
        if spec.name not in self._reference:
            from export_harness.models.training import has_recipe, has_task

            if spec.name in self.weights or not has_task(spec) or not has_recipe(spec):
                self._reference[spec.name] = self.seeded_model(spec)
                source = self.weights.get(spec.name)
                self.weights_records[spec.name] = {"source": source or "as built (no training recipe)"}
            else:
                from export_harness.models.training import reference_weights

                t0 = time.perf_counter()
                path, record = reference_weights(spec)
                self.weights_records[spec.name] = {**record, "source": "trained reference weights",
                                                   "wall_seconds": round(time.perf_counter() - t0, 1)}
                self._reference[spec.name] = spec.build(path)
        return self._reference[spec.name]

    def release(self, name: str) -> None:
        """Free what this process holds for one model once its cells are done (built models, its task's data splits,
        FP32 eval outputs), and hand the freed heap back to the OS: under pytest-xdist a worker runs model after
        model, and two workers holding every model's data (11 GB each, measured) ran the 24 GB machine out of
        memory."""
        from export_harness.converters.accuracy.evaluate import forget_reference_outputs
        from export_harness.models.training import forget_task

        for held in (self._reference, self._seeded, self._cell_specs):
            held.pop(name, None)
        forget_reference_outputs(name)
        forget_task(name)
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)

    def run(self, spec: ModelSpec, target: Target, localise: Callable[[str], bool] | bool = True,
            lengths: bool = False) -> CellResult:
        """One conformance cell on the matrix's model and the spec as every suite converts it; weights that do not
        load fail it at stage ``weights`` (so it still has a row in the matrix summary)."""
        try:
            model = self.model(spec)
        except BaseException:
            if spec.name not in self._bad_weights:
                raise
            raise CellFailure(CellResult(model=spec.name, target=target.name, status="failed", stage="weights",
                                         message=self._bad_weights[spec.name])) from None
        return run_cell(self.cell_spec(spec), target, model, cache=self.cache, thresholds=self.thresholds,
                        targets=self.targets, identities=self.identities, localise=localise, lengths=lengths)
