"""CUDA materialization bandwidth: achieved GB/s against what the device can move.

Runs only where ``torch.cuda.is_available()``; prints why it skipped otherwise. Standalone:
``python bench/cuda.py [--repeats N]``; ``bench/run.py`` runs it as its last section.

For each model it materializes the parameters on ``cuda`` (deferral: ``initialize(device=
"cuda")`` with every shape given; native: ``torch.nn.Linear(..., device="cuda")``), with
``torch.cuda.synchronize()`` before the clock stops, alternating deferral and native. Achieved
GB/s is parameter bytes / median seconds. It is set against

- the device's theoretical memory bandwidth (memory clock x bus width x 2, from the CUDA driver
  attributes, where readable);
- a measured device-to-device copy (bytes read + bytes written per second);
- a measured host-to-device copy from pinned memory: deferral computes values on the host
  (the reference path) and copies them in, so this link bounds it.

It also reports the peak device memory beyond the parameters (``torch.cuda.max_memory_allocated``).

Per recipe family (float32 uniform, normal, truncated normal), one large parameter is
generated on the device by the fused Triton kernel (where Triton is installed) and by the
torch-ops fallback, in GB/s written and as a fraction of the device's memory bandwidth
(targets: uniform >= 50%, the normal family >= 30%); slices at the start, middle and end are
compared bit for bit with the host reference.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _models
from bench._timing import measure

__all__ = ["run"]


def _driver_bandwidth(index: int) -> float | None:
    """Theoretical bytes/s from the driver's memory clock (kHz) and bus width (bits)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    clock, width, device = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if lib.cuInit(0) != 0 or lib.cuDeviceGet(ctypes.byref(device), index) != 0:
        return None
    # CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37
    if lib.cuDeviceGetAttribute(ctypes.byref(clock), 36, device) != 0:
        return None
    if lib.cuDeviceGetAttribute(ctypes.byref(width), 37, device) != 0:
        return None
    if clock.value <= 0 or width.value <= 0:
        return None
    return clock.value * 1e3 * 2 * width.value / 8


def _copy_bandwidth(torch: Any, nbytes: int, repeats: int) -> tuple[float, float]:
    """(device-to-device, pinned host-to-device) bytes/s, medians of ``repeats`` copies."""
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device="cuda").fill_(1.0)
    dst = torch.empty_like(src)
    host = torch.ones(n, dtype=torch.float32).pin_memory()
    d2d, h2d = [], []
    for i in range(repeats + 1):
        torch.cuda.synchronize()
        t = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        a = time.perf_counter() - t
        t = time.perf_counter()
        dst.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        b = time.perf_counter() - t
        if i:
            d2d.append(a)
            h2d.append(b)
    del src, dst, host
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(d2d), nbytes / statistics.median(h2d)


class _CudaTorch(_models.TorchBackend):
    """The torch case builders, placing everything on ``cuda``."""

    def deferral_given(self, spec: _models.Spec) -> Any:
        import torch

        def run() -> Any:
            net = spec.deferral_net(True)
            net.initialize(seed=0, backend="torch", dtype="float32", device="cuda")
            torch.cuda.synchronize()
            return net

        return run

    def native_materialize(self, spec: _models.Spec) -> Any:
        import torch

        def run() -> Any:
            mods = [torch.nn.Linear(inp, out, device="cuda") for out, inp in spec.shapes]
            torch.cuda.synchronize()
            return mods

        return run


def _peak_extra(torch: Any, build: Any, param_bytes: int) -> int:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model = build()
    peak = torch.cuda.max_memory_allocated()
    del model
    gc.collect()
    return peak - base - param_bytes


#: Recipe families of the per-kind rows: (kind, initializer name, argument, target fraction).
KINDS = (("uniform", "Uniform", 0.05, 0.50), ("normal", "Normal", 0.02, 0.30),
         ("truncated_normal", "TruncatedNormal", 0.02, 0.30))


