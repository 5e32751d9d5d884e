"""Progress on stderr: a bar redrawn in place on a terminal, one line per step otherwise.

Steps carry an expected duration, so the ETA is meaningful from the start and corrects
itself as the real durations come in. A background thread redraws the bar while a long
step (a 16 s throttled page load) is running. `enabled=False` silences it (`--quiet`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def _fmt(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:4.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}m{secs:02d}s"


class Progress:
    def __init__(
        self,
        total_expected: float,
        *,
        label: str = "bench",
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 28,
    ) -> None:
        self.total_expected = max(total_expected, 1e-9)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.done_expected = 0.0
        self.done_actual = 0.0
        self.current: str = ""
        self.current_expected = 0.0
        self.current_started = self.started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps_done = 0

    def fraction(self) -> float:
        running = 0.0
        if self.current:
            elapsed = time.monotonic() - self.current_started
            running = min(elapsed, self.current_expected * 0.95)
        return min(1.0, (self.done_expected + running) / self.total_expected)

    def eta(self) -> float:
        remaining = max(0.0, self.total_expected - self.done_expected)
        if self.current:
            remaining -= min(time.monotonic() - self.current_started, self.current_expected)
        # Correct the estimates by how long steps really took, once enough of them are done.
        speed = 1.0
        if self.done_expected > 0.1 * self.total_expected:
            speed = min(3.0, max(0.5, self.done_actual / self.done_expected))
        return max(0.0, remaining * speed)

    def render(self) -> str:
        frac = self.fraction()
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self.started
        return (
            f"{self.label} [{bar}] {frac * 100:3.0f}% {_fmt(elapsed)} elapsed, "
            f"ETA {_fmt(self.eta())}  {self.current}"
        )

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                line = self.render()
                self.stream.write("\r\x1b[K" + line[:200] + ("\n" if final else ""))
            self.stream.flush()

    def _ticker(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            self._thread = threading.Thread(target=self._ticker, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.done_expected = self.total_expected  # finished: the bar ends full
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        self.current = ""
        self._draw(final=True)

    @contextmanager
    def step(self, name: str, expected: float) -> Iterator[None]:
        """One unit of work expected to take `expected` seconds."""
        self.current, self.current_expected = name, expected
        self.current_started = time.monotonic()
        if self.enabled and not self.tty:
            elapsed = time.monotonic() - self.started
            self.stream.write(
                f"{self.label}: [{self.fraction() * 100:3.0f}%] {_fmt(elapsed)} elapsed, "
                f"ETA {_fmt(self.eta())}: {name}\n"
            )
            self.stream.flush()
        self._draw()
        try:
            yield
        finally:
            self.done_actual += time.monotonic() - self.current_started
            self.done_expected += expected
            self.steps_done += 1
            self.current = ""
            self._draw()

    def note(self, message: str) -> None:
        """A message on its own line, keeping the bar below it."""
        if not self.enabled:
            return
        with self._lock:
            prefix = "\r\x1b[K" if self.tty else ""
            self.stream.write(f"{prefix}{self.label}: {message}\n")
            self.stream.flush()
        self._draw()
