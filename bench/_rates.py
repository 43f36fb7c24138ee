"""Generator rates against the machine's limits: how close the reference path runs to them.

Everything here runs at the same thread count (deferral's fill threads, torch's intra-op
threads, NumPy worker threads for the limits), alternating, medians, in one process:

- **limits**: the memory write bandwidth (filling a preallocated float32 buffer, and filling a
  freshly allocated one, page faults included, as a materialization does) and the *Philox
  floor*: NumPy's Philox4x64-10 ``random_raw`` producing the same number of words, one
  generator per thread, in the fill's block size (NumPy has no ``out=`` for raw words, so the
  floor includes NumPy allocating each block, as the fill does);
- **deferral**: the reference path (``deferral._fill.fill``) writing float32 values of one
  square weight into a preallocated buffer, per recipe family;
- **torch**: ``nn.init.uniform_``, ``normal_`` and ``trunc_normal_`` on a preallocated tensor of
  the same shape;
- **Flax NNX**: ``nnx.Linear(n, n)`` construction (its default: a truncated-normal LeCun
  kernel and a zero bias) against deferral materializing ``Dense(n, in_units=n)`` with a
  truncated-normal weight on the NumPy backend; ``flax.linen`` ``Dense.init`` under
  ``jax.jit`` for information. Skipped when flax or jax is not installed.
"""

from __future__ import annotations

import importlib.util
import itertools
import mmap
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench._timing import measure

__all__ = ["FAMILIES", "run"]

#: Recipe families measured: label -> (initializer name, argument), all on one square weight.
FAMILIES = {
    "uniform (XavierUniform)": ("XavierUniform", None),
    "normal (Normal 0.02)": ("Normal", 0.02),
    "truncated normal (TruncatedNormal 0.02)": ("TruncatedNormal", 0.02),
    "Kaiming normal": ("KaimingNormal", None),
    "Xavier normal": ("XavierNormal", None),
}


def _split(n: int, threads: int) -> list[tuple[int, int]]:
    bounds = [n * i // threads for i in range(threads + 1)]
    return list(itertools.pairwise(bounds))


def _limits(n: int, threads: int, pool: ThreadPoolExecutor) -> dict[str, Callable[[], Any]]:
    import numpy as np

    from deferral import _fill

    buffer = np.empty(n, dtype=np.float32)
    buffer[...] = 1.0
    pieces = _split(n, threads)
    generators = [np.random.Philox(i) for i in range(threads)]

    def write(out: Any) -> None:
        list(pool.map(lambda p: out[p[0]:p[1]].__setitem__(Ellipsis, 0.0), pieces))

    def fresh() -> Any:
        """A float32 array on new pages (an anonymous mapping: every page faults on first write)."""
        return np.frombuffer(mmap.mmap(-1, 4 * n), dtype=np.float32)

    def floor_piece(i: int) -> None:
        lo, hi = pieces[i]
        block = _fill.BLOCK
        for start in range(lo, hi, block):
            generators[i].random_raw(min(block, hi - start))

    return {
        "memory write (preallocated float32)": lambda: write(buffer),
        "memory write (fresh allocation, first touch)": lambda: write(fresh()),
        "Philox floor (numpy random_raw)": lambda: list(pool.map(floor_piece, range(threads))),
    }


def _deferral_fills(side: int) -> dict[str, Callable[[], Any]]:
    import numpy as np

    from deferral import _fill, init
    from deferral.random import derive_key

    out = np.empty(side * side, dtype=np.float32)
    key = derive_key(0, "rates.weight")
    ways = {}
    for label, (name, arg) in FAMILIES.items():
        cls = getattr(init, name)
        recipe = (cls() if arg is None else cls(arg)).recipe((side, side))
        ways[f"deferral {label}"] = (lambda r=recipe: _fill.fill(r, key, (side, side), 0, out, "float32"))
    return ways


def _torch_inits(side: int, threads: int) -> dict[str, Callable[[], Any]]:
    import torch

    torch.set_num_threads(threads)
    w = torch.empty(side, side)
    return {
        "torch nn.init.uniform_": lambda: torch.nn.init.uniform_(w, -0.02, 0.02),
        "torch nn.init.normal_": lambda: torch.nn.init.normal_(w, 0.0, 0.02),
        "torch nn.init.trunc_normal_": lambda: torch.nn.init.trunc_normal_(w, 0.0, 0.02, -0.04, 0.04),
    }


def flax_available() -> bool:
    """Whether flax (NNX) and jax are installed (imports nothing)."""
    return all(importlib.util.find_spec(m) is not None for m in ("flax", "jax"))


def _flax_inits(side: int) -> dict[str, Callable[[], Any]]:
    import math

    import numpy as np

    from deferral import init, nn

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from flax import linen, nnx

    def nnx_linear() -> Any:
        layer = nnx.Linear(side, side, rngs=nnx.Rngs(0))
        layer.kernel[...].block_until_ready()
        return layer

    dense = linen.Dense(side)
    jitted = jax.jit(dense.init)
    x = np.zeros((1, side), dtype=np.float32)

    def linen_jit() -> Any:
        params = jitted(jax.random.key(0), x)
        jax.block_until_ready(params)
        return params

    # Flax's default kernel: variance_scaling(1, fan_in, truncated_normal): std sqrt(1/fan_in)
    # of the truncated distribution (deferral's TruncatedNormal(sigma) has std 0.88 sigma).
    sigma = math.sqrt(1.0 / side) / 0.87962566103423978

    def ours() -> Any:
        net = nn.Dense(side, in_units=side, weight_initializer=init.TruncatedNormal(sigma))
        net.initialize(seed=0, backend="numpy", dtype="float32")
        return net

    return {"deferral Dense (TruncatedNormal), numpy backend": ours,
            "Flax NNX nnx.Linear (default init)": nnx_linear,
            "flax.linen Dense.init under jax.jit": linen_jit}


def _row(label: str, stats: Any, values: int) -> dict[str, Any]:
    return {"label": label, **stats.as_dict(), "ns_per_value": stats.median / values * 1e9}


def run(side: int, repeats: int, min_time: float, torch: bool = True) -> dict[str, Any]:
    """Measure every rate for a ``side`` x ``side`` float32 weight; return the rows.

    ``torch``: include torch's ``nn.init`` rows (the torch backend is selected and installed).
    """
    from deferral import get_num_threads

    threads = get_num_threads()
    n = side * side
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-limits") as pool:
        variants = {**_limits(n, threads, pool), **_deferral_fills(side),
                    **(_torch_inits(side, threads) if torch else {})}
        stats = measure(variants, repeats=repeats, min_time=min_time, keep_results=False)
    rows = [_row(label, s, n) for label, s in stats.items()]
    result: dict[str, Any] = {"side": side, "threads": threads, "rows": rows}
    if flax_available():
        flax_stats = measure(_flax_inits(side), repeats=repeats, min_time=min_time)
        result["flax"] = [_row(label, s, n + side) for label, s in flax_stats.items()]
    else:
        result["flax_skipped"] = "flax or jax is not installed (pip install -r bench/requirements.txt)"
    return result
