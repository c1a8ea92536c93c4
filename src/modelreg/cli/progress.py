"""A progress bar for `push` and `pull` on a terminal: phase, share done, bytes, rate, ETA.

    upload    [##########··········]  52%  532.0 MiB / 1.0 GiB  210.4 MiB/s  ETA 0:02

It redraws one line in place at most ten times a second; each phase (hash, upload,
download) gets its own line. Commands use it only when stderr is a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(count: float) -> str:
    """`1536` -> `1.5 KiB`."""
    for unit in _UNITS[:-1]:
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} {_UNITS[-1]}"


def format_duration(seconds: float) -> str:
    """`3725` -> `1:02:05`, `65` -> `1:05`."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class ProgressBar:
    """A `Progress` callback drawing on `stream`; `close()` ends the last line."""

    def __init__(
        self,
        stream: TextIO,
        *,
        width: int = 20,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        units: Callable[[float], str] = format_bytes,
    ) -> None:
        self._stream, self._width, self._interval, self._clock = stream, width, interval, clock
        self._units = units  # how an amount is shown: bytes, or a count
        self._phase = ""
        self._started = self._drawn_at = 0.0
        self._first = 0  # bytes already done when the phase started (a resumed pull)
        self._drawn = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = self._clock()
        if phase != self._phase:
            self.close()
            self._phase, self._started, self._first = phase, now, done
        elif done < total and now - self._drawn_at < self._interval:
            return
        self._drawn_at = now
        self._stream.write("\r" + self.line(done, total, now - self._started) + "\x1b[K")
        self._stream.flush()
        self._drawn = True

    def line(self, done: int, total: int, elapsed: float) -> str:
        """The text of the bar after `elapsed` seconds of this phase."""
        share = done / total if total else 1.0
        filled = int(share * self._width)
        bar = "#" * filled + "·" * (self._width - filled)
        rate = (done - self._first) / elapsed if elapsed > 0 else 0.0
        eta = format_duration((total - done) / rate) if rate > 0 and done < total else "-:--"
        if done >= total:
            eta = format_duration(elapsed)  # the phase's duration once done
        sizes = f"{self._units(done)} / {self._units(total)}"
        return f"{self._phase:<9} [{bar}] {share:4.0%}  {sizes}  {self._units(rate)}/s  {eta}"

    def close(self) -> None:
        """End the current line, if one was drawn."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


@contextmanager
def progress_bar(
    quiet: bool, stream: TextIO | None = None, *, units: Callable[[float], str] = format_bytes
) -> Iterator[ProgressBar | None]:
    """A bar on `stream` (stderr), or None when `quiet` or it is not a terminal."""
    stream = stream or sys.stderr
    if quiet or not stream.isatty():
        yield None
        return
    bar = ProgressBar(stream, units=units)
    try:
        yield bar
    finally:
        bar.close()
