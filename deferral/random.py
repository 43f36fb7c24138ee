"""The value recipe: a counter-based stream that makes initial values identical everywhere.

Every parameter draws from its own Philox4x64-10 stream whose key is derived from
``(seed, path)``; element ``i`` of the parameter depends only on ``(seed, path, i)``.
The integers become floats through arithmetic that uses only IEEE-754 operations that are
correctly rounded on every platform (``+ - * /``, ``sqrt``, ``frexp``), so any backend or
device that follows the same steps in float64 produces the same bits. The recipe is
versioned (:data:`SPEC_VERSION`); ``docs/identity.md`` is its specification.

NumPy is the reference implementation and is imported lazily, so ``import deferral`` stays
cheap.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ._transforms import Workspace

__all__ = [
    "SPEC_VERSION",
    "derive_key",
    "fresh_seed",
    "get_seed",
    "normal",
    "Stream",
    "raw_words",
    "seed",
    "truncated_normal",
    "uniform",
]

#: Version of the value recipe. It changes only when the numbers a seed produces change.
SPEC_VERSION = 1

_MASK64 = (1 << 64) - 1
_TWO_M53 = 2.0**-53

_lock = threading.Lock()
_local = threading.local()
_default_seed: int | None = None


def _check_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MASK64:
        raise ValueError(
            f"a seed must be an integer in [0, 2**64); received {value!r}. "
            "Pass e.g. deferral.seed(0)."
        )
    return value


def seed(value: int) -> None:
    """Set the default seed used by ``initialize()`` calls that give none.

    Example:
        >>> import deferral
        >>> deferral.seed(42)
        >>> deferral.get_seed()
        42
    """
    global _default_seed
    checked = _check_seed(value)
    with _lock:
        _default_seed = checked


def get_seed() -> int | None:
    """Return the default seed set by :func:`seed`, or ``None`` when none was set."""
    return _default_seed


def fresh_seed() -> int:
    """Draw a new random seed (63 bits, so it prints and round-trips everywhere)."""
    import secrets  # imported here, like hashlib below: loading OpenSSL costs ~20 ms

    return secrets.randbits(63)


@functools.lru_cache(maxsize=4096)
def derive_key(seed_value: int, path: str) -> tuple[int, int]:
    """Return the two 64-bit Philox key words for the parameter at ``path``.

    ``sha256(b"deferral/v1\\0" + decimal(seed) + b"\\0" + utf8(path))``; the first 16 bytes of the
    digest, read as two little-endian 64-bit words, are the key.

    Example:
        >>> derive_key(0, "0.weight")[0] == derive_key(0, "0.weight")[0]
        True
    """
    import hashlib

    data = b"deferral/v1\x00" + str(_check_seed(seed_value)).encode() + b"\x00" + path.encode()
    digest = hashlib.sha256(data).digest()
    return int.from_bytes(digest[0:8], "little"), int.from_bytes(digest[8:16], "little")


class Stream:
    """The words of the stream keyed by ``key`` from word ``start`` on, read in order.

    Word ``i`` is output word ``i % 4`` of Philox4x64-10 applied to the 256-bit counter
    ``i // 4`` (little-endian words) with ``key``.
    """

    def __init__(self, key: tuple[int, int], start: int = 0) -> None:
        import numpy as np

        first_block = start // 4
        # numpy's Philox increments its counter before producing a block.
        counter = (first_block - 1) % (1 << 256)
        state: dict[str, Any] = {
            "bit_generator": "Philox",
            "state": {
                "counter": np.array([(counter >> (64 * i)) & _MASK64 for i in range(4)], dtype=np.uint64),
                "key": np.array(key, dtype=np.uint64),
            },
            "buffer": np.zeros(4, dtype=np.uint64),
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
        # Constructing a Philox costs ~10 us (it draws OS entropy it then ignores); setting
        # the state of this thread's idle one costs ~1.5 us. A Stream holds it until close().
        spare = getattr(_local, "philox", None)
        if spare is not None:
            _local.philox = None
            spare.state = state
            self._bitgen = spare
        else:
            self._bitgen = np.random.Philox(counter=state["state"]["counter"], key=state["state"]["key"])
        skip = start - 4 * first_block
        if skip:
            self._bitgen.random_raw(skip)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` words as a new ``uint64`` array."""
        return self._bitgen.random_raw(n)

    def close(self) -> None:
        """Hand the generator back to this thread for the next Stream (optional)."""
        if getattr(_local, "philox", None) is None:
            _local.philox = self._bitgen


def raw_words(key: tuple[int, int], start: int, stop: int) -> np.ndarray:
    """Return words ``start .. stop-1`` of the stream keyed by ``key`` as ``uint64``."""
    import numpy as np

    if stop <= start:
        return np.empty(0, dtype=np.uint64)
    stream = Stream(key, start)
    try:
        return stream.take(stop - start)
    finally:
        stream.close()


