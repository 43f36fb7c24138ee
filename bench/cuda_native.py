"""Device-native generation on CUDA: achieved GB/s of one large parameter, and its bits checked.

Standalone: ``python bench/cuda_native.py [--gib 1] [--dtype float32] [--chunks 20,22,24]``.
Without torch or a CUDA device it prints why it skipped and exits 0.

For each recipe kind (uniform, normal, truncated normal) it materializes a parameter of
``--gib`` GiB through the torch backend's hook on ``cuda`` with native generation
(``deferral_torch._native``), with ``torch.cuda.synchronize()`` before the clock starts and
before it stops, and reports parameter bytes / median seconds. It sets that against

- the device's theoretical memory bandwidth (2 x memory clock x bus width, where
  ``torch.cuda.get_device_properties`` tells them);
- the host path it replaces (values computed on the host by the reference and copied in,
  ``DEFERRAL_TORCH_NATIVE=0``), timed once, unless ``--no-host``.

``--chunks`` sweeps the native chunk size (log2 of elements per step) to tune
``deferral_torch._native.CHUNK_ELEMENTS``, and ``--compact`` the normal quantile's tail
strategy (``1``, the default: gather the tail elements first, one synchronization per chunk;
``0``: evaluate the tail formulas on every element, no synchronization); the peak device memory beyond the parameter is
reported for each. Finally slices at the start, the middle and the end of every parameter are
compared bit for bit with the NumPy reference; any difference makes the exit status 1.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["main"]

KINDS = {"uniform": ("Uniform", 0.05), "normal": ("Normal", 0.02), "truncated_normal": ("TruncatedNormal", 0.02)}
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
SAMPLE = 1 << 16  # elements per checked slice


def _theoretical_gbps(props: Any) -> float | None:
    """2 x memory clock (kHz) x bus width (bits) / 8, in GB/s, where torch exposes them."""
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def _request(kind: str, shape: tuple[int, ...], dtype: str) -> Any:
    from deferral import init
    from deferral.hookspec import MaterializeRequest
    from deferral.random import derive_key

    cls, arg = KINDS[kind]
    return MaterializeRequest(
        name="bench.weight", shape=shape, dtype=dtype, device="cuda:0", trainable=True,
        key=derive_key(0, "bench.weight"), recipe=getattr(init, cls)(arg).recipe(shape),
    )


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` synchronized calls, and the last result."""
    import torch

    times = []
    result = None
    for _ in range(repeats):
        result = None
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _materialize(request: Any, mode: str) -> Any:
    import deferral_torch

    saved = os.environ.get(deferral_torch.NATIVE_ENV)
    os.environ[deferral_torch.NATIVE_ENV] = mode
    try:
        return deferral_torch.deferral_materialize(request=request)
    finally:
        if saved is None:
            del os.environ[deferral_torch.NATIVE_ENV]
        else:
            os.environ[deferral_torch.NATIVE_ENV] = saved


def _check_bits(param: Any, request: Any) -> bool:
    """Slices at the start, middle and end of ``param`` against the host reference."""
    import numpy as np
    import torch

    flat = param.detach().view(-1)
    size = flat.numel()
    signed = {2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[flat.element_size()]
    for start in sorted({0, max(0, size // 2 - SAMPLE // 2 - 1), max(0, size - SAMPLE)}):
        stop = min(size, start + SAMPLE)
        got = flat[start:stop].view(signed).cpu().numpy().view(unsigned)
        ref = request.host_values(start, stop)
        if not np.array_equal(got, ref.view(unsigned)):
            print(f"    MISMATCH in elements {start}..{stop - 1}: {int((got != ref.view(unsigned)).sum())} differ")
            return False
    return True


def _bench_kind(kind: str, args: argparse.Namespace, theoretical: float | None) -> bool:
    import torch

    from deferral_torch import _native

    elements = int(args.gib * 2**30) // ITEMSIZE[args.dtype]
    shape = (elements // 4096, 4096) if elements % 4096 == 0 else (elements,)
    request = _request(kind, shape, args.dtype)
    nbytes = request.size * ITEMSIZE[args.dtype]
    print(f"\n{kind}: {shape} {args.dtype} ({nbytes / 2**30:.2f} GiB)")
    ok = True
    saved_chunk, saved_fill = _native.CHUNK_ELEMENTS, _native.fill
    try:
        for compact, log2 in [(c, n) for c in args.compact for n in args.chunks]:
            _native.CHUNK_ELEMENTS = 1 << log2
            _native.fill = functools.partial(saved_fill, compact=compact == "1")
            _materialize(_request(kind, (1 << 20,), args.dtype), "1")  # warm-up: kernels, allocator
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            seconds, param = _timed(lambda: _materialize(request, "1"), args.repeats)
            extra = torch.cuda.max_memory_allocated() - before - nbytes
            gbps = nbytes / seconds / 1e9
            share = f" = {gbps / theoretical:.1%} of {theoretical:,.0f} GB/s" if theoretical else ""
            print(f"  native, chunk 2^{log2}, compact={compact}: {seconds * 1e3:9.1f} ms  {gbps:8.2f} GB/s{share}; "
                  f"peak extra device memory {extra / 2**20:,.0f} MiB")
            good = _check_bits(param, request)
            print(f"    bits of 3 x {SAMPLE} sampled elements equal the reference: {good}")
            ok = ok and good
            del param
            torch.cuda.empty_cache()
    finally:
        _native.CHUNK_ELEMENTS, _native.fill = saved_chunk, saved_fill
    if args.host:
        seconds, param = _timed(lambda: _materialize(request, "0"), 1)
        print(f"  host reference + copy:  {seconds * 1e3:9.1f} ms  {nbytes / seconds / 1e9:8.2f} GB/s")
        del param
        torch.cuda.empty_cache()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="parameter size in GiB (default 1)")
    parser.add_argument("--dtype", default="float32", choices=sorted(ITEMSIZE))
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated recipe kinds")
    parser.add_argument("--chunks", default="22", help="comma-separated log2 chunk sizes (default 22)")
    parser.add_argument("--compact", default="1", help="comma-separated tail strategies: 1, 0 (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-host", dest="host", action="store_false", help="skip the host path")
    args = parser.parse_args(argv)
    args.chunks = [int(c) for c in args.chunks.split(",")]
    args.compact = [c.strip() for c in args.compact.split(",")]
    if not set(args.compact) <= {"0", "1"}:
        parser.error(f"--compact takes 1 and/or 0; received {args.compact}")

    try:
        import torch
    except ImportError:
        print("bench/cuda_native.py: skipped, torch is not installed")
        return 0
    if not torch.cuda.is_available():
        print(f"bench/cuda_native.py: skipped, no CUDA device (torch {torch.__version__}, "
              f"built with CUDA {torch.version.cuda or 'no'}; torch.cuda.is_available() is False)")
        return 0
    props = torch.cuda.get_device_properties(0)
    theoretical = _theoretical_gbps(props)
    print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    print("theoretical memory bandwidth: "
          + (f"{theoretical:,.0f} GB/s" if theoretical else "not reported by this torch build"))
    ok = True
    for kind in args.kinds.split(","):
        ok = _bench_kind(kind.strip(), args, theoretical) and ok
    print("\nall sampled bits equal the reference" if ok else "\nBIT MISMATCH: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
