"""Named tolerance tiers per precision, with per-model and per-cell overrides: the packaged defaults
(``converters/defaults/thresholds.toml``) with a project's file layered over them.

The guides' numbers (FP32 cosine > 0.99, FP16 > 0.95) are floors: a tier or override looser than its floor is
rejected when the file is loaded, so nobody can make a cell pass by loosening below what the guides promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from export_harness.converters.defaults import default_path, load_layered, read_toml, require_number

DEFAULT_THRESHOLDS = default_path("thresholds.toml")


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for one output: cosine >= cosine_min; every element within
    ``atol + rtol*|ref| + scale_atol*max|ref|``; the share of rows whose decisive top-1 / top-5 hold >= top1_min.

    ``scale_atol`` makes the elementwise bound relative to the output's own scale (its largest magnitude in the
    batch): a reduced precision's rounding error grows with the values it rounds, whatever units a model's outputs
    are in (docs/matrix.md "Tiers from the number format")."""

    cosine_min: float
    atol: float
    rtol: float
    top1_min: float = 1.0
    scale_atol: float = 0.0

    def scaled_allowance(self, ref: np.ndarray) -> np.ndarray:
        """The part of each element's allowed error that follows the values: ``rtol*|ref| + scale_atol*max|ref|``
        (the whole allowance is ``atol`` more)."""
        magnitude = np.abs(np.nan_to_num(ref, posinf=0.0, neginf=0.0))
        scale = float(magnitude.max()) if magnitude.size else 0.0
        return self.rtol * magnitude + self.scale_atol * scale

    def looser_than(self, floor: dict[str, float]) -> list[str]:
        out = []
        if "cosine_min" in floor and self.cosine_min < floor["cosine_min"]:
            out.append(f"cosine_min {self.cosine_min} < floor {floor['cosine_min']}")
        if "top1_min" in floor and self.top1_min < floor["top1_min"]:
            out.append(f"top1_min {self.top1_min} < floor {floor['top1_min']}")
        return out


class ThresholdError(ValueError):
    """The thresholds file is malformed or loosens a tier below the guides' floor."""


_FIELDS = {f.name for f in fields(Tolerance)}
_RANGES = {"cosine_min": (-1.0, 1.0), "top1_min": (0.0, 1.0), "atol": (0.0, None), "rtol": (0.0, None),
           "scale_atol": (0.0, 1.0)}
_SECTIONS = {"floors", "tiers", "models", "cells"}
UNCHECKED = "unchecked"
"""A tier's ``atol``/``rtol`` that judges it on cosine (and top-1) alone, as the int8 tiers do."""


class Thresholds:
    """Resolves the tolerance of a cell: tier, then ``[models.NAME.TIER]``, then ``[cells."MODEL-TARGET"]``."""

    def __init__(self, data: dict[str, Any], source: str = "<dict>") -> None:
        self.source = source
        unknown = set(data) - _SECTIONS
        if unknown:
            raise ThresholdError(f"{source}: unknown sections {sorted(unknown)}; allowed {sorted(_SECTIONS)}")
        self.floors: dict[str, dict[str, float]] = data.get("floors", {})
        for precision, floor in self.floors.items():
            _only_fields(floor, f"{source} [floors.{precision}]")
        try:
            self.tiers = {name: Tolerance(**{k: v for k, v in _only_fields(
                              vals, f"{source} [tiers.{name}]", frozenset({"reason"}), tier=True).items()
                              if k in _FIELDS}) for name, vals in data.get("tiers", {}).items()}
        except TypeError as exc:
            raise ThresholdError(f"{source}: {exc}") from exc
        self.models: dict[str, dict[str, dict[str, Any]]] = data.get("models", {})
        self.cells: dict[str, dict[str, Any]] = data.get("cells", {})
        for name, tol in self.tiers.items():
            self._check_floor(tol, name, f"[tiers.{name}]")
        for model, per_tier in self.models.items():
            for tier, override in per_tier.items():
                self._require_reason(override, f"[models.{model}.{tier}]")
                self._check_floor(self._apply(self.tier(tier), override), tier, f"[models.{model}.{tier}]")
        for cell, override in self.cells.items():
            self._require_reason(override, f'[cells."{cell}"]')

    @classmethod
    def load(cls, path: str | Path | None = None) -> Thresholds:
        """The packaged default tiers and floors with the project file ``path`` (if any) layered over them; a project
        may tighten the guides' floors, never loosen them."""
        data, source = load_layered("thresholds.toml", path, ThresholdError)
        packaged = load_layered("thresholds.toml", None, ThresholdError)[0]
        guides = packaged.get("floors", {}) if path else {}
        for precision, floor in guides.items():
            for key, value in floor.items():
                merged = data["floors"].get(precision, {}).get(key, value)
                if (merged < value) if key in ("cosine_min", "top1_min") else (merged > value):
                    raise ThresholdError(f"{path}: [floors] {precision}.{key} = {merged} loosens the guides' floor "
                                         f"{value} (a project may only tighten floors)")
        thresholds = cls(data, source=source)  # numbers checked first
        if path:
            _require_reason_to_loosen(read_toml(Path(path), ThresholdError, "thresholds.toml").get("tiers", {}),
                                      packaged.get("tiers", {}), path)
        return thresholds

    def tier(self, name: str) -> Tolerance:
        try:
            return self.tiers[name]
        except KeyError:
            raise ThresholdError(f"{self.source}: no tier {name!r}; tiers: {', '.join(self.tiers)}") from None

    def resolve(self, model: str, target: str, tier: str, model_overrides: dict | None = None) -> Tolerance:
        """Tolerance for one cell. ``model_overrides`` are the ModelSpec's own per-tier tolerances."""
        tol = self.tier(tier)
        for override in ((model_overrides or {}).get(tier), self.models.get(model, {}).get(tier),
                         self.cells.get(f"{model}-{target}")):
            if override:
                tol = self._apply(tol, override)
        problems = tol.looser_than(self.floors.get(tier, {}))
        if problems:
            raise ThresholdError(f"{self.source}: cell {model}-{target} would be looser than the floor: "
                                 + "; ".join(problems))
        return tol

    @staticmethod
    def _apply(tol: Tolerance, override: dict[str, Any]) -> Tolerance:
        return replace(tol, **{k: v for k, v in _only_fields(override, "override", frozenset({"reason"})).items()
                               if k in _FIELDS})

    def _check_floor(self, tol: Tolerance, tier: str, where: str) -> None:
        problems = tol.looser_than(self.floors.get(tier, {}))
        if problems:
            raise ThresholdError(f"{self.source} {where}: looser than the guides' floor: " + "; ".join(problems))

    def _require_reason(self, override: dict[str, Any], where: str) -> None:
        _only_fields(override, f"{self.source} {where}", frozenset({"reason"}))
        if not str(override.get("reason", "")).strip():
            raise ThresholdError(f"{self.source} {where}: an override needs a written 'reason'")

    def check_names(self, models: Any, targets: Any) -> None:
        """Every override names a registered model, tier and cell, and every cell override keeps its floor (so a
        typo or a loosened cell is an error when the session starts, not silence or a failure of that cell)."""
        for model, per_tier in self.models.items():
            if model not in models:
                raise ThresholdError(f"{self.source} [models.{model}]: no model {model!r} is registered")
            for tier in per_tier:
                self.tier(tier)
        for cell in self.cells:
            spec, target = split_cell(cell, models, targets)
            if spec is None:
                raise ThresholdError(f'{self.source} [cells."{cell}"]: no registered model-target cell of that name')
            self.resolve(spec.name, target.name, target.tier, getattr(spec, "tolerances", None))


