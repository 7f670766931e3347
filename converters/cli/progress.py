"""Progress on stderr: on a terminal one line redrawn in place (``[3/8] [#####.....] tflite:fp16[onnx2tf] 12.4 s``,
the timer ticking from a daemon thread while a conversion runs), elsewhere (CI logs, pipes) one plain line per
finished step; nothing with ``--quiet``. No dependencies beyond the standard library."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

BAR_WIDTH = 20


@dataclass
class Step:
    """One running step; set ``status`` (PASSED, XFAIL, ...) before the block ends."""

    index: int
    total: int
    label: str
    started: float
    status: str = ""

    def line(self, now: float, bar: bool = False) -> str:
        """``[3/8] label STATUS 12.4 s``; with ``bar`` a bar of the steps finished before this one after the count."""
        status = f" {self.status}" if self.status else ""
        filled = BAR_WIDTH * (self.index - 1 + bool(self.status)) // max(self.total, 1)
        drawn = f" [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]" if bar else ""
        return f"[{self.index}/{self.total}]{drawn} {self.label}{status} {now - self.started:.1f} s"


class Progress:
    """``with progress.step(label) as step: ...; step.status = "PASSED"`` for each of ``total`` steps."""

    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = 0.1) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.done = 0
        self._lock = threading.Lock()
        self._width = 0

    def _draw(self, text: str, final: bool) -> None:
        with self._lock:
            if self.tty:
                pad = " " * max(0, self._width - len(text))  # clear what a longer previous line left
                self.stream.write(f"\r{text}{pad}" + ("\n" if final else ""))
                self._width = 0 if final else len(text)
            elif final:
                self.stream.write(text + "\n")
            self.stream.flush()

    @contextmanager
    def step(self, label: str) -> Iterator[Step]:
        """A step of the run: redrawn every ``interval`` seconds on a terminal, one line when it ends."""
        self.done += 1
        step = Step(self.done, self.total, label, time.perf_counter())
        if not self.enabled:
            yield step
            return
        stop = threading.Event()
        ticker = None
        if self.tty:
            self._draw(step.line(step.started, bar=True), final=False)

            def tick() -> None:
                while not stop.wait(self.interval):
                    self._draw(step.line(time.perf_counter(), bar=True), final=False)

            ticker = threading.Thread(target=tick, name="export-harness-progress", daemon=True)
            ticker.start()
        try:
            yield step
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
            self._draw(step.line(time.perf_counter(), bar=self.tty), final=True)
