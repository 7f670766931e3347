"""Isolation of crash-prone work: worker crashes, hangs and errors become diagnosable failures, never a dead session.

No TensorFlow needed: the workers here are tiny scripts served by the same loop as the TF worker.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from export_harness.converters.tf.isolation import (
    Worker,
    WorkerCrash,
    WorkerError,
    WorkerPool,
    WorkerTimeout,
    describe_returncode,
    python_has_modules,
)

ROOT = Path(__file__).resolve().parent.parent

TOY_WORKER = """
import os, sys, time
from export_harness.converters.tf.worker_loop import serve

def echo(value):
    print("echo says hi on stdout")           # library noise must not corrupt the protocol
    return {"value": value, "pid": os.getpid()}

def boom():
    print("about to abort: last words", file=sys.stderr, flush=True)
    os.abort()

def segv():
    import ctypes
    print("about to segfault", file=sys.stderr, flush=True)
    ctypes.string_at(0)

def hang():
    time.sleep(3600)

def fail():
    raise ValueError("converter said no")

serve({"echo": echo, "boom": boom, "segv": segv, "hang": hang, "fail": fail, "exit3": lambda: sys.exit(3)})
"""


@pytest.fixture
def toy_worker(tmp_path: Path) -> Path:
    script = tmp_path / "toy_worker.py"
    script.write_text(TOY_WORKER)
    return script


def test_warm_worker_is_reused_and_ignores_stdout_noise(toy_worker: Path) -> None:
    worker = Worker(sys.executable, str(toy_worker), name="toy")
    try:
        first = worker.call("echo", value=[1, 2], timeout=60)
        second = worker.call("echo", value="x", timeout=60)
        assert first["value"] == [1, 2] and second["value"] == "x"
        assert first["pid"] == second["pid"] and worker.starts == 1
    finally:
        worker.close()


@pytest.mark.parametrize(("op", "signal_name", "last_words"), [("boom", "SIGABRT", "about to abort: last words"),
                                                               ("segv", "SIGSEGV", "about to segfault")])
def test_crash_reports_signal_and_stderr_then_restarts(toy_worker: Path, op: str, signal_name: str,
                                                       last_words: str) -> None:
    worker = Worker(sys.executable, str(toy_worker), name="toy")
    try:
        before = worker.call("echo", value=1, timeout=60)["pid"]
        with pytest.raises(WorkerCrash) as info:
            worker.call(op, timeout=60)
        message = str(info.value)
        assert f"killed by signal {signal_name}" in message and last_words in message
        assert f"during {op!r}" in message
        assert info.value.returncode < 0
        after = worker.call("echo", value=2, timeout=60)["pid"]  # a fresh worker serves the next request
        assert after != before and worker.starts == 2
    finally:
        worker.close()


def test_exit_code_is_reported(toy_worker: Path) -> None:
    worker = Worker(sys.executable, str(toy_worker), name="toy")
    try:
        with pytest.raises(WorkerCrash, match="exit code 3"):
            worker.call("exit3", timeout=60)
    finally:
        worker.close()


def test_hang_times_out_and_kills_the_worker(toy_worker: Path) -> None:
    worker = Worker(sys.executable, str(toy_worker), name="toy")
    try:
        pid = worker.call("echo", value=0, timeout=60)["pid"]
        start = time.monotonic()
        with pytest.raises(WorkerTimeout, match=r"timeout after 2 s .*worker killed"):
            worker.call("hang", timeout=2)
        assert time.monotonic() - start < 30
        with pytest.raises(ProcessLookupError):
            import os

            os.kill(pid, 0)
    finally:
        worker.close()


def test_python_exception_is_an_error_response_and_worker_survives(toy_worker: Path) -> None:
    worker = Worker(sys.executable, str(toy_worker), name="toy")
    try:
        with pytest.raises(WorkerError, match="ValueError: converter said no"):
            worker.call("fail", timeout=60)
        assert worker.call("echo", value=1, timeout=60)["value"] == 1 and worker.starts == 1
    finally:
        worker.close()


def test_pool_fresh_worker_is_closed_after_the_call(toy_worker: Path) -> None:
    pool = WorkerPool()
    try:
        a = pool.call(sys.executable, str(toy_worker), "echo", value=1, fresh=True)["pid"]
        b = pool.call(sys.executable, str(toy_worker), "echo", value=1, fresh=True)["pid"]
        c = pool.call(sys.executable, str(toy_worker), "echo", value=1)["pid"]
        d = pool.call(sys.executable, str(toy_worker), "echo", value=1)["pid"]
        assert a != b and c == d
    finally:
        pool.close()


def test_describe_returncode_and_module_probe() -> None:
    assert describe_returncode(-6) == "killed by signal SIGABRT (-6)"
    assert describe_returncode(-11) == "killed by signal SIGSEGV (-11)"
    assert describe_returncode(2) == "exit code 2"
    assert python_has_modules(sys.executable, ["json"]) is None
    assert python_has_modules(sys.executable, ["no_such_module_xyz"]) == "missing no_such_module_xyz"
    assert "does not exist" in (python_has_modules("/nonexistent/python", ["json"]) or "")


ABORTING_CONFTEST = '''
import sys
from pathlib import Path

from export_harness.converters.tf.isolation import pool
from export_harness.converters.target import Target

WORKER = Path(__file__).with_name("abort_worker.py")
WORKER.write_text("import os\\nfrom export_harness.converters.tf.worker_loop import serve\\nserve({'convert': "
                  "lambda: os.abort()})\\n")


class AbortingBackend(Target):
    """A fake converter backend whose conversion aborts its (worker) process, like TF's int8 calibrator can."""

    format = "fake"
    precision = "fp32"
    backend = "aborts"

    def convert(self, spec, model, workdir, deps):
        pool().call(sys.executable, str(WORKER), "convert", name="aborting-backend", fresh=True, timeout=120)
        return {"main": "never"}

    def load(self, artifact, spec):
        raise AssertionError("unreachable")


def pytest_harness_targets(config):
    return [AbortingBackend()]
'''


def test_a_backend_that_aborts_fails_one_cell_and_the_session_completes(pytester: pytest.Pytester) -> None:
    user = pytester.path / "mine"
    user.mkdir()
    (user / "conftest.py").write_text(textwrap.dedent(ABORTING_CONFTEST))
    result = pytester.runpytest_subprocess(
        f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider",
        "--harness-cache", str(pytester.path / "cache"), str(ROOT / "suites" / "test_matrix.py"), str(user),
        "-k", "(tiny_ladeda and not patch and (aborts or trace)) or (tiny_ladeda_patch and trace)", timeout=600,
    )
    result.assert_outcomes(failed=1, passed=2)  # tiny_ladeda_patch's cell runs after the abort
    out = result.stdout.str()
    failed = [ln for ln in out.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and "tiny_ladeda-fake:fp32[aborts]" in failed[0]
    assert "[export] tiny_ladeda-fake:fp32[aborts]" in out and "killed by signal SIGABRT (-6)" in out
    table = out[out.index("export conformance matrix"):]
    assert "tiny_ladeda_patch-torchscript:trace" in table and "cells: 3 (1 failed, 2 passed)" in table
