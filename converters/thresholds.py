"""Named tolerance tiers per precision, with per-model and per-cell overrides: the packaged defaults
(``converters/defaults/thresholds.toml``) with a project's file layered over them.

The guides' numbers (FP32 cosine > 0.99, FP16 > 0.95) are floors: a tier or override looser than its floor is
rejected when the file is loaded, so nobody can make a cell pass by loosening below what the guides promise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from converters.defaults import default_path, load_layered

DEFAULT_THRESHOLDS = default_path("thresholds.toml")


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for one output: cosine >= cosine_min, |a-b| <= atol + rtol*|ref|, top-1 agreement."""

    cosine_min: float
    atol: float
    rtol: float
    top1_min: float = 1.0

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


class Thresholds:
    """Resolves the tolerance of a cell: tier, then ``[models.NAME.TIER]``, then ``[cells."MODEL-TARGET"]``."""

    def __init__(self, data: dict[str, Any], source: str = "<dict>") -> None:
        self.source = source
        self.floors: dict[str, dict[str, float]] = data.get("floors", {})
        try:
            self.tiers = {name: Tolerance(**_only_fields(vals, f"{source} [tiers.{name}]"))
                          for name, vals in data.get("tiers", {}).items()}
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
        guides = load_layered("thresholds.toml", None, ThresholdError)[0].get("floors", {}) if path else {}
        for precision, floor in guides.items():
            for key, value in floor.items():
                merged = data["floors"].get(precision, {}).get(key, value)
                if (merged < value) if key in ("cosine_min", "top1_min") else (merged > value):
                    raise ThresholdError(f"{path}: [floors] {precision}.{key} = {merged} loosens the guides' floor "
                                         f"{value} (a project may only tighten floors)")
        return cls(data, source=source)

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
        return replace(tol, **{k: v for k, v in override.items() if k in _FIELDS})

    def _check_floor(self, tol: Tolerance, tier: str, where: str) -> None:
        problems = tol.looser_than(self.floors.get(tier, {}))
        if problems:
            raise ThresholdError(f"{self.source} {where}: looser than the guides' floor: " + "; ".join(problems))

    def _require_reason(self, override: dict[str, Any], where: str) -> None:
        if not str(override.get("reason", "")).strip():
            raise ThresholdError(f"{self.source} {where}: an override needs a written 'reason'")
        unknown = set(override) - _FIELDS - {"reason"}
        if unknown:
            raise ThresholdError(f"{self.source} {where}: unknown keys {sorted(unknown)}; allowed {sorted(_FIELDS)}")


def _only_fields(vals: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(vals) - _FIELDS
    if unknown:
        raise ThresholdError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(_FIELDS)}")
    return vals
