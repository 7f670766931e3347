"""Expected failures and skips of a project's cells: one file, one declaration type, one matcher.

A project declares every cell it expects to fail (or not to run) in ``baselines/expectations.toml`` (or the file
``--harness-expectations`` / the CLI's ``--expectations`` names), layered over the packaged defaults::

    [[expect]]
    cells = ["bst*-onnx:int8-static[entropy]", "gcode_decoder_step-onnx:int8-static[entropy]#accuracy"]
    xfail = "the -inf attention mask gives an infinite activation range: ORT's entropy calibrator refuses it"
    match = "is not finite"          # regex the real failure must contain (else it is a real failure)
    cpu_lacks = ["avx512_vnni"]      # holds only on CPUs without these flags (cpu_has: only with all of them)

Each pattern is ``MODEL-TARGET`` with an optional ``#SUITE`` (``#lengths``: the dynamic-lengths check,
``#accuracy``: the accuracy gate; none: the conformance matrix, whose declarations the latency suite also
follows). ``*`` is the only wildcard; brackets are literal. An entry is either ``xfail = "reason"`` (strict
unless ``strict = false``: a pass is an XPASS that fails the run) or ``skip = "reason"``. For a cell, the first
entry in file order that matches it and whose CPU condition holds here is its declaration; the project's entries
come before the packaged ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export_harness.converters.defaults import default_path, read_toml
from export_harness.converters.util.cpu import cpu_flags
from export_harness.models.spec import star_match

FILE_NAME = "expectations.toml"
SUITES = ("parity", "lengths", "accuracy")
"""What a declaration is about: the conformance matrix (no suffix), ``#lengths``, ``#accuracy``."""
_KEYS = {"cells", "xfail", "skip", "match", "strict", "cpu_lacks", "cpu_has"}


class ExpectationError(ValueError):
    """The expectations file is malformed or names a cell no registry has."""


@dataclass(frozen=True)
class Expectation:
    """One declared expected failure (``kind == "xfail"``) or skip of the cells ``pattern`` matches in ``suite``."""

    pattern: str
    reason: str
    suite: str = "parity"
    kind: str = "xfail"
    match: str = ""
    """Regex the cell's failure message must contain; a different failure is reported as a real failure."""
    strict: bool = True
    cpu_lacks: tuple[str, ...] = ()
    """The declaration holds only on a CPU that has none of these ``/proc/cpuinfo`` flags; elsewhere the cell must
    pass."""
    cpu_has: tuple[str, ...] = ()
    """The declaration holds only on a CPU that has all of these flags."""
    source: str = ""

    def matches(self, cell: str, suite: str = "parity") -> bool:
        """Whether this declaration names ``cell`` (``MODEL-TARGET``) in ``suite``, on any CPU."""
        return suite == self.suite and star_match(self.pattern, cell)

    def applies_here(self) -> bool:
        """False when the CPU has one of ``cpu_lacks``' flags or lacks one of ``cpu_has``'."""
        flags = cpu_flags() if self.cpu_lacks or self.cpu_has else frozenset()
        return not (flags & set(self.cpu_lacks)) and set(self.cpu_has) <= flags

    def explains(self, failure_message: str) -> bool:
        """Whether ``failure_message`` is the failure this declaration expects."""
        return not self.match or re.search(self.match, failure_message) is not None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ExpectationError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_entry(entry: Any, where: str) -> list[Expectation]:
    """The declarations of one ``[[expect]]`` table (one per pattern in ``cells``)."""
    if not isinstance(entry, dict):
        raise ExpectationError(f"{where}: expected a table, got {entry!r}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ExpectationError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(_KEYS)}")
    kinds = [k for k in ("xfail", "skip") if k in entry]
    if len(kinds) != 1:
        raise ExpectationError(f"{where}: needs exactly one of 'xfail = \"reason\"' or 'skip = \"reason\"'")
    kind = kinds[0]
    reason = entry[kind]
    if not isinstance(reason, str) or not reason.strip():
        raise ExpectationError(f"{where}: '{kind}' must be a written reason, got {reason!r}")
    match = entry.get("match", "")
    if not isinstance(match, str) or (kind == "skip" and match):
        raise ExpectationError(f"{where}: 'match' must be a regex string, and only an xfail has one")
    try:
        re.compile(match)
    except re.error as exc:
        raise ExpectationError(f"{where}: 'match' is not a regular expression ({exc})") from None
    strict = entry.get("strict", True)
    if not isinstance(strict, bool) or (kind == "skip" and "strict" in entry):
        raise ExpectationError(f"{where}: 'strict' must be true or false, and only an xfail has it")
    if "cells" not in entry:
        raise ExpectationError(f"{where}: needs 'cells', a list of MODEL-TARGET[#SUITE] patterns")
    lacks = _strings(entry.get("cpu_lacks", []), f"{where} cpu_lacks") if "cpu_lacks" in entry else ()
    has = _strings(entry.get("cpu_has", []), f"{where} cpu_has") if "cpu_has" in entry else ()
    out = []
    for pattern in _strings(entry["cells"], f"{where} cells"):
        cell, _, suite = pattern.partition("#")
        suite = suite or "parity"
        if suite not in SUITES[1:] and suite != "parity":
            raise ExpectationError(f"{where}: {pattern!r}: unknown suite '#{suite}'; known: #lengths, #accuracy "
                                   "(no suffix: the conformance matrix)")
        if "-" not in cell:
            raise ExpectationError(f"{where}: {pattern!r} is not a MODEL-TARGET pattern")
        out.append(Expectation(cell, reason.strip(), suite, kind, match, strict, lacks, has, where))
    return out


