"""The reference path's engine: fill a host buffer with a recipe's values, fast.

Values are produced in cache-sized blocks (so the float64 temporaries never leave the CPU
cache) and, for large requests, by several threads at once, each owning a contiguous piece
of the output: NumPy's Philox and its ufuncs release the GIL. Every element's arithmetic is
the recipe's, whatever the block and thread layout, so the bits never depend on it.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from . import random as _random
from ._dtypes import round_to

if TYPE_CHECKING:
    import numpy as np

    from ._transforms import Workspace
    from .init import Recipe

__all__ = ["ALIGN", "aligned_empty", "fill", "get_num_threads", "host_dtype", "set_num_threads"]

#: Elements per block: 64 Ki float64 temporaries (512 KiB) stay in the L2 cache.
BLOCK = 1 << 16
#: A request is split across threads only into pieces of at least this many elements.
MIN_PIECE = 1 << 18
#: Byte alignment of :func:`aligned_empty` buffers (what TensorFlow needs of a buffer it adopts).
ALIGN = 64

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads: int | None = None
_local = threading.local()


@functools.lru_cache(maxsize=1)
def _default_threads() -> int:
    env = os.environ.get("DEFERRAL_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(
                f"DEFERRAL_NUM_THREADS must be a positive integer; received {env!r}"
            ) from None
    return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """Threads the reference path uses to generate large parameters.

    Default: ``DEFERRAL_NUM_THREADS`` if set, else the number of CPUs.
    """
    return _threads if _threads is not None else _default_threads()


def set_num_threads(n: int | None) -> None:
    """Set the threads used to generate values on the host (``None``: back to the default).

    Raises:
        ValueError: for anything but a positive integer or ``None``.
    """
    global _threads, _pool
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads expects a positive integer or None; received {n!r}")
    with _lock:
        _threads = n
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers != threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="deferral-fill")
        return _pool


def host_dtype(dtype: str) -> str:
    """The NumPy dtype of host values for a parameter dtype (bfloat16 travels as uint16 bits)."""
    return "uint16" if dtype == "bfloat16" else dtype


def aligned_empty(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array whose data starts on an :data:`ALIGN` boundary.

    Backends fill it with :meth:`~deferral.hookspec.MaterializeRequest.fill_host` and hand it
    to their framework without a copy. NumPy asks the kernel for transparent huge pages for
    large arrays, so first writing it page-faults far less than memory from a framework's
    allocator (measured: 0.45 vs 2.3 ns per float32 value on a 2-core VM).
    """
    import numpy as np

    itemsize = np.dtype(dtype).itemsize
    nbytes = itemsize
    for d in shape:
        nbytes *= d
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGN
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


@functools.lru_cache(maxsize=64)
def _constant(value: float, dtype: str) -> object:
    """``value`` rounded to ``dtype`` once (a NumPy scalar of the host dtype)."""
    import numpy as np

    return round_to(np.full(1, value, dtype=np.float64), dtype)[0]


def _workspace(n: int) -> Workspace:
    """This thread's scratch for blocks of ``n`` elements (kept for the thread's next fill)."""
    from ._transforms import Workspace

    ws: Workspace | None = getattr(_local, "workspace", None)
    if ws is None or ws.size < n:
        ws = _local.workspace = Workspace(n)
    return ws


def _store(values: np.ndarray, out: np.ndarray, dtype: str, ws: Workspace) -> None:
    """Write float64 ``values`` into ``out`` rounded to ``dtype`` (see :func:`round_to`)."""
    if dtype in ("float32", "float64"):
        out[...] = values  # one rounding to nearest-even
    elif dtype == "float16":
        single = ws.single[:values.shape[0]]
        single[...] = values
        out[...] = single  # the second rounding starts from the float32 value
    else:
        out[...] = round_to(values, dtype)


def _fill_block(kind: str, a: float, b: float, words: np.ndarray, out: np.ndarray, dtype: str,
                ws: Workspace) -> None:
    """One block: the words become values in place and are stored (then freed, on return)."""
    from . import _transforms

    if kind == "uniform":
        values = _transforms.uniform(words, a, b, ws)
    elif kind == "normal":
        values = _transforms.normal(words, a, b, ws)
    elif kind == "truncated_normal":
        values = _transforms.truncated_normal(words, a, b, ws)
    else:
        raise ValueError(f"unknown recipe kind {kind!r}")
    _store(values, out, dtype, ws)


def _fill_piece(
    recipe: Recipe, key: tuple[int, int], start: int, out: np.ndarray, dtype: str,
    progress: Callable[[int], None] | None,
) -> None:
    n = out.shape[0]
    block = BLOCK
    ws = _workspace(min(n, block))
    stream = _random.Stream(key, start)
    try:
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            _fill_block(recipe.kind, recipe.a, recipe.b, stream.take(hi - lo), out[lo:hi], dtype, ws)
            if progress is not None:
                progress(hi - lo)
    finally:
        stream.close()


def fill(
    recipe: Recipe,
    key: tuple[int, int],
    shape: tuple[int, ...],
    start: int,
    out: np.ndarray,
    dtype: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write flat elements ``start .. start + out.size - 1`` of a parameter into ``out``.

    ``out`` is a flat, writable array of :func:`host_dtype` of ``dtype``; values are rounded
    to ``dtype`` the way the spec says (float32 and float64 assignments round to nearest,
    which is the same single rounding). ``progress`` is called with element counts as
    blocks complete (possibly from worker threads).
    """

    n = out.shape[0]
    if n == 0:
        return
    if recipe.kind == "constant":
        out.fill(_constant(recipe.a, dtype))
    elif recipe.kind == "orthogonal":
        from .init import _orthogonal

        out[...] = round_to(_orthogonal(key, shape, recipe.a).reshape(-1)[start:start + n], dtype)
    else:
        threads = min(get_num_threads(), max(1, n // MIN_PIECE))
        if threads == 1:
            _fill_piece(recipe, key, start, out, dtype, progress)
            return
        bounds = [n * i // threads for i in range(threads + 1)]
        pool = _executor(get_num_threads())
        futures = [
            pool.submit(_fill_piece, recipe, key, start + lo, out[lo:hi], dtype, progress)
            for lo, hi in itertools.pairwise(bounds)
        ]
        for future in futures:
            future.result()
        return
    if progress is not None:
        progress(n)
