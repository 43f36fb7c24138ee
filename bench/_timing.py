"""Alternating timers: every variant of a case runs once per repeat, in turn, in one process.

``measure({"deferral": f, "native": g}, repeats=5)`` warms each variant up once, picks how
many calls one sample holds (enough for ``min_time`` seconds, so that tiny models are not
measured at the clock's resolution), then runs ``f g f g ...`` and returns the median time
per call of each. By default the results of a sample are kept alive until its clock has
stopped and freed (``del`` + ``gc.collect()``) before the next sample, so freeing is never
timed and no variant runs while another's garbage is still around (forward passes drop each
result at once instead, as a loop calling a model does). The garbage collector is switched
off while the clock runs, as ``timeit`` does. (``run.py`` calls ``gc.freeze()`` once the
frameworks are imported, so these collections cost microseconds, not the ~0.4 s a full
collection over TensorFlow's and torch's objects takes.)
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PAIRED_REPEATS", "Stats", "measure", "paired_ratio"]


@dataclass
class Stats:
    """Seconds per call of one variant: every sample, the calls per sample and the median."""

    samples: list[float] = field(default_factory=list)
    number: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.low, "max_s": self.high,
                "number": self.number, "samples_s": self.samples}


def _sample(fn: Callable[[], Any], number: int, keep_results: bool) -> float:
    """Seconds per call over ``number`` calls of ``fn``.

    With ``keep_results`` the results are freed after the clock stops; without, each is
    dropped as soon as the call returns (as a loop calling a model does).
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    keep: list[Any] = []
    try:
        start = time.perf_counter()
        if keep_results:
            for _ in range(number):
                keep.append(fn())
        else:
            for _ in range(number):
                fn()
        elapsed = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    del keep
    gc.collect()
    return elapsed / number


def _calls_per_sample(fn: Callable[[], Any], min_time: float, max_number: int, keep_results: bool) -> int:
    """How many calls of ``fn`` make a sample last about ``min_time``, after a warm-up call.

    A short call is timed over ten times more calls at each try until the calls last a fifth
    of ``min_time``: one call alone, taken in a slow moment of a shared machine, can be ten
    times too long and would leave every sample too short to average the noise out.
    """
    once = _sample(fn, 1, keep_results)  # the warm-up (tracing, caches)
    if once >= min_time:  # a long call, or a warm-up that compiled something: once more
        once = _sample(fn, 1, keep_results)
        if once >= min_time:
            return 1
    number = 1
    while True:
        per_call = _sample(fn, number, keep_results)
        if per_call * number >= min_time / 5 or number >= max_number:
            break
        number = min(max_number, number * 10)
    return max(1, min(max_number, math.ceil(min_time / max(per_call, 1e-7))))


def measure(
    variants: dict[str, Callable[[], Any]],
    repeats: int = 5,
    min_time: float = 0.05,
    max_number: int = 10_000,
    keep_results: bool = True,
) -> dict[str, Stats]:
    """Time each variant ``repeats`` times, alternating between variants, after one warm-up.

    Args:
        variants: name -> a callable doing one unit of work (its result is kept until the
            sample's clock stops).
        repeats: samples per variant; the median of them is reported.
        min_time: a sample runs the callable as many times as makes it last about this long
            (from the warm-up's duration), at least once.
        max_number: upper bound on calls per sample.
        keep_results: keep every result of a sample until its clock stops (materialization:
            freeing is not timed) instead of dropping each at once (forward passes).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; received {repeats}")
    stats: dict[str, Stats] = {}
    for name, fn in variants.items():  # warm-up, and the calls per sample
        stats[name] = Stats(number=_calls_per_sample(fn, min_time, max_number, keep_results))
    for _ in range(repeats):
        for name, fn in variants.items():
            stats[name].samples.append(_sample(fn, stats[name].number, keep_results))
    return stats


#: Samples per variant for rows judged by :func:`paired_ratio` (short calls, a few seconds a row).
PAIRED_REPEATS = 21


def paired_ratio(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """The median, over rounds, of ``ours / theirs`` (two :meth:`Stats.as_dict` results of one
    :func:`measure` call, whose samples alternate round by round).

    On a shared machine a slow stretch lasts longer than a round and slows both samples of
    it alike: the ratio of each round cancels it, where a ratio of the two medians does not.
    """
    pairs = [a / b for a, b in zip(ours["samples_s"], theirs["samples_s"], strict=True)]
    return float(statistics.median(pairs))
