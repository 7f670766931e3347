"""Atomic file writes for every file the harness publishes (cache entries, trained weights, baselines, reports):
a temporary file in the destination's directory, flushed to disk, then one rename. A reader never sees a half-written
file, a killed writer leaves the old file (or none), and a failed write leaves no temporary behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path (same directory and suffix) to write; renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, **dump: Any) -> Path:
    """``data`` as JSON (``indent=1`` unless ``dump`` says otherwise), written atomically."""
    return write_text_atomic(path, json.dumps(data, **{"indent": 1, "default": str, **dump}) + "\n")