def _words_copy(words: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.array(words, dtype=np.uint64, copy=True)


def _workspace(n: int) -> Workspace:
    from . import _transforms

    return _transforms.Workspace(n)


def _open_unit(words: np.ndarray) -> np.ndarray:
    """``(2k + 1) * 2**-53`` for ``k = w >> 12``: uniform on (0, 1), never 0 or 1, exact.

    ``2k + 1 < 2**53``, so every step is exact, and ``1 - p`` is exact too.
    """
    from . import _transforms

    return _transforms.open_unit(_words_copy(words))


def uniform(words: np.ndarray, low: float, high: float) -> np.ndarray:
    """Uniform values on ``[low, high)``: ``low + (high - low) * (k * 2**-53)``, ``k = w >> 11``.

    Computed as ``k * ((high - low) * 2**-53) + low``: scaling by a power of two is exact, so
    this rounds the same exact product once, as the formula does.
    """
    from . import _transforms

    w = _words_copy(words)
    return _transforms.uniform(w, low, high, _workspace(w.shape[0]))


# ---------------------------------------------------------------------------------------
# The normal quantile, from + - * / sqrt and frexp only (Wichura 1988, AS 241, PPND16).

_LN2 = 0.6931471805599453  # nearest double to ln 2
_SQRT_HALF = 0.7071067811865476
# 1 / (2k + 1), k = 0 .. 11, each the nearest double (Python float division).
_ATANH_COEFFS = tuple(1.0 / (2 * k + 1) for k in range(12))

_A = (3.387132872796366608, 133.14166789178437745, 1971.5909503065514427,
      13731.693765509461125, 45921.953931549871457, 67265.770927008700853,
      33430.575583588128105, 2509.0809287301226727)
_B = (1.0, 42.313330701600911252, 687.1870074920579083, 5394.1960214247511077,
      21213.794301586595867, 39307.89580009271061, 28729.085735721942674,
      5226.495278852545925)
_C = (1.42343711074968357734, 4.6303378461565452959, 5.7694972214606914055,
      3.64784832476320460504, 1.27045825245236838258, 0.24178072517745061177,
      0.0227238449892691845833, 7.7454501427834140764e-4)
_D = (1.0, 2.05319162663775882187, 1.6763848301838038494, 0.68976733498510000455,
      0.14810397642748007459, 0.0151986665636164571966, 5.475938084995344946e-4,
      1.05075007164441684324e-9)
_E = (6.6579046435011037772, 5.4637849111641143699, 1.7848265399172913358,
      0.29656057182850489123, 0.026532189526576123093, 0.0012426609473880784386,
      2.71155556874348757815e-5, 2.01033439929228813265e-7)
_F = (1.0, 0.59983220655588793769, 0.13692988092273580531, 0.0148753612908506148525,
      7.868691311456132591e-4, 1.8463183175100546818e-5, 1.4215117583164458887e-7,
      2.04426310338993978564e-15)

# Standard normal CDF at -2 and the mass inside [-2, 2] (nearest doubles).
_PHI_M2 = 0.022750131948179195
_PHI_MASS2 = 0.9544997361036416


def _log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive finite float64 values from basic operations only."""
    import numpy as np

    from . import _transforms

    out = np.array(x, dtype=np.float64, copy=True).reshape(-1)
    return _transforms.log_into(out, _workspace(out.shape[0])).reshape(np.shape(x))


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """Inverse of the standard normal CDF for p in (0, 1), relative error about 1e-16.

    The central formula is evaluated for every element (cheaper than selecting them) and
    replaced where ``|p - 0.5| > 0.425`` by the tail formulas; each element's arithmetic is
    the same either way.
    """
    import numpy as np

    from . import _transforms

    out = np.array(p, dtype=np.float64, copy=True)
    return _transforms.quantile(out, out, _workspace(out.shape[0]))


def normal(words: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Normal values: ``mean + std * quantile((2k + 1) * 2**-53)``, ``k = w >> 12``, in float64."""
    from . import _transforms

    w = _words_copy(words)
    return _transforms.normal(w, mean, std, _workspace(w.shape[0]))


def truncated_normal(words: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Normal values cut at two standard deviations, by inverting the truncated CDF.

    ``p = PHI(-2) + MASS2 * u`` with ``u = (2k + 1) * 2**-53``, ``k = w >> 12``; ``z = quantile(p)``, clipped
    to [-2, 2] against rounding; the value is ``mean + std * z``.
    """
    from . import _transforms

    w = _words_copy(words)
    return _transforms.truncated_normal(w, mean, std, _workspace(w.shape[0]))


def check_quantile_accuracy() -> float:
    """Largest absolute error of the quantile against ``statistics.NormalDist`` on a grid.

    Used by the tests; the recipe's accuracy is part of its documentation.
    """
    import statistics

    import numpy as np

    grid = np.concatenate([np.linspace(1e-12, 1 - 1e-12, 2001), np.geomspace(1e-300, 1e-3, 200)])
    ours = _normal_quantile(grid)
    ref = np.array([statistics.NormalDist().inv_cdf(float(x)) for x in grid])
    return float(np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))))