def _kind_rows(torch: Any, bandwidth: float, n: int, repeats: int) -> list[dict[str, Any]]:
    """GB/s of generating ``n`` float32 values of each family on the device, fused and not."""
    from deferral import init
    from deferral.hookspec import MaterializeRequest
    from deferral.random import derive_key
    from deferral_torch import _native

    out = torch.empty(n, dtype=torch.float32, device="cuda")
    rows = []
    for kind, name, arg, target in KINDS:
        request = MaterializeRequest(name="w", shape=(n,), dtype="float32", device=str(out.device),
                                     trainable=True, key=derive_key(0, kind),
                                     recipe=getattr(init, name)(arg).recipe((n,)))

        def way(fused: bool, request: Any = request) -> Any:
            return lambda: (_native.fill(out, request, fused=fused), torch.cuda.synchronize())

        ways = {"fused Triton kernel": way(True)} if _native.fused_kernel(out.device) else {}
        ways["torch ops (fallback)"] = way(False)
        identical = True
        for fn in ways.values():
            fn()
            for start in (0, n // 2 - 1001, n - 65536):
                host = request.host_values(start, start + 65536)
                identical &= bool(out[start:start + 65536].cpu().numpy().tobytes() == host.tobytes())
        stats = measure(ways, repeats=repeats, min_time=0.0, keep_results=False)
        for label, st in stats.items():
            gbs = 4 * n / st.median / 1e9
            rows.append({"kind": kind, "way": label, **st.as_dict(), "GB/s": gbs,
                         "of_bandwidth": gbs * 1e9 / bandwidth, "target": target,
                         "bits_identical": identical})
    return rows


def run(repeats: int = 5, quick: bool = False) -> dict[str, Any]:
    """Measure, print and return the results; ``{"skipped": reason}`` without a CUDA device."""
    try:
        import torch
    except ImportError:
        reason = "PyTorch is not installed (pip install torch), so no CUDA device can be used"
        print(f"CUDA benchmark skipped: {reason}.")
        return {"skipped": reason}
    if not torch.cuda.is_available():
        reason = (f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                  f"built with CUDA {torch.version.cuda or 'no'}): no GPU on this machine")
        print(f"CUDA benchmark skipped: {reason}.")
        return {"skipped": reason}
    _models.quiet_deferral()
    gc.collect()
    gc.freeze()  # keep the collections between samples cheap (see run.py)
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    theoretical = _driver_bandwidth(index)
    d2d, h2d = _copy_bandwidth(torch, (1 << 28) if quick else (1 << 30), repeats)
    specs = [_models.wide_mlp(1024 if quick else 4096, 8)]
    if not quick:
        specs.append(_models.MLP("c1", "one 16384x16384 weight (1 GiB)", 16384, (16384,)))
    backend = _CudaTorch()
    rows = []
    for spec in specs:
        variants = {"deferral": backend.deferral_given(spec), "native": backend.native_materialize(spec)}
        stats = measure(variants, repeats=repeats, min_time=0.0)
        row: dict[str, Any] = {"model": spec.to_dict()}
        for name, s in stats.items():
            gbs = spec.param_bytes / s.median / 1e9
            row[name] = {
                **s.as_dict(),
                "GB/s": gbs,
                "of_theoretical": None if theoretical is None else gbs * 1e9 / theoretical,
                "of_d2d_copy": gbs * 1e9 / d2d,
                "of_h2d_copy": gbs * 1e9 / h2d,
                "peak_extra_bytes": _peak_extra(torch, variants[name], spec.param_bytes),
            }
        rows.append(row)
    bandwidth = theoretical if theoretical is not None else d2d
    kinds = _kind_rows(torch, bandwidth, (1 << 26) if quick else (1 << 28), repeats)
    torch.cuda.empty_cache()
    result = {
        "kinds": kinds,
        "bandwidth_source": "theoretical" if theoretical is not None else "measured D2D copy",
        "device": props.name,
        "total_memory_gib": props.total_memory / 2**30,
        "theoretical_GBps": None if theoretical is None else theoretical / 1e9,
        "d2d_copy_GBps": d2d / 1e9,
        "h2d_pinned_GBps": h2d / 1e9,
        "rows": rows,
    }
    from bench import _report

    print(_report.render_text([_report.cuda_table(result)]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    run(args.repeats, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