class Expectations:
    """Every declaration of a session, in precedence order (the project's file, then the packaged defaults)."""

    def __init__(self, entries: Sequence[Expectation], source: str = "<list>") -> None:
        self.entries = tuple(entries)
        self.source = source

    @classmethod
    def from_data(cls, data: dict[str, Any], source: str) -> Expectations:
        unknown = set(data) - {"expect"}
        if unknown:
            raise ExpectationError(f"{source}: unknown sections {sorted(unknown)}; declarations are [[expect]] tables")
        tables = data.get("expect", [])
        if not isinstance(tables, list):
            raise ExpectationError(f"{source}: 'expect' must be an array of tables ([[expect]]), got {tables!r}")
        return cls([e for i, t in enumerate(tables) for e in parse_entry(t, f"{source} [[expect]] #{i + 1}")],
                   source)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Expectations:
        """The project file ``path`` (if any) before the packaged defaults."""
        packaged = default_path(FILE_NAME)
        layers = [Path(path)] if path is not None else []
        entries: list[Expectation] = []
        for file in [*layers, packaged]:
            entries += cls.from_data(read_toml(file, ExpectationError), str(file)).entries
        return cls(entries, " over ".join(str(f) for f in [*layers, packaged]))

    def for_cell(self, cell: str, suite: str = "parity") -> Expectation | None:
        """The cell's declaration on this CPU: the first entry matching it whose CPU condition holds, or None."""
        return next((e for e in self.entries if e.matches(cell, suite) and e.applies_here()), None)

    def declared_anywhere(self, cell: str, suite: str = "parity") -> Expectation | None:
        """The first entry declaring ``cell`` on some CPU (pages must not depend on the CPU that renders them)."""
        return next((e for e in self.entries if e.matches(cell, suite)), None)

    def check_names(self, cells: Iterable[str]) -> None:
        """Every pattern matches at least one of ``cells`` (``MODEL-TARGET`` ids of every known model, selected or
        not): a typo is an error when the session starts, not a declaration that silently never applies."""
        known = list(cells)
        for e in self.entries:
            if not e.source.startswith(str(default_path(FILE_NAME))) and not any(star_match(e.pattern, c)
                                                                                 for c in known):
                suffix = "" if e.suite == "parity" else f"#{e.suite}"
                raise ExpectationError(f"{e.source}: {e.pattern + suffix!r} matches no registered model-target cell")


def known_cells(models: Any, targets: Any, zoo: str | Sequence[str] = "all") -> list[str]:
    """``MODEL-TARGET`` ids a declaration may name: every registered model's, plus the bundled zoo's models a partial
    ``zoo`` selection left out (their declarations stay valid when a run selects a few)."""
    from export_harness.models.registry import builtin_specs, parse_zoo

    names = list(models.names())
    if parse_zoo(zoo) not in ([], ["all"]):
        names += [spec.name for spec in builtin_specs("all") if spec.name not in names]
    return [f"{model}-{target}" for model in names for target in targets.names()]
