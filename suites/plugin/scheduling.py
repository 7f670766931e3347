"""Parallel runs: each xdist worker's share of the cores, one model's cells on one worker (longest model first, by
the stored durations), and releasing a model's memory after its last cell."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from export_harness.plugin.cells import item_model
from export_harness.plugin.core import HARNESS_KEY, get_harness


def share_cores_among_workers(config: pytest.Config) -> int | None:
    """Before pytest-xdist starts its workers: give each worker's OpenMP pools (torch, in the worker and in the TF
    worker subprocesses it starts) its share of the cores, through ``OMP_NUM_THREADS`` which they inherit.

    Otherwise each worker runs one OpenMP thread per core: on a box whose cores the other worker keeps busy, every
    small op of a recurrent model waits at a barrier for a descheduled thread (measured: gcode_fingerprint's
    TorchScript eval takes 3.2 s alone, 5.6 s beside two busy loops with one thread, over 58 s with two; four models'
    matrix and accuracy cells on ``-n 2``: 234-283 s with the default, 176-183 s with one thread). An
    ``OMP_NUM_THREADS`` the user set wins. Returns the threads set, or None (not a parallel run, or user-set)."""
    workers = getattr(config.option, "numprocesses", None)
    if not isinstance(workers, int) or workers < 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def load_durations(path: Path) -> dict[str, float]:
    """pytest-split's stored durations (``.test_durations``), keyed by node id without xdist's ``@group`` suffix."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise pytest.UsageError(f"{path}: not a pytest-split durations file ({exc})") from None
    return {nodeid.split("@")[0]: float(seconds) for nodeid, seconds in data.items()}


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, before it starts the workers
        share_cores_among_workers(config)
    else:
        die_with_the_controller()


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Ctrl-C (SIGINT) of the controller kills its xdist workers at once; their conversion workers die with them
    (``die_with_the_controller``) and the next run reaps their work dirs. pytest-xdist's own teardown let each
    worker run its current test on for 5 s and killed it after 10 s (the soak measured 4.4-12.8 s; with this hook
    everything was gone within 1.5 s)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for pid in xdist_worker_pids(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def xdist_worker_pids(parent: int) -> list[int]:
    """The pytest-xdist workers this process started: its children running execnet's bootstrap (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"exec(eval(sys.stdin.readline()))" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2


def die_with_the_controller() -> None:
    """An xdist worker gets SIGKILL when the pytest process that started it dies (Linux ``PR_SET_PDEATHSIG``), and
    its conversion workers, tied to it the same way, go with it: a killed run leaves no conversion running (they
    once ran on for seconds, minutes for a long onnx2tf conversion, and published their artifacts)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: workers end when their channel closes, as before
    if os.getppid() == 1:  # the controller died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` the items are ordered by model group, longest first by the stored durations (the
    scheduler hands groups out in collection order: longest-processing-time-first)."""
    if not getattr(config.option, "loadgroup", False):  # set in pytest-xdist workers of ``--dist loadgroup``
        return
    durations = load_durations(Path(config.getoption("durations_path", None) or config.rootpath / ".test_durations"))
    if not durations:
        return
    mean = sum(durations.values()) / len(durations)
    group = {item.nodeid: item_model(item) or item.nodeid for item in items}
    cost: dict[str, float] = {}
    for item in items:
        cost[group[item.nodeid]] = cost.get(group[item.nodeid], 0.0) + durations.get(item.nodeid, mean)
    items.sort(key=lambda item: (-cost[group[item.nodeid]], group[item.nodeid]))  # stable within a group


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a model's last cell in this process (the scheduler keeps a model's cells together), release it."""
    model = item_model(item)
    if model is not None and nextitem is not None and item_model(nextitem) != model:
        harness = item.config.stash.get(HARNESS_KEY, None)
        if harness is not None:
            harness.release(model)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with one group per model: every matrix and accuracy cell of a model runs on one worker,
    so that worker converts the model's artifacts and no other worker waits on their cache locks. (The group comes
    from the cell id, ``test_x[MODEL-TARGET]``: pytest-xdist 3.8's ``xdist_group`` marker renames node ids through an
    attribute pytest 9 no longer reads, so marked tests were not grouped.)"""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    models = sorted(get_harness(config).models.names(), key=len, reverse=True)

    class ModelGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            params = nodeid.partition("[")[2]
            return next((f"model:{m}" for m in models if params.startswith(f"{m}-")), nodeid)

    return ModelGroupScheduling(config, log)


