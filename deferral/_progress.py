"""Progress reporting for long materializations: a one-line bar on a terminal, else silence.

A top-level operation (``initialize()``, a model's first call) opens a :func:`task`; the
reference path reports generated elements through :func:`advance_elements`. Nothing is
printed for operations that finish within :data:`DELAY` seconds, when standard error is not a
terminal, or when reporting is switched off (``deferral.set_progress(False)`` or
``DEFERRAL_PROGRESS=0``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from ._dtypes import ITEMSIZE

__all__ = ["advance_elements", "get_progress", "set_progress", "task"]

#: Seconds an operation must run before a bar appears.
DELAY = 0.5
_INTERVAL = 0.1
_setting: bool | None = None
_lock = threading.Lock()
_active: _Bar | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on (``True``) or off (``False``); ``None`` restores the default.

    The default shows a bar only when standard error is a terminal, unless the environment
    variable ``DEFERRAL_PROGRESS`` is ``0`` (never) or ``1`` (always).
    """
    global _setting
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_progress expects True, False or None; received {enabled!r}")
    _setting = enabled


def get_progress() -> bool:
    """Whether a long materialization started now would show a bar."""
    if _setting is not None:
        return _setting
    env = os.environ.get("DEFERRAL_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


class _Bar:
    def __init__(self, label: str, total: int | None, stream: TextIO) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done = 0
        self.start = time.perf_counter()
        self.last = 0.0
        self.shown = False
        self.lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.done += nbytes
            now = time.perf_counter()
            if now - self.start >= DELAY and now - self.last >= _INTERVAL:
                self.last = now
                self._render(now)

    def _render(self, now: float) -> None:
        elapsed = now - self.start
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            text = f"{self.label}: [{bar:<30}] {frac:4.0%} {_mib(self.done)} / {_mib(self.total)} {elapsed:5.1f} s"
        else:
            text = f"{self.label}: {_mib(self.done)} {elapsed:5.1f} s"
        self.stream.write("\r" + text)
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        with self.lock:
            if self.shown:
                self._render(time.perf_counter())
                self.stream.write("\n")
                self.stream.flush()


@contextlib.contextmanager
def task(label: str, total_bytes: int | None = None) -> Iterator[None]:
    """Report progress of the enclosed materialization (nested tasks join the outer one)."""
    global _active
    if _active is not None or not get_progress():
        yield
        return
    bar = _Bar(label, total_bytes, sys.stderr)
    with _lock:
        _active = bar
    try:
        yield
    finally:
        with _lock:
            _active = None
        bar.close()


def advance_elements(dtype: str) -> Callable[[int], None] | None:
    """A callback counting generated elements of ``dtype``, or ``None`` when no bar is open."""
    bar = _active
    if bar is None:
        return None
    size = ITEMSIZE[dtype]
    return lambda n: bar.add(n * size)
