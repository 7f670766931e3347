"""Run crash-prone work (TensorFlow conversions, TFLite/SavedModel execution) in worker subprocesses.

A worker is a Python process speaking JSON lines: requests on its stdin, responses on a private pipe (so the
library noise TensorFlow prints on stdout/stderr never corrupts the protocol); its stdout and stderr go to a log
file. Every request has a timeout. A worker that dies (segfault, abort, ``sys.exit``) or hangs becomes a
:class:`WorkerCrash` / :class:`WorkerTimeout` carrying the signal or exit code and the last lines of its stderr,
and the next request starts a fresh worker: the calling process (pytest) always survives.

Cost: a :class:`WorkerPool` keeps one warm worker per (python, module, environment) and reuses it across cells,
so TensorFlow is imported once per backend, not once per cell. One-shot conversions use ``fresh=True``.

Pure stdlib; importable without pytest or TensorFlow. The worker side is
:mod:`export_harness.converters.tf.worker_loop`.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from export_harness.converters.target import StageError

CONVERTERS_DIR = Path(__file__).resolve().parents[1]
"""The folder of ``export_harness.converters``: the checkout's ``converters/`` (editable install) or site-packages'."""


def import_root() -> Path:
    """A private directory from which any Python imports ``export_harness.converters`` (a symlink to
    :data:`CONVERTERS_DIR`): a worker's ``PYTHONPATH`` and working directory. The legacy onnx-tf venv has the
    harness's code but not the harness installed, and must not see this environment's site-packages (numpy 2 vs
    1.26); a worker also writes converters' stray files into its working directory. Removed at exit."""
    global _IMPORT_ROOT
    if _IMPORT_ROOT is None or not (_IMPORT_ROOT / "export_harness" / "converters").exists():
        root = Path(tempfile.mkdtemp(prefix=f"harness-import-root-{os.getpid()}-"))
        (root / "export_harness").mkdir()
        (root / "export_harness" / "converters").symlink_to(CONVERTERS_DIR, target_is_directory=True)
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _IMPORT_ROOT = root
    return _IMPORT_ROOT


_IMPORT_ROOT: Path | None = None
STDERR_TAIL_LINES = 12
DEFAULT_TIMEOUT = 600.0


class WorkerError(StageError):
    """The worker ran the request and raised a Python exception (reported verbatim; deterministic)."""

    def __init__(self, message: str, error_type: str = "", stage: str = "export") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.stage = stage


class WorkerCrash(StageError):
    """The worker process died while handling a request (signal or exit code in ``returncode``)."""

    def __init__(self, message: str, returncode: int | None, stage: str = "export") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stage = stage
        self.transient = returncode is not None and -returncode in OUTSIDE_SIGNALS
        """Killed from outside (the OOM killer, a user, CI's timeout): says nothing about the input, never cached.
        A crash of the converter itself (SIGSEGV, SIGABRT, an exit code) recurs and is cached."""


class WorkerTimeout(WorkerCrash):
    """The request did not finish within its timeout; the worker was killed. Not deterministic: never cached."""

    def __init__(self, message: str, returncode: int | None, stage: str = "export") -> None:
        super().__init__(message, returncode, stage)
        self.transient = True


OUTSIDE_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}

DIE_WITH_PARENT = [setpriv, "--pdeathsig", "KILL", "--"] if (setpriv := shutil.which("setpriv")) else []
"""Prefix of a worker's command line: util-linux's setpriv sets PR_SET_PDEATHSIG, so the worker gets SIGKILL when
its parent dies and a killed pytest leaves no conversion running on (a preexec_fn would do the same, but is not
safe in a parent with native threads). Where setpriv is missing, a worker exits at its next read of a closed pipe."""


