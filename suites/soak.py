"""Soak: runs of the smoke matrix killed at random moments, then a clean run, against a run never interrupted.

    python -m suites.soak --cache DIR [--runs 3] [--seed 0] [-k EXPR] [--inputs-from CACHE] [--json PATH]

On one fresh cache (``--cache``), ``--runs`` runs of ``pytest suites/test_matrix.py --harness-tier=smoke -n 2 --dist
loadgroup`` (the options of ``tox -e quick``) are each killed at a seeded random moment, alternately with SIGKILL and
SIGINT sent to the pytest main process only; then a clean run on the same cache. A reference run, never interrupted,
uses its own fresh cache (``--reference-cache``, default ``DIR-reference``). The soak checks what issue 24 asks:

- no process of a killed run is left 2 s after the kill (every process the soak starts carries a unique
  ``HARNESS_SOAK_TOKEN`` in its environment, and ``/proc`` is walked for it at 0.5, 1 and 2 s);
- no work directory remains in the cache (``<cache>/tmp``) after the clean run, nor a ``harness-run-<pid>-*`` or
  ``harness-import-root-<pid>-*`` directory of a dead process in the runs' ``TMPDIR``;
- the clean run's verdict of every cell (outcome, status, stage, message; see ``suites/test_sharding.py``) equals the
  reference run's. Metrics (``worst``, ``parity``) are compared and reported too, but not required to be equal:
  the two caches convert independently and the onnx2tf bundles are not byte-reproducible.

It prints a table and writes the numbers as JSON (``--json``, default ``DIR-soak.json``); exit status 0 when every
check holds. ``--inputs-from`` links the trained reference weights and datasets (``weights/``, ``data/``: inputs of the
conversions, not artifacts) from another cache into both fresh caches, so the soak does not train them again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export_harness.converters.cache import dead_work_dirs

ROOT = Path(__file__).resolve().parent.parent
TOKEN_VAR = "HARNESS_SOAK_TOKEN"
"""Environment variable carrying a run's unique token: inherited by the xdist workers and the conversion workers."""
CHECKPOINTS = (0.5, 1.0, 2.0)
"""Seconds after a kill at which the run's processes are counted (issue 24: all gone within 2 s)."""
VERDICT = ("outcome", "status", "stage", "message")
METRICS = ("worst", "parity")
SIGNALS = (signal.SIGKILL, signal.SIGINT)
"""Alternated over the killed runs, starting with SIGKILL."""


@dataclass
class Run:
    """One pytest session of the soak and what it left behind."""

    name: str
    cache: str
    signal: str | None = None
    kill_window: tuple[float, float] | None = None
    """The window the kill time was drawn from (seconds after the start)."""
    kill_after_items: int | None = None
    """Killed once this many test results were printed (the default way to draw the kill moment)."""
    kill_at: float | None = None
    """Planned kill time, seconds after the start (None: never killed)."""
    killed_at: float | None = None
    """When the signal was sent (None: the run had ended before)."""
    exit_code: int | None = None
    seconds: float = 0.0
    processes_left: dict[str, int] = field(default_factory=dict)
    """Processes of the run still alive, by seconds after the kill (or after the run's end)."""
    processes_seen: dict[str, list[str]] = field(default_factory=dict)
    """pid and command of each process of the run still alive, by seconds after the kill (or the end)."""
    main_gone_after: float | None = None
    """Seconds after the kill when the pytest main process had exited."""
    all_gone_after: float | None = None
    """Seconds after the kill (or the end) when no process of the run was left; None: still there at the grace."""
    outlived_main: float | None = None
    """Seconds the run's last process outlived the pytest main process (SIGINT lets the main process write its
    summary first; what it started must die with it)."""
    force_killed: list[str] = field(default_factory=list)
    """Processes the soak had to kill after the grace period (pid and command), a defect."""
    work_dirs_left: list[str] = field(default_factory=list)
    """``<cache>/tmp`` entries when the run's processes were gone."""
    runtime_dirs_left: list[str] = field(default_factory=list)
    """``harness-run-<pid>-*`` and ``harness-import-root-<pid>-*`` directories of dead processes in the runs' TMPDIR."""
    log: str = ""


