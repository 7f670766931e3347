"""Which targets a command line selects, and one matrix cell run with the outcome pytest would report.

Target patterns use the harness's one pattern syntax (``export_harness.models.spec.star_match``): ``*`` matches any
run of characters, everything else is literal, so brackets are written as targets are named (``tflite:*[onnx2tf]``;
``fnmatch`` would read ``[onnx2tf]`` as a character class). A pattern without ``@`` names targets of the default
chain; ``--opset N`` then picks each one's copy on the opset axis (``onnx:fp32@opset12``), and a pattern with ``@``
names copies directly (``tflite:*[onnx-tf]@guide-int8-opset12``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from export_harness.converters.cache import Artifact
from export_harness.converters.cli import UsageError
from export_harness.converters.conformance import CellFailure, CellResult, export_artifact
from export_harness.converters.expectations import Expectation
from export_harness.converters.registry import TargetRegistry
from export_harness.converters.report.matrix_report import skipped_cell
from export_harness.converters.session import Session
from export_harness.converters.target import Target
from export_harness.models.spec import ModelSpec, star_match

DEFAULT_FORMATS = ("torchscript:trace", "onnx:fp32")


def default_opset(targets: TargetRegistry) -> int:
    """The opset of the default chain's ``onnx:fp32`` (17)."""
    return int(getattr(targets.get("onnx:fp32"), "opset", 17))


def axis_opsets(targets: TargetRegistry) -> list[int]:
    """The opsets of the opset axis (``converters/defaults/opsets.toml``)."""
    return sorted({t.opset_variant for t in targets.targets() if t.opset_variant is not None})


def check_opset(targets: TargetRegistry, opset: int | None, option: str = "--opset") -> int | None:
    """``opset`` when targets exist at it (None for the default chain's), else a UsageError listing the choices."""
    if opset is None or opset == default_opset(targets):
        return None
    available = axis_opsets(targets)
    if opset not in available:
        raise UsageError(f"{option} {opset}: no targets at opset {opset}; available: "
                         f"{', '.join(map(str, available))} (the opset axis, converters/defaults/opsets.toml) or "
                         f"{default_opset(targets)} (the default chain)")
    return opset


def select_targets(targets: TargetRegistry, patterns: Sequence[str], opset: int | None = None,
                   option: str = "--formats") -> list[Target]:
    """The targets the patterns name, in matrix column order; a pattern matching nothing is a UsageError. With
    ``opset``, each selected default-chain target is replaced by its copy at that opset where one exists (targets
    outside the ONNX chain, e.g. TorchScript or litert-torch, have no opset and stay as they are)."""
    names = targets.names()
    chosen: set[str] = set()
    for pattern in patterns:
        pool = names if "@" in pattern else [n for n in names if "@" not in n]
        matched = [n for n in pool if star_match(pattern, n)]
        if not matched:
            plain = ", ".join(n for n in names if "@" not in n)
            raise UsageError(f"{option} {pattern}: matches no target (* is the only wildcard, brackets are literal); "
                             f"targets: {plain}")
        if opset is not None and "@" not in pattern:
            matched = [f"{n}@opset{opset}" if f"{n}@opset{opset}" in names else n for n in matched]
        chosen.update(matched)
    return [t for t in targets.targets() if t.name in chosen]


def outcome_of(declared: Expectation | None, result: CellResult) -> tuple[str, str]:
    """(outcome, note) as the pytest matrix reports the cell: PASSED, FAILED, XFAIL (a failure its declaration
    explains), or, for a declared cell that passed, XPASS (non-strict) / FAILED (strict: the stale declaration fails
    the run, as pytest's XPASS(strict))."""
    if result.status == "passed":
        if declared is None:
            return "PASSED", ""
        note = f"declared limitation no longer fails ({declared.reason})"
        return ("FAILED", f"[XPASS(strict)] {note}") if declared.strict else ("XPASS", note)
    if declared is not None and declared.explains(result.message):
        return "XFAIL", declared.reason
    if declared is not None:
        return "FAILED", f"declared limitation expected /{declared.match}/: {declared.reason}"
    return "FAILED", ""


def run_matrix_cell(session: Session, spec: ModelSpec, target: Target,
                    localise: Callable[[str], bool] | bool | None = None) -> tuple[dict[str, Any], CellResult | None]:
    """Run one cell exactly as the matrix's ``test_cell`` does; returns its record (``CellResult.to_dict()`` plus
    ``outcome``, and ``note`` for a declared cell) and the result (None when skipped)."""
    unavailable = getattr(target, "unavailable_reason", None)
    reason = unavailable() if unavailable else None
    if reason:
        return skipped_cell(spec.name, target.name, reason), None
    declared = session.expectations.for_cell(f"{spec.name}-{target.name}")
    if declared is not None and declared.kind == "skip":
        return skipped_cell(spec.name, target.name, declared.reason), None
    if localise is None:  # the layer table only for a failure its declaration does not explain, as the matrix
        localise = lambda message: not (declared and declared.explains(message))  # noqa: E731
    try:
        result = session.run(spec, target, localise=localise)
    except CellFailure as exc:
        result = exc.result
    outcome, note = outcome_of(declared, result)
    record = dict(result.to_dict(), outcome=outcome)
    if note:
        record["note"] = note
    return record, result


def unexpected(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that fail a run (pytest's FAILED, including a strict XPASS)."""
    return [r for r in records if r.get("outcome") == "FAILED"]


def cached_artifact(session: Session, spec: ModelSpec, target: Target) -> Artifact:
    """The cell's artifact (a verified cache hit once its cell has run)."""
    return export_artifact(target, session.cell_spec(spec), session.model(spec), session.cache, session.targets,
                           session.identities)
