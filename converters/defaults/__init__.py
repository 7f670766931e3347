"""The harness's default configuration files, shipped as package data, and their layering with a project's own.

A project file (``baselines/NAME`` in its rootdir, or a file named by an option) is deep-merged over the default of
the same name: tables merge key by key, any other value of the project wins. So a project states only what it
changes, and a repository without ``baselines/`` runs on the defaults alone.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

WEIGHTS_SOURCES = ("reference", "seeded")
"""Weights a session converts without a user's file: the trained reference weights, or the seeded untrained init."""

DEFAULTS_DIR = Path(__file__).resolve().parent


def default_path(name: str) -> Path:
    """The packaged default file ``name`` (``thresholds.toml``, ``accuracy_budgets.toml``, ``latency.toml``)."""
    return DEFAULTS_DIR / name


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` layered on ``base``: nested tables merge, everything else in ``over`` replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


SHAPES: dict[str, dict[str, int]] = {
    "thresholds.toml": {"floors": 2, "tiers": 2, "models": 3, "cells": 2},
    "accuracy_budgets.toml": {"settings": 1, "methods": 2, "models": 3, "cells": 2},
    "latency.toml": {"bench": 1, "gate": 1, "budgets": -2},
}
"""How deep each section of a settings file nests tables: 2 = a table of tables (``[tiers.fp32]``), 3 = one level
more (``[models.NAME.TIER]``); -2 = an array of tables (``[[budgets]]``)."""


def load_layered(name: str, project: str | Path | None,
                 error: type[Exception] = ValueError) -> tuple[dict[str, Any], str]:
    """(merged data, source description) of the default ``name`` with ``project`` layered over it. A named project
    file that is missing, not UTF-8, not TOML or of the wrong shape (a number where a table belongs) raises ``error``
    naming the file and the key."""
    data = read_toml(default_path(name), error, name)
    if project is None:
        return data, str(default_path(name))
    path = Path(project)
    return deep_merge(data, read_toml(path, error, name)), f"{path} over {default_path(name)}"


def read_toml(path: Path, error: type[Exception], shape: str | None = None) -> dict[str, Any]:
    """The TOML file ``path``, its sections checked against ``SHAPES[shape]``; ``error`` names the file."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: file does not exist") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a TOML file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None
    for section, depth in SHAPES.get(shape or "", {}).items():
        if section in data:
            _check_shape(data[section], depth, f"{path}: [{section}]", error)
    return data


def _check_shape(value: Any, depth: int, where: str, error: type[Exception]) -> None:
    if depth < 0:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise error(f"{where} must be an array of tables ([[...]]), got {value!r}")
        return
    if not isinstance(value, dict):
        raise error(f"{where} must be a table, got {value!r}")
    if depth > 1:
        for key, inner in value.items():
            _check_shape(inner, depth - 1, f"{where[:-1]}.{key}]", error)


def require_number(value: Any, where: str, *, lo: float | None = None, hi: float | None = None,
                   integer: bool = False, error: type[Exception] = ValueError) -> float:
    """``value`` as a finite number within ``[lo, hi]`` (an int when ``integer``), else ``error`` naming ``where``:
    NaN compares false with every limit, so without this check ``cosine_min = nan`` would let anything pass."""
    kind = "an integer" if integer else "a finite number"
    bounds = (f" >= {lo:g}" if lo is not None else "") + (f" and <= {hi:g}" if hi is not None else "")
    wrong = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if wrong or not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{where} must be {kind}{bounds}, got {value!r}")
    return value


def check_numbers(obj: Any, where: str, error: type[Exception] = ValueError, lo: float | None = 0) -> None:
    """Every int/float field of dataclass ``obj`` finite and >= ``lo`` (bools are flags, skipped)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            require_number(value, f"{where}.{f.name}", lo=lo, error=error)