def describe_returncode(returncode: int | None) -> str:
    """``-6`` -> ``killed by signal SIGABRT (-6)``; ``3`` -> ``exit code 3``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by signal {name} ({returncode})"
    return f"exit code {returncode}"


class Worker:
    """One worker subprocess: ``python -m MODULE`` (or ``python SCRIPT``) serving JSON-line requests."""

    def __init__(self, python: str, module: str, env: Mapping[str, str] | None = None, name: str = "worker",
                 log_dir: str | Path | None = None) -> None:
        self.python = python
        self.module = module
        self.name = name
        self._env = dict(env or {})
        self._log_dir = Path(log_dir or tempfile.gettempdir())
        self._proc: subprocess.Popen[bytes] | None = None
        self._resp_fd: int | None = None
        self._buffer = b""
        self._log_path: Path | None = None
        self._lock = threading.Lock()
        self.requests = 0
        self.starts = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> int | None:
        """The worker process's pid while it runs."""
        return self._proc.pid if self.alive else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        fd, log = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=self._log_dir)
        os.close(fd)
        self._log_path = Path(log)
        env = {**os.environ, **self._env, "HARNESS_WORKER_FD": str(write_fd), "PYTHONUNBUFFERED": "1"}
        root = import_root()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
        argv = [self.python, self.module] if self.module.endswith(".py") else [self.python, "-m", self.module]
        argv = [*DIE_WITH_PARENT, *argv]
        with open(self._log_path, "ab") as logf:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT,
                                          pass_fds=(write_fd,), env=env, cwd=str(root), start_new_session=True)
        os.close(write_fd)
        self._resp_fd, self._buffer = read_fd, b""
        self.starts += 1

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit, then kill its process group if it does not."""
        proc, self._proc = self._proc, None
        if self._resp_fd is not None:
            os.close(self._resp_fd)
            self._resp_fd = None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin:
                proc.stdin.close()
                proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            _kill_group(proc)
        if self._log_path:
            self._log_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ requests

    def call(self, op: str, timeout: float = DEFAULT_TIMEOUT, stage: str = "export", **args: Any) -> dict[str, Any]:
        """Run ``op`` in the worker; returns its result dict or raises WorkerError/WorkerCrash/WorkerTimeout."""
        with self._lock:
            if not self.alive:
                self.close()
                self.start()
            assert self._proc is not None and self._proc.stdin is not None and self._log_path is not None
            offset = self._log_path.stat().st_size
            self.requests += 1
            try:
                self._proc.stdin.write((json.dumps({"op": op, "args": args}) + "\n").encode())
                self._proc.stdin.flush()
            except OSError:
                pass  # it died already; read_response reports how
            line = self._read_line(timeout)
            if line is None:
                return self._raise_dead(op, timeout, offset, stage)
            response = json.loads(line)
            if not response.get("ok"):
                raise WorkerError(response.get("error", "unknown worker error"), response.get("type", ""), stage)
            return response.get("result", {})

    def _read_line(self, timeout: float) -> str | None:
        """The next response line, or None if the worker died or the timeout passed."""
        assert self._resp_fd is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._resp_fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self._resp_fd, 1 << 16)
            if not chunk:  # EOF: the worker exited
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _raise_dead(self, op: str, timeout: float, offset: int, stage: str) -> dict[str, Any]:
        assert self._proc is not None
        proc = self._proc
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        timed_out = proc.poll() is None
        if timed_out:
            _kill_group(proc)
        tail = self.stderr_tail(offset)
        self.close()
        where = f"{self.name} worker ({Path(self.python).parent.parent.name}/python) during {op!r}"
        if timed_out:
            raise WorkerTimeout(f"timeout after {timeout:.0f} s in {where}; worker killed. Last stderr: {tail}",
                                None, stage)
        code = proc.returncode
        raise WorkerCrash(f"{where}: {describe_returncode(code)}. Last stderr: {tail}", code, stage)

    def stderr_tail(self, offset: int = 0, lines: int = STDERR_TAIL_LINES) -> str:
        """The last ``lines`` non-empty lines the worker printed since ``offset`` (joined with ' | ')."""
        if self._log_path is None or not self._log_path.exists():
            return "<no output>"
        with open(self._log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
        kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(kept[-lines:]) or "<no output>"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class WorkerPool:
    """Warm workers keyed by (python, module, env): one per backend, reused across cells, closed at exit."""

    def __init__(self) -> None:
        self._workers: dict[tuple[str, str, tuple[tuple[str, str], ...]], Worker] = {}
        self._lock = threading.Lock()

    def get(self, python: str, module: str, env: Mapping[str, str] | None = None, name: str = "worker") -> Worker:
        key = (python, module, tuple(sorted((env or {}).items())))
        with self._lock:
            worker = self._workers.get(key)
            if worker is None:
                worker = self._workers[key] = Worker(python, module, env, name=name)
            return worker

    def call(self, python: str, module: str, op: str, *, env: Mapping[str, str] | None = None, name: str = "worker",
             timeout: float = DEFAULT_TIMEOUT, stage: str = "export", fresh: bool = False,
             **args: Any) -> dict[str, Any]:
        """Run ``op`` on the warm worker, or on a one-shot worker when ``fresh`` (closed afterwards)."""
        if fresh:
            worker = Worker(python, module, env, name=name)
            try:
                return worker.call(op, timeout=timeout, stage=stage, **args)
            finally:
                worker.close()
        return self.get(python, module, env, name).call(op, timeout=timeout, stage=stage, **args)

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()

    def stats(self) -> dict[str, dict[str, int]]:
        return {w.name: {"starts": w.starts, "requests": w.requests} for w in self._workers.values()}


_POOL: WorkerPool | None = None


def pool() -> WorkerPool:
    """The process-wide worker pool (closed at interpreter exit)."""
    global _POOL
    if _POOL is None:
        _POOL = WorkerPool()
        atexit.register(_POOL.close)
    return _POOL


def python_has_modules(python: str, modules: Sequence[str], timeout: float = 60.0) -> str | None:
    """None if ``python`` can find every module (without importing it), else a one-line reason."""
    if python == sys.executable:
        import importlib.util

        missing = [m for m in modules if importlib.util.find_spec(m) is None]
    else:
        if not Path(python).exists():
            return f"{python} does not exist"
        code = ("import importlib.util, sys; "
                f"print(','.join(m for m in {list(modules)!r} if importlib.util.find_spec(m) is None))")
        try:
            out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{python} cannot run: {exc}"
        missing = [m for m in out.stdout.strip().split(",") if m]
    return f"missing {', '.join(missing)}" if missing else None