def matrix_command(cache: Path, report: Path, workers: int, select: str | None,
                   extra: tuple[str, ...] = ()) -> list[str]:
    """The smoke matrix as ``tox -e quick`` runs it (xdist, one group per model), on ``cache``."""
    cmd = [sys.executable, "-m", "pytest", "suites/test_matrix.py", "--harness-tier=smoke", f"-n={workers}",
           "--dist=loadgroup", "--no-loadscope-reorder", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
           f"--harness-cache={cache}", f"--harness-report={report}"]
    return [*cmd, *(["-k", select] if select else []), *extra]


def token_processes(token: str) -> list[tuple[int, str]]:
    """(pid, command) of every live process whose environment carries ``HARNESS_SOAK_TOKEN=token`` (zombies, which
    hold nothing but their exit status, are not counted)."""
    marker = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):  # gone meanwhile, or not ours to read
            continue
        if state != "Z":
            found.append((int(entry.name), command[:160]))
    return found


def work_dirs(cache: Path) -> list[str]:
    """The cache's work directories (conversions, evictions, separations in progress or left by a killed process)."""
    tmp = cache / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


RUNTIME_DIRS = ("harness-run-*", "harness-import-root-*")
"""Directories a run's processes make in its TMPDIR (TFLite runners, TensorFlow workers' import roots), named with
their creator's pid."""


def dead_runtime_dirs(tmpdir: Path) -> list[str]:
    """:data:`RUNTIME_DIRS` in ``tmpdir`` whose process is gone."""
    return sorted(p.name for pattern in RUNTIME_DIRS for p in dead_work_dirs(tmpdir, pattern))


PROGRESS = re.compile(r"^([.sxXFE]+)\s*(\[\s*\d+%\])?$", re.M)
"""A progress line of ``pytest -q``: one character per test result, the percentage at its end."""


