"""Fresh virtual environments holding only a reproducer's ``requirements.txt``: where a reproducer proves it needs
nothing of the harness, nor anything else the harness's environment happens to hold.

A venv is made from the backend interpreter's base Python (``python -m venv`` run by a venv's interpreter makes one on
the base, without the venv's site-packages) and filled with ``pip install -r requirements.txt``, the versions of every
package pip pulls in constrained to those of the backend's own environment (``pip freeze``), so the fresh venv holds
the measured stack and only the part of it the converter needs. Package registries are the only network used. One
venv per set of requirements, kept under ``<root>/<sha256 of the set>``, built in place under a lock and marked
complete last, so a killed build is never used (it is removed and made again).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

INSTALL_TIMEOUT = 1800.0
COMPLETE = ".complete"
"""Written last into a venv: its presence says the build finished."""


class VenvError(Exception):
    """The venv could not be made or filled (one line: pip's last lines)."""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def constraints(python: str) -> list[str]:
    """``name==version`` of every distribution installed for ``python`` (editable and direct-URL installs left out)."""
    done = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise VenvError(f"pip freeze of {python} failed: {done.stderr.strip().splitlines()[-1:]}")
    return sorted(line for line in done.stdout.splitlines() if "==" in line and " @ " not in line)


def normalise(name: str) -> str:
    """A distribution name as pip compares them (``onnx_graphsurgeon`` == ``onnx-graphsurgeon``)."""
    return name.lower().replace("_", "-").replace(".", "-")


def installed(python: str) -> dict[str, str]:
    """Normalised name -> version of every distribution :func:`constraints` lists for ``python``."""
    return {normalise(line.split("==")[0]): line.split("==", 1)[1] for line in constraints(python)}


def fresh_venv(requirements: list[str], root: Path, base_python: str) -> Path:
    """The interpreter of a venv under ``root`` holding ``requirements`` (pinned ``name==version`` lines) and what
    they need, at ``base_python``'s environment's versions; made on first use, reused afterwards."""
    pinned = sorted(requirements)
    if not pinned:
        raise VenvError("no requirements to install")
    key = hashlib.sha256("\n".join(pinned).encode()).hexdigest()[:16]
    venv = Path(root) / key
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:  # one builder per venv; the others wait and reuse it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / COMPLETE).is_file() and _python(venv).is_file():
            os.utime(venv / COMPLETE)  # last use: what `cache prune --unused-days` goes by
            return _python(venv)
        # built where it stays (a converter may run the venv's console scripts, whose shebangs hold its path);
        # the marker written last says it is complete, a killed build is removed and made again
        shutil.rmtree(venv, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_REQUIRE_VIRTUALENV"))}
        try:
            venv.mkdir()
            (venv / "requirements.in").write_text("\n".join(pinned) + "\n")
            (venv / "constraints.txt").write_text("\n".join(constraints(base_python)) + "\n")
            steps = ([base_python, "-m", "venv", str(venv)],
                     [str(_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                      "-r", str(venv / "requirements.in"), "-c", str(venv / "constraints.txt")])
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env)
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
                    raise VenvError(f"{' '.join(step[1:4])}... failed (exit {done.returncode}): {' / '.join(tail)}")
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(venv, ignore_errors=True)
            raise VenvError(f"building the venv timed out after {exc.timeout:.0f} s") from None
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / COMPLETE).write_text("\n".join(pinned) + "\n")
    return _python(venv)
