"""Worker side of :mod:`export_harness.converters.tf.isolation`: read JSON-line requests on stdin, answer on a private
pipe.

Pure stdlib so that it runs in any interpreter (the default stack, or the legacy onnx-tf venv with its own
numpy/onnx/TensorFlow). ``serve(handlers)`` maps ``op`` names to functions taking keyword arguments and
returning a JSON-serialisable dict; a Python exception becomes an error response (the worker lives on), while
a crash kills the process and the parent reports the signal.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

Handler = Callable[..., dict[str, Any]]


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of distributions (``not-installed`` when absent); stdlib only, usable in any worker."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not-installed"
    return out


def _error_text(exc: BaseException, lines: int = 4) -> str:
    """``Type: first lines`` of an exception and of its root cause (like ``exporters.torchscript.error_head``)."""

    def head(e: BaseException) -> str:
        text = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if len(text) > lines:  # TF's "in user code:" tracebacks put the actual message last
            text = [*text[:1], "...", *text[-(lines - 1):]]
        return f"{type(e).__name__}: " + " | ".join(text)

    parts = [head(exc)]
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    if root is not exc:
        parts.append("caused by " + head(root))
    return " | ".join(parts)


def serve(handlers: dict[str, Handler]) -> None:
    """Serve requests until stdin closes. Responses go to fd ``HARNESS_WORKER_FD``; stdout is the log."""
    fd = int(os.environ["HARNESS_WORKER_FD"])
    out = os.fdopen(fd, "w", buffering=1)
    handlers = {"ping": lambda: {"pid": os.getpid(), "python": sys.executable}, **handlers}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op", "")
        print(f"--- request {op}", file=sys.stderr, flush=True)
        try:
            if op not in handlers:
                raise KeyError(f"unknown op {op!r}; known: {', '.join(sorted(handlers))}")
            response = {"ok": True, "result": handlers[op](**request.get("args", {}))}
        except Exception as exc:  # reported to the parent; the worker stays alive
            traceback.print_exc(file=sys.stderr)
            response = {"ok": False, "error": _error_text(exc), "type": type(exc).__name__}
        sys.stdout.flush()
        sys.stderr.flush()
        out.write(json.dumps(response, default=str) + "\n")
        out.flush()