def progress(log: Path) -> int:
    """How many test results a ``pytest -q`` log has printed so far."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(len(m.group(1)) for m in PROGRESS.finditer(text))


def link_inputs(source: Path, cache: Path) -> None:
    """Hard-link (or copy, across filesystems) ``weights/`` and ``data/`` of ``source`` into ``cache``; lock files
    stay behind (a shared lock inode would couple the caches). Both are written only by atomic rename, never in
    place, so the link cannot carry a change back."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for name in ("weights", "data"):
        if (source / name).is_dir():
            shutil.copytree(source / name, cache / name, copy_function=link, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.lock", ".*"))


class Soak:
    """The runs of one soak, sharing a token prefix, a TMPDIR and a log directory."""

    def __init__(self, cache: Path, reference_cache: Path, out_dir: Path, workers: int, select: str | None,
                 grace: float, timeout: float, extra: tuple[str, ...] = ()) -> None:
        self.cache, self.reference_cache, self.out_dir, self.extra = cache, reference_cache, out_dir, extra
        self.workers, self.select, self.grace, self.timeout = workers, select, grace, timeout
        self.tmpdir = out_dir / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)

    def _start(self, run: Run, token: str, report: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, TOKEN_VAR: token, "HARNESS_CACHE": run.cache, "PYTHONHASHSEED": "0",
               "TMPDIR": str(self.tmpdir)}
        with open(run.log, "wb") as log:
            return subprocess.Popen(matrix_command(Path(run.cache), report, self.workers, self.select, self.extra),
                                    cwd=ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, name: str, cache: Path, kill_at: float | None = None, sig: signal.Signals | None = None,
            on_conversion: bool = False, kill_after_items: int | None = None) -> tuple[Run, Path]:
        """One session; killed with ``sig`` at ``kill_at`` seconds (or, ``on_conversion``, that long after the first
        conversion work directory appeared; or once ``kill_after_items`` results are printed), then watched until its
        processes are gone."""
        token = f"{name}-{uuid.uuid4().hex}"
        report = self.out_dir / f"{name}.json"
        report.unlink(missing_ok=True)
        run = Run(name=name, cache=str(cache), signal=sig.name if sig else None, log=str(self.out_dir / f"{name}.log"))
        before = set(work_dirs(cache))  # left by a killed run: reaped by this one, no sign of its conversions
        start = time.monotonic()
        proc = self._start(run, token, report)
        deadline = start + self.timeout
        if sig is not None and kill_after_items is not None:
            while proc.poll() is None and time.monotonic() < deadline and \
                    progress(Path(run.log)) < kill_after_items:
                time.sleep(0.05)
            run.kill_at = round(time.monotonic() - start, 2)
            if proc.poll() is None:
                os.kill(proc.pid, sig)
                run.killed_at = round(time.monotonic() - start, 2)
        elif sig is not None and kill_at is not None:
            armed_at = start
            if on_conversion:
                armed_at = self._first_work_dir(proc, cache, before, deadline)
            fire = (armed_at if armed_at is not None else start) + kill_at
            while proc.poll() is None and time.monotonic() < fire:
                time.sleep(0.02)
            run.kill_at = round(fire - start, 2)
            if proc.poll() is None:
                os.kill(proc.pid, sig)
                run.killed_at = round(time.monotonic() - start, 2)
        if run.killed_at is None:  # never killed, or it ended before the kill: wait for its end
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        ended = time.monotonic() if run.killed_at is None else start + run.killed_at
        self._watch(run, proc, token, ended)
        run.exit_code = proc.returncode
        run.seconds = round(time.monotonic() - start, 2)
        run.work_dirs_left = work_dirs(cache)
        run.runtime_dirs_left = dead_runtime_dirs(self.tmpdir)
        return run, report

    def _first_work_dir(self, proc: subprocess.Popen[bytes], cache: Path, before: set[str],
                        deadline: float) -> float | None:
        while proc.poll() is None and time.monotonic() < deadline:
            if set(work_dirs(cache)) - before:
                return time.monotonic()
            time.sleep(0.05)
        return None

    def _watch(self, run: Run, proc: subprocess.Popen[bytes], token: str, since: float) -> None:
        """Count the run's processes at the checkpoints after ``since``, wait (up to the grace) until none is left,
        then kill and record any straggler."""
        pending = list(CHECKPOINTS)
        while True:
            main_done = proc.poll() is not None  # reaps the main process: a zombie is no process left running
            now = time.monotonic()
            if main_done and run.main_gone_after is None:
                run.main_gone_after = round(max(0.0, now - since), 2)
            alive = token_processes(token)
            left = len(alive)
            if left == 0 and run.all_gone_after is None:
                run.all_gone_after = round(max(0.0, now - since), 2)
            while pending and now >= since + pending[0]:
                run.processes_seen[str(pending[0])] = [f"{pid} {command}" for pid, command in alive]
                run.processes_left[str(pending.pop(0))] = left
            # main_done too: an exiting main process no longer shows its environment (its memory is gone) before it
            # is a zombie, so "none left" can be seen before poll() says it ended (outlived_main was then unknown)
            if (not pending and left == 0 and main_done) or now >= since + self.grace:
                break
            time.sleep(0.05)
        if run.main_gone_after is None and proc.poll() is not None and run.all_gone_after is not None:
            run.main_gone_after = run.all_gone_after  # it exited between the two looks of the last round
        if run.main_gone_after is not None and run.all_gone_after is not None:
            run.outlived_main = round(max(0.0, run.all_gone_after - run.main_gone_after), 2)
        for pid, command in token_processes(token):  # only processes this soak started (they carry its token)
            run.force_killed.append(f"{pid} {command}")
            os.kill(pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


REPLAYED = " (cached failure; --harness-retry-failed re-converts)"
"""Appended to a failure replayed from the cache: a deterministic failure a killed run recorded is replayed by the
clean run with this note, and is the same verdict."""


def _normalise(message: Any, caches: tuple[Path, ...]) -> Any:
    """A cell's message without what says where and how this run got it (cache paths, a replay note)."""
    if not isinstance(message, str):
        return message
    message = message.removesuffix(REPLAYED)
    for cache in sorted(caches, key=lambda c: len(str(c)), reverse=True):  # DIR-reference before its prefix DIR
        message = message.replace(str(cache), "<cache>")
    return re.sub(r"harness-run-\d+-\w+", "harness-run-<pid>", message)


def compare(clean: Path, reference: Path, caches: tuple[Path, ...]) -> dict[str, Any]:
    """Cell-by-cell comparison of two reports: verdict fields must match; metrics are counted."""
    from export_harness.converters.report import matrix_report

    mine = {c["cell"]: c for c in matrix_report.load_report(clean)}
    theirs = {c["cell"]: c for c in matrix_report.load_report(reference)}
    differences, metric_differences = [], []
    for cell in sorted(set(mine) | set(theirs)):
        a, b = mine.get(cell), theirs.get(cell)
        if a is None or b is None:
            differences.append({"cell": cell, "only_in": "clean" if b is None else "reference"})
            continue
        for key in VERDICT:
            va, vb = _normalise(a.get(key), caches), _normalise(b.get(key), caches)
            if va != vb:
                differences.append({"cell": cell, "field": key, "clean": va, "reference": vb})
        if any(a.get(k) != b.get(k) for k in METRICS):
            metric_differences.append(cell)
    return {"cells_clean": len(mine), "cells_reference": len(theirs), "verdicts_equal": not differences,
            "differences": differences, "metrics_equal_cells": len(set(mine) & set(theirs)) - len(metric_differences),
            "metrics_differ": metric_differences}


KILL_PROGRESS = 0.95
"""By default a run is killed after a random number of its test results, up to this share of the reference run's."""


def soak(cache: Path, runs: int, seed: int, reference_cache: Path, workers: int = 2, select: str | None = None,
         kill_window: tuple[float, float] | None = None, on_conversion: bool = False, inputs_from: Path | None = None,
         grace: float = 30.0, timeout: float = 3600.0, out_dir: Path | None = None,
         signals: tuple[signal.Signals, ...] = SIGNALS, extra: tuple[str, ...] = (),
         reference_from: Path | None = None) -> dict[str, Any]:
    """Run the soak; returns its record (see the module docstring). By default each run is killed once it has
    printed a random number of test results (1 to 95 % of the reference run's): the runs resume one another's
    conversions on the shared cache and get shorter, so a kill time drawn in seconds let the later ones end first.
    ``kill_window``: the kill time in seconds after the start is uniform in it instead (after the run's first
    conversion with ``on_conversion``). ``reference_from``: a previous soak's JSON whose reference run (on its own
    cache, never interrupted) is used instead of running one again."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background by a shell (``cmd &``): SIGINT is ignored, and the pytest runs would inherit that
        # and carry on through their SIGINT. A handled signal is reset to the default in a child: pytest sees Ctrl-C.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    fresh = (cache,) if reference_from else (cache, reference_cache)
    for path in fresh:
        if path.exists() and any(path.iterdir()):
            raise SystemExit(f"soak: {path} is not empty: the soak needs fresh caches")
        path.mkdir(parents=True, exist_ok=True)
        if inputs_from is not None:
            link_inputs(inputs_from, path)
    out_dir = out_dir or cache.with_name(cache.name + "-soak")
    soaker = Soak(cache, reference_cache, out_dir, workers, select, grace, timeout, extra)
    rng = random.Random(seed)
    t0 = time.monotonic()
    if reference_from is not None:
        recorded = json.loads(reference_from.read_text())["reference"]
        reference = Run(**{k: v for k, v in recorded.items() if k in Run.__dataclass_fields__})
        reference_report = Path(reference.log).with_suffix(".json")
        reference_cache = Path(reference.cache)
    else:
        reference, reference_report = soaker.run("reference", reference_cache)
    items = progress(Path(reference.log))
    killed = []
    for i in range(runs):
        sig = signals[i % len(signals)]
        if kill_window is None and items:  # a random point of the run's progress: it cannot end first
            after = rng.randint(1, max(1, int(items * KILL_PROGRESS)))
            run = soaker.run(f"killed-{i + 1}", cache, sig=sig, kill_after_items=after)[0]
            run.kill_after_items = after
        else:
            window = kill_window or (5.0, max(6.0, 0.6 * reference.seconds))
            run = soaker.run(f"killed-{i + 1}", cache, round(rng.uniform(*window), 2), sig,
                             on_conversion=on_conversion)[0]
            run.kill_window = (round(window[0], 1), round(window[1], 1))
        killed.append(run)
    clean, clean_report = soaker.run("clean", cache)
    caches = (cache, reference_cache)
    if clean_report.is_file() and reference_report.is_file():
        verdicts = compare(clean_report, reference_report, caches)
    else:
        verdicts = {"verdicts_equal": False, "differences": [{"missing_report": str(p)} for p in
                                                             (clean_report, reference_report) if not p.is_file()]}
    checks = {
        "nothing_outlives_main_by_2s": all(r.outlived_main is not None and r.outlived_main <= 2.0 for r in killed),
        "no_straggler": all(not r.force_killed for r in [*killed, clean, reference]),
        "no_work_dir_after_clean_run": not clean.work_dirs_left and not clean.runtime_dirs_left,
        "clean_exit_equals_reference": clean.exit_code == reference.exit_code,
        "verdicts_equal": bool(verdicts.get("verdicts_equal")),
    }
    return {"seed": seed, "select": select, "workers": workers, "kill_window": kill_window,
            "reference_from": str(reference_from) if reference_from else None,
            "on_conversion": on_conversion, "inputs_from": str(inputs_from) if inputs_from else None,
            "command": matrix_command(Path("CACHE"), Path("REPORT"), workers, select, extra),
            "reference": asdict(reference), "killed": [asdict(r) for r in killed], "clean": asdict(clean),
            "verdicts": verdicts, "checks": checks, "ok": all(checks.values()),
            "total_seconds": round(time.monotonic() - t0, 1)}


def table(record: dict[str, Any]) -> str:
    """The soak's numbers, one row per run."""
    head = ("run", "signal", "kill at s", "exit", "left 0.5/1/2 s", "gone after s", "stragglers", "work dirs left",
            "seconds")
    rows = [head]
    for r in [record["reference"], *record["killed"], record["clean"]]:
        left = "/".join(str(r["processes_left"].get(str(c), "-")) for c in CHECKPOINTS)
        kill = "-" if r["kill_at"] is None else (f"{r['killed_at']}" if r["killed_at"] is not None
                                                  else f"{r['kill_at']} (ended first)")
        if r.get("kill_after_items"):
            kill += f" ({r['kill_after_items']} results)"
        rows.append((r["name"], r["signal"] or "-", kill, str(r["exit_code"]), left,
                     "-" if r["all_gone_after"] is None else str(r["all_gone_after"]), str(len(r["force_killed"])),
                     str(len(r["work_dirs_left"]) + len(r["runtime_dirs_left"])), str(r["seconds"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    v = record["verdicts"]
    lines.append(f"verdicts: {v.get('cells_clean', 0)} cells, clean == reference: {v.get('verdicts_equal')} "
                 f"({len(v.get('differences', []))} differences); metrics equal in {v.get('metrics_equal_cells', 0)} "
                 f"cells, differ in {len(v.get('metrics_differ', []))}")
    lines.append("checks: " + ", ".join(f"{k}={'ok' if ok else 'FAILED'}" for k, ok in record["checks"].items()))
    return "\n".join(lines)


def portable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without this machine's paths (the interpreter as ``python``, the home directory as ``~``): a soak's
    JSON is committed as a result."""
    text = json.dumps(record).replace(json.dumps(sys.executable)[1:-1], "python")
    return json.loads(text.replace(json.dumps(str(Path.home()))[1:-1], "~"))


def markdown(record: dict[str, Any], command: str) -> str:
    """``docs/results/soak.md``: how the soak ran, one row per run, the checks."""
    v = record["verdicts"]
    ran = record.get("argv") or f"python -m suites.soak --runs {len(record['killed'])} --seed {record['seed']}"
    rows = ["| run | signal | killed at (results printed) | exit | processes left 0.5 / 1 / 2 s | all gone after | "
            "outlived the main process by | work dirs left | seconds |", "|" + " --- |" * 9]
    for r in [record["reference"], *record["killed"], record["clean"]]:
        left = " / ".join(str(r["processes_left"].get(str(c), "-")) for c in CHECKPOINTS)
        kill = "-" if r["killed_at"] is None else f"{r['killed_at']} s" + (
            f" ({r['kill_after_items']})" if r.get("kill_after_items") else "")
        gone = "-" if r["all_gone_after"] is None else f"{r['all_gone_after']} s"
        outlived = "-" if r.get("outlived_main") is None or r["signal"] is None else f"{r['outlived_main']} s"
        dirs = len(r["work_dirs_left"]) + len(r["runtime_dirs_left"])
        rows.append(f"| {r['name']} | {r['signal'] or '-'} | {kill} | {r['exit_code']} | {left} | {gone} | {outlived} "
                    f"| {dirs} | {r['seconds']} |")
    checks = ", ".join(f"`{k}` {'ok' if ok else '**FAILED**'}" for k, ok in record["checks"].items())
    return "\n".join([
        "# Soak: smoke-matrix runs killed at random moments, then a clean run", "",
        f"Generated by `{command}` from the JSON of `{ran}` (docs/trust.md \"Soak\"): seed {record['seed']}, "
        f"{record['workers']} xdist workers, fresh caches; the reference run is never interrupted, on its own cache. "
        "*Work dirs left* are counted when the run's processes were gone (a killed run's are reaped by the next run); "
        "the clean run must leave none.", "", *rows, "",
        f"Verdicts: the clean run's {v.get('cells_clean', 0)} cells against the reference's "
        f"{v.get('cells_reference', 0)}: "
        f"{'equal' if v.get('verdicts_equal') else 'NOT equal'} ({len(v.get('differences', []))} differences); metrics "
        f"equal in {v.get('metrics_equal_cells', 0)} cells, different in {len(v.get('metrics_differ', []))}.", "",
        f"Checks: {checks}. Total {record['total_seconds']} s.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suites.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="a fresh (missing or empty) cache directory")
    parser.add_argument("--reference-cache", type=Path, default=None, help="the reference run's fresh cache "
                        "(default: CACHE-reference)")
    parser.add_argument("--runs", type=int, default=3, help="killed runs (SIGKILL and SIGINT alternately)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k expression restricting the smoke cells")
    parser.add_argument("-n", "--workers", type=int, default=2, help="xdist workers (default 2)")
    parser.add_argument("--kill-window", type=float, nargs=2, metavar=("FROM", "TO"), default=None,
                        help="seconds after the start between which each kill falls (default 5 s to 60%% of the "
                             "reference run's duration)")
    parser.add_argument("--on-conversion", action="store_true",
                        help="count the kill window from the first conversion work directory of the run")
    parser.add_argument("--inputs-from", type=Path, default=None,
                        help="a cache whose weights/ and data/ are linked into the fresh caches (no re-training)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to wait for stragglers before killing")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    parser.add_argument("--signals", default="KILL,INT",
                        help="signals the killed runs get, in turn (default KILL,INT: SIGKILL, SIGINT, SIGKILL...)")
    parser.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for every pytest run (repeatable: --pytest-arg=-p --pytest-arg=NAME)")
    parser.add_argument("--reference-from", type=Path, default=None, metavar="SOAK_JSON",
                        help="use the reference run of a previous soak (its JSON) instead of running one")
    parser.add_argument("--json", type=Path, default=None, help="where the numbers go (default CACHE-soak.json)")
    parser.add_argument("--markdown", type=Path, default=None, metavar="PATH",
                        help="also write the results page (docs/results/soak.md)")
    parser.add_argument("--render", type=Path, default=None, metavar="SOAK_JSON",
                        help="run nothing: write --markdown from a soak's JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = "python -m suites.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.render is not None:
        if args.markdown is None:
            parser.error("--render needs --markdown PATH")
        args.markdown.write_text(markdown(json.loads(args.render.read_text()), command))
        print(args.markdown)
        return 0
    if args.cache is None:
        parser.error("--cache is required (unless --render)")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        signals = tuple(signal.Signals[f"SIG{name.strip().upper().removeprefix('SIG')}"]
                        for name in args.signals.split(","))
    except KeyError as exc:
        parser.error(f"--signals: no signal {exc}")
    cache = args.cache.resolve()
    reference = (args.reference_cache or cache.with_name(cache.name + "-reference")).resolve()
    record = {"argv": command, **soak(cache, args.runs, args.seed, reference, args.workers, args.select,
                  tuple(args.kill_window) if args.kill_window else None, args.on_conversion,
                  args.inputs_from.resolve() if args.inputs_from else None, args.grace, args.timeout,
                  signals=signals, extra=tuple(args.pytest_arg),
                  reference_from=args.reference_from.resolve() if args.reference_from else None)}
    out = args.json or cache.with_name(cache.name + "-soak.json")
    record = portable(record)
    out.write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(markdown(record, command))
    print(table(record))
    print(out)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
