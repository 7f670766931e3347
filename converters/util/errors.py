"""Short, recognisable text for an exception and its root cause (failure messages, cached failures, worker
replies)."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _root_cause(exc: BaseException) -> BaseException:
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    return root


def error_head(exc: BaseException, lines: int = 3) -> str:
    """First lines of an error and of its root cause: enough to recognise it, short enough for a report."""
    parts = [_first_lines(exc, lines)]
    root = _root_cause(exc)
    if root is not exc:
        parts.append("caused by " + _first_lines(root, lines))
    return " | ".join(parts)


def _first_lines(exc: BaseException, lines: int) -> str:
    text = [ln.rstrip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: " + " | ".join(text[:lines])


def error_head_and_tail(exc: BaseException, lines: int = 4) -> str:
    """Like :func:`error_head`, but a long message keeps its first line and its last ``lines - 1``: TensorFlow's
    "in user code:" tracebacks put the actual message last."""

    def head(e: BaseException) -> str:
        text = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if len(text) > lines:
            text = [*text[:1], "...", *text[-(lines - 1):]]
        return f"{type(e).__name__}: " + " | ".join(text)

    root = _root_cause(exc)
    return " | ".join([head(exc), *(["caused by " + head(root)] if root is not exc else [])])
