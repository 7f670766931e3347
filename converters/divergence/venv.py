"""Fresh virtual environments holding only a reproducer's ``requirements.txt``: where a reproducer proves it needs
nothing of the harness, nor anything else the harness's environment happens to hold.

A venv is made from the backend interpreter's base Python (``python -m venv`` run by a venv's interpreter makes one on
the base, without the venv's site-packages) and filled with ``pip install -r requirements.txt``, the versions of every
package pip pulls in constrained to those of the backend's own environment (``pip freeze``), so the fresh venv holds
the measured stack and only the part of it the converter needs. Package registries are the only network used. One
venv per set of requirements, kept under ``<root>/<sha256 of the set>`` and built in a temporary sibling directory
renamed into place when complete, so a killed build is never used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_TIMEOUT = 1800.0


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


def fresh_venv(requirements: list[str], root: Path, base_python: str) -> Path:
    """The interpreter of a venv under ``root`` holding ``requirements`` (pinned ``name==version`` lines) and what
    they need, at ``base_python``'s environment's versions; made on first use, reused afterwards."""
    pinned = sorted(requirements)
    if not pinned:
        raise VenvError("no requirements to install")
    key = hashlib.sha256("\n".join(pinned).encode()).hexdigest()[:16]
    venv = Path(root) / key
    if _python(venv).is_file() and (venv / "requirements.txt").is_file():
        return _python(venv)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}-{os.getpid()}-", dir=root))
    try:
        (work / "requirements.in").write_text("\n".join(pinned) + "\n")
        (work / "constraints.txt").write_text("\n".join(constraints(base_python)) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_REQUIRE_VIRTUALENV"))}
        steps = ([base_python, "-m", "venv", str(work / "venv")],
                 [str(_python(work / "venv")), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "-r", str(work / "requirements.in"), "-c", str(work / "constraints.txt")])
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
                raise VenvError(f"{' '.join(step[1:4])}... failed (exit {done.returncode}): {' / '.join(tail)}")
        # moved into place complete (only `python -m` is used: the scripts' shebangs name the build directory)
        shutil.rmtree(venv, ignore_errors=True)
        os.replace(work / "venv", venv)
        (venv / "requirements.txt").write_text("\n".join(pinned) + "\n")
    except subprocess.TimeoutExpired as exc:
        raise VenvError(f"building the venv timed out after {exc.timeout:.0f} s") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _python(venv)
