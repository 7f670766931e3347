"""Where the CLI writes: the output directory, atomic copies of artifacts out of the cache, file permissions."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from export_harness.converters.cli import UsageError
from export_harness.converters.cli.session import first_line


def output_dir(value: str, option: str = "--output-dir") -> Path:
    """The output directory, created; a UsageError when it cannot be written."""
    path = Path(value)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".export-harness-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {value}: not a writable directory ({first_line(exc)})") from None
    return path


def copy_atomic(src: Path, dst: Path) -> Path:
    """Copy a file or directory to ``dst``: written under a temporary name beside it, then renamed into place (an
    existing ``dst`` is replaced; a reader never sees a half-written artifact)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    for leftover in (tmp, old):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        elif leftover.exists() or leftover.is_symlink():
            leftover.unlink()
    try:
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copy2(src, tmp)
        if dst.is_dir() and not dst.is_symlink():
            os.replace(dst, old)
        os.replace(tmp, dst)
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover.exists():
                leftover.unlink()
    return dst


def publish(path: Path) -> Path:
    """Make a file the CLI wrote readable as the user's other files (atomic writes create them 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path
