"""The bench's progress bar: one line on stderr (a line per phase when it is not a terminal)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator


class Progress:
    """A one-line text bar on stderr: the phase, its elapsed/expected time, the whole run's."""

    def __init__(self, expected_total: float) -> None:
        self.expected_total = max(expected_total, 1.0)
        self.started = time.monotonic()
        self.done_expected = 0.0
        self.phase_name = "starting"
        self.phase_started = self.started
        self.phase_expected = 1.0
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._draw_loop, daemon=True)
        if self.tty:
            self._thread.start()

    @contextlib.contextmanager
    def phase(self, name: str, expected: float) -> Iterator[None]:
        with self._lock:
            self.phase_name, self.phase_expected = name, max(expected, 0.1)
            self.phase_started = time.monotonic()
        if not self.tty:
            print(f"[{self._clock()}] {name} (~{expected:.0f} s)...", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            took = time.monotonic() - self.phase_started
            with self._lock:
                self.done_expected += expected
            if not self.tty:
                print(f"[{self._clock()}] {name}: {took:.1f} s", file=sys.stderr, flush=True)

    def _clock(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{int(elapsed // 60)}:{int(elapsed % 60):02d}"

    def _line(self) -> str:
        now = time.monotonic()
        with self._lock:
            in_phase = now - self.phase_started
            share = (self.done_expected + min(in_phase, self.phase_expected)) / self.expected_total
            name, expected = self.phase_name, self.phase_expected
        share = min(share, 0.999)
        width = 24
        filled = int(share * width)
        bar = "#" * filled + "-" * (width - filled)
        return (
            f"\r[{bar}] {share * 100:3.0f}% {name[:38]:<38} {in_phase:5.0f}/{expected:.0f} s"
            f"  total {self._clock()} / ~{self.expected_total / 60:.0f} min "
        )

    def _draw_loop(self) -> None:
        while not self._stop.wait(0.5):
            sys.stderr.write(self._line())
            sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self.tty:
            self._thread.join(timeout=2)
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()
