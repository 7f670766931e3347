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

from export_harness.converters.util.errors import error_head_and_tail

Handler = Callable[..., dict[str, Any]]


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
            response = {"ok": False, "error": error_head_and_tail(exc), "type": type(exc).__name__}
        sys.stdout.flush()
        sys.stderr.flush()
        out.write(json.dumps(response, default=str) + "\n")
        out.flush()
