"""Peak memory while materializing, measured in a fresh process per case.

Run as ``python -m bench._memory '<json case>'`` (``run.py`` does it). In the child:

1. import deferral and the framework, and materialize a warm-up model the same way twice: one
   layer of about a million elements, which goes down the same code paths (so one-off costs:
   code pages, thread pools, allocator arenas, are not counted) but is small next to the
   measured model, so that memory an allocator keeps from it cannot hide part of the peak;
2. ``gc.collect()``, hand free heap pages back to the OS (glibc ``malloc_trim``) and read the
   resident set size (RSS) as the baseline;
3. reset the kernel's RSS high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)
   and materialize the measured model; the new high-water mark (``VmHWM``, which
   ``getrusage(RUSAGE_SELF).ru_maxrss`` also reports) is the peak. Where the reset is not
   possible, a background thread samples the RSS every millisecond instead;
4. free it and do it once more under ``tracemalloc``, which sees NumPy's allocations (not
   torch's or TensorFlow's): its peak minus what is still held at the end is the NumPy
   temporaries' peak, a cross-check that does not depend on the allocator.

``peak extra = peak RSS - baseline - parameter bytes``: what materializing needed beyond the
parameters themselves. RSS counts every allocator (NumPy, torch, TensorFlow, Python).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import threading
import time
import tracemalloc
from typing import Any

__all__ = ["measure_in_child"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    """Current resident set size in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import psutil  # the fallback off Linux; see bench/requirements.txt

        return int(psutil.Process().memory_info().rss)


def _hwm() -> int | None:
    """The RSS high-water mark (VmHWM) in bytes, or None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS; True when the kernel did it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm = _hwm()
    return hwm is not None and hwm <= _rss() + (1 << 20)


class _Sampler(threading.Thread):
    """Samples the RSS every ``interval`` seconds until stopped; keeps the largest."""

    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, _rss(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss())


def _trim() -> None:
    """Hand free heap memory back to the OS (glibc), so the baseline holds only live memory.

    Without it, heap pages the warm-up freed stay resident and the measured model reuses
    them unseen, which would understate its peak.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def _builder(backend: Any, variant: str, spec: Any) -> Any:
    if variant == "deferral":
        return backend.deferral_given(spec)
    if variant == "deferred":
        return backend.deferral_deferred(spec)
    if variant == "native":
        return backend.native_materialize(spec)
    raise ValueError(f"unknown variant {variant!r}")


def child(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one case in this (fresh) process; see the module docstring."""
    from bench import _models

    backend = _models.load(case["backend"])
    spec = _models.spec_from_dict(case["spec"])
    warm = _models.spec_from_dict(case["warm"])
    build = _builder(backend, case["variant"], spec)
    warm_build = _builder(backend, case["variant"], warm)
    for _ in range(2):
        keep = warm_build()
        del keep
        gc.collect()
    _trim()
    time.sleep(0.05)
    base = _rss()
    exact = _reset_hwm()
    sampler = _Sampler()
    sampler.start()
    model = build()
    sampled = sampler.stop()
    hwm = _hwm() if exact else None
    peak = max(sampled, hwm or 0)
    after = _rss()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del model
    gc.collect()
    tracemalloc.start()
    model = build()
    held, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del model
    gc.collect()
    return {
        "method": "VmHWM reset + 1 ms sampling" if exact else "RSS sampled every 1 ms",
        "hwm_peak_bytes": hwm,
        "sampled_peak_bytes": sampled,
        "baseline_bytes": base,
        "peak_bytes": peak,
        "after_bytes": after,
        "ru_maxrss_bytes": maxrss,
        "param_bytes": spec.param_bytes,
        "extra_bytes": peak - base - spec.param_bytes,
        "retained_bytes": after - base,
        "numpy_temp_bytes": traced_peak - held,
        "numpy_peak_bytes": traced_peak,
    }


def measure_in_child(case: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run :func:`child` for ``case`` in a fresh interpreter and return its result."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["DEFERRAL_PROGRESS"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", "bench._memory", json.dumps(case)],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"memory case {case['backend']}/{case['variant']} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