def split_cell(cell: str, models: Any, targets: Any) -> tuple[Any, Any]:
    """``MODEL-TARGET`` -> (spec, target) of the registries, or (None, None). Model names may contain ``-``, so
    every split point is tried."""
    for i, ch in enumerate(cell):
        if ch == "-" and cell[:i] in models and cell[i + 1:] in targets.names():
            return models.get(cell[:i]), targets.get(cell[i + 1:])
    return None, None


def _require_reason_to_loosen(project: dict[str, Any], packaged: dict[str, Any], path: str | Path) -> None:
    """A project's ``[tiers.NAME]`` that loosens the packaged tier (a lower ``cosine_min`` / ``top1_min``, a higher
    ``atol`` / ``rtol``, ``"unchecked"`` where the package checks) says why, as overrides do: a whole tier loosened
    without a word would loosen every cell of that precision silently."""
    for name, tier in project.items():
        base = packaged.get(name)
        if base is None or str(tier.get("reason", "")).strip():
            continue
        looser = []
        for key, value in tier.items():
            if key == "reason" or (key not in base and key != "scale_atol"):
                continue
            new, old = (math.inf if v == UNCHECKED else v for v in (value, base.get(key, 0.0)))
            if not isinstance(new, (int, float)) or not isinstance(old, (int, float)):
                continue
            if (new < old) if key in ("cosine_min", "top1_min") else (new > old):
                looser.append(f"{key} {value!r} (packaged {base.get(key, 0.0)!r})")
        if looser:
            raise ThresholdError(f"{path}: [tiers.{name}] loosens the packaged tier ({'; '.join(looser)}): a "
                                 "redefinition that loosens a tier needs a written 'reason'")


def _only_fields(vals: dict[str, Any], where: str, extra: frozenset[str] = frozenset(), tier: bool = False
                 ) -> dict[str, Any]:
    """``vals`` with every key a tolerance field (or in ``extra``) holding a finite number in its range; a tier's
    ``atol``/``rtol`` may be ``"unchecked"`` (read as infinity: no elementwise criterion)."""
    if not isinstance(vals, dict):
        raise ThresholdError(f"{where}: expected a table, got {vals!r}")
    unknown = set(vals) - _FIELDS - extra
    if unknown:
        raise ThresholdError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(_FIELDS | extra)}")
    vals = dict(vals)
    for key in set(vals) & _FIELDS:
        if key in ("atol", "rtol") and vals[key] == UNCHECKED:
            if not tier:
                raise ThresholdError(f"{where} {key}: only a tier may leave elementwise error {UNCHECKED!r}; an "
                                     f"override may raise {key}, not switch it off")
            vals[key] = math.inf
            continue
        lo, hi = _RANGES[key]
        hint = f' (to judge a tier on cosine alone write {key} = "{UNCHECKED}")' if key in ("atol", "rtol") else ""
        try:
            require_number(vals[key], f"{where} {key}", lo=lo, hi=hi, error=ThresholdError)
        except ThresholdError as exc:
            raise ThresholdError(f"{exc}{hint}") from None
    return vals
