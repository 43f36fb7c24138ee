"""Device-native value generation for the torch backend: the recipe in plain torch tensor ops.

On CUDA with Triton installed, :func:`fill` launches the fused kernel of
:mod:`deferral_torch._triton` instead (one kernel per chunk, everything in registers); the
torch ops below are the fallback where Triton is absent, and the CPU path of the tests.

Everything here runs on the device of the tensors it is given (CPU or CUDA, the same code),
and produces the bits of the NumPy reference (:mod:`deferral.random`, :mod:`deferral._fill`):

- **Philox4x64-10** in ``int64`` tensor ops. A tensor holds the *bit patterns* of unsigned
  64-bit words; ``+``, ``-`` and ``*`` wrap modulo 2**64, which is unsigned arithmetic on
  those bits. ``>>`` on ``int64`` is arithmetic, so every logical shift right is written
  ``(x >> s) & mask``. The 64x64 -> 128-bit multiply splits both factors into 32-bit limbs
  (:func:`_mulhilo`). Word ``i`` of a stream is output word ``i % 4`` of the block at the
  256-bit little-endian counter ``i // 4``, as in :class:`deferral.random.Stream`.
- **The transforms** (uniform, normal, truncated normal) in ``float64`` tensor ops, operation
  for operation as in :mod:`deferral.random`: every op is its own kernel, so every product and
  sum is rounded exactly where NumPy rounds it (no fused multiply-add). Two rules keep the
  CUDA kernels exact as well: never divide by a Python scalar (PyTorch's CUDA ``div`` turns
  that into a multiply by the reciprocal) and never pass an ``alpha`` other than 1 to
  ``add``/``sub``. ``torch.sqrt`` is not trusted: on the CPU (MKL builds) it can be one ulp
  off, so :func:`_sqrt` checks its result exactly and corrects it (a no-op where it is
  already correctly rounded, as on CUDA).
- **Rounding** to the parameter dtype: float64 -> float32 once (nearest-even); float16 and
  bfloat16 round that float32 value once more, like :func:`deferral._dtypes.round_to`.

:func:`fill` writes a whole parameter in chunks (:data:`CHUNK_ELEMENTS`,
:data:`CPU_CHUNK_ELEMENTS`), so the temporaries stay bounded whatever the parameter's size.
Block indices are exact for any counter (the carry into the high counter words is handled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

import torch

from deferral import _progress
from deferral.random import (
    _A,
    _ATANH_COEFFS,
    _B,
    _C,
    _D,
    _E,
    _F,
    _LN2,
    _PHI_M2,
    _PHI_MASS2,
    _SQRT_HALF,
    _TWO_M53,
)

if TYPE_CHECKING:
    from deferral.hookspec import MaterializeRequest

__all__ = [
    "CHUNK_ELEMENTS",
    "CPU_CHUNK_ELEMENTS",
    "FUSED_CHUNK_ELEMENTS",
    "NATIVE_KINDS",
    "fill",
    "fused_kernel",
    "normal",
    "philox4x64",
    "run_words",
    "truncated_normal",
    "transform",
    "uniform",
    "words",
]

#: Elements generated per step of :func:`fill` on a device other than the CPU. Each step is a
#: few hundred elementwise kernels, so a step must be large enough for the kernels' work to
#: outweigh their launch cost, and small enough to bound the temporaries: a few float64 tensors
#: of this many elements (32 MiB each; a few hundred MiB at the peak), whatever the
#: parameter's size. ``bench/cuda_native.py`` measures other sizes.
CHUNK_ELEMENTS = 1 << 22
#: Elements per step on the CPU, where smaller temporaries stay in the caches (measured best
#: among 2**16 .. 2**22 on a 4096 x 4096 parameter).
CPU_CHUNK_ELEMENTS = 1 << 18
#: Elements per launch of the fused Triton kernel (no temporaries: only the launch overhead,
#: a few microseconds, is paid per chunk, so chunks are large; 256 MiB of float32).
FUSED_CHUNK_ELEMENTS = 1 << 26

#: Recipe kinds generated from the stream on the device. ``constant`` is a plain fill and
#: ``orthogonal`` needs a QR factorisation of the whole matrix (done on the host).
NATIVE_KINDS = frozenset({"uniform", "normal", "truncated_normal"})

#: A word of Philox state: a tensor of bit patterns, or one unsigned Python int shared by all
#: blocks (counter words that do not vary across a chunk stay on the host until they mix).
Word: TypeAlias = "torch.Tensor | int"

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
_MASK53 = (1 << 53) - 1
_MASK52 = (1 << 52) - 1

_SPLIT = float((1 << 27) + 1)  # Veltkamp's splitting constant for float64
_BITS_ONE = 0x3FF << 52  # exponent field of 1.0

_M0 = 0xD2E7470EE14C6C93  # multipliers of Philox4x64 (Random123)
_M1 = 0xCA5A826395121157
_W0 = 0x9E3779B97F4A7C15  # Weyl key increments between rounds
_W1 = 0xBB67AE8584CAA73B
_ROUNDS = 10


# -- Philox4x64-10 ------------------------------------------------------------------------
def _signed(value: int) -> int:
    """The int64 whose bit pattern is the unsigned 64-bit ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical shift right of 64-bit patterns (``>>`` on int64 copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mulhilo(x: Word, m: int) -> tuple[Word, Word]:
    """High and low 64-bit words of the 128-bit product ``m * x`` (``m`` a Python constant).

    With 32-bit limbs ``x = xh * 2**32 + xl`` and ``m = mh * 2**32 + ml``, every limb product
    is below 2**64, so its bit pattern is exact in a wrapping int64, and so are the sums
    below, which stay under 2**64 as unsigned numbers:

    - ``t = xh*ml + (xl*ml >> 32)`` (at most ``(2**32-1)**2 + 2**32-1``),
    - ``u = low32(t) + xl*mh`` (the same bound),
    - ``hi = xh*mh + (t >> 32) + (u >> 32)`` and ``lo = x * m`` (wrapped).
    """
    if isinstance(x, int):
        product = x * m
        return product >> 64, product & _MASK64
    ml, mh = m & _MASK32, m >> 32
    lo = x * _signed(m)
    xl = x & _MASK32
    xh = _shr(x, 32)
    t = _shr(xl * ml, 32)
    t += xh * ml
    u = xl.mul_(mh)  # xl * mh: xl is not needed any more
    u += t & _MASK32
    hi = xh.mul_(mh)  # xh * mh
    hi += _shr(t, 32)
    hi += _shr(u, 32)
    return hi, lo


def _xor(a: Word, b: Word) -> Word:
    """``a ^ b`` for words that are tensors of bit patterns or unsigned Python ints."""
    if isinstance(a, int) and isinstance(b, int):
        return a ^ b
    if isinstance(a, int):
        a, b = b, a
    return a ^ (_signed(b) if isinstance(b, int) else b)


def philox4x64(counter: Sequence[Word], key: tuple[int, int]) -> tuple[Word, Word, Word, Word]:
    """Philox4x64-10 of the counter words (little-endian) under the two key words.

    Counter words may be tensors of int64 bit patterns (broadcastable to each other) or
    unsigned Python ints; an output word is a Python int only where no tensor reached it.
    """
    x0, x1, x2, x3 = counter
    k0, k1 = key[0] & _MASK64, key[1] & _MASK64
    for round_ in range(_ROUNDS):
        if round_:
            k0, k1 = (k0 + _W0) & _MASK64, (k1 + _W1) & _MASK64
        hi0, lo0 = _mulhilo(x0, _M0)
        hi1, lo1 = _mulhilo(x2, _M1)
        x0, x1, x2, x3 = _xor(_xor(hi1, x1), k0), lo1, _xor(_xor(hi0, x3), k1), lo0
    return x0, x1, x2, x3


def _as_tensor(word: Word, like: torch.Tensor) -> torch.Tensor:
    """``word`` as a tensor of the shape and device of ``like``."""
    if isinstance(word, int):
        return torch.full_like(like, _signed(word))
    return word


def _blocks(first: int, count: int, key: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Blocks at counters ``first .. first+count-1`` (mod 2**256) as a ``(count, 4)`` tensor.

    The low counter word runs over a tensor; the three high words are Python ints, constant
    within a segment. A new segment starts where the low word wraps, so the carry into the
    high words is exact for any counter.
    """
    parts = []
    done = 0
    while done < count:
        counter = (first + done) & ((1 << 256) - 1)
        low = counter & _MASK64
        size = min(count - done, (1 << 64) - low)
        ctr0 = torch.arange(size, dtype=torch.int64, device=device)
        ctr0 += _signed(low)
        high = [(counter >> (64 * i)) & _MASK64 for i in (1, 2, 3)]
        out = philox4x64((ctr0, *high), key)
        parts.append(torch.stack([_as_tensor(w, ctr0) for w in out], dim=1))
        done += size
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def words(
    key: tuple[int, int], start: int, count: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Words ``start .. start+count-1`` of the stream keyed by ``key``, as int64 bit patterns.

    The same bits as :func:`deferral.random.raw_words` (``uint64``), viewed as ``int64``,
    computed on ``device``.

    Example:
        >>> from deferral.random import raw_words
        >>> ref = raw_words((1, 2), 5, 12).view("int64").tolist()
        >>> words((1, 2), 5, 7).tolist() == ref
        True
    """
    device = torch.device(device)
    if count <= 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    first, skip = divmod(start, 4)
    blocks = _blocks(first, (skip + count + 3) // 4, key, device)
    return blocks.view(-1)[skip:skip + count]


def run_words(
    key: tuple[int, int], runs: Sequence[tuple[int, int]], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The words of every ``(start, length)`` run, concatenated, as int64 bit patterns.

    One vectorized pass for any number of runs (a column shard of a matrix is one short run
    per row): each run's blocks are generated at their counters, and its words gathered. The
    counters of a parameter's runs are below 2**62 (a flat offset is below 2**64), so the
    high counter words are 0.

    Example:
        >>> from deferral.random import raw_words
        >>> ref = [*raw_words((1, 2), 3, 5).view("int64"), *raw_words((1, 2), 10, 17).view("int64")]
        >>> run_words((1, 2), [(3, 2), (10, 7)]).tolist() == [int(v) for v in ref]
        True
    """
    device = torch.device(device)
    if len(runs) == 1:
        return words(key, runs[0][0], runs[0][1], device)
    starts = torch.tensor([s for s, _ in runs], dtype=torch.int64)
    lengths = torch.tensor([n for _, n in runs], dtype=torch.int64)
    first = starts // 4
    nblocks = (starts % 4 + lengths + 3) // 4
    block_base = torch.cumsum(nblocks, 0) - nblocks  # where each run's blocks start
    counters = torch.arange(int(nblocks.sum()), dtype=torch.int64)
    counters += torch.repeat_interleave(first - block_base, nblocks)
    word_base = torch.cumsum(lengths, 0) - lengths  # where each run's words start in the output
    index = torch.arange(int(lengths.sum()), dtype=torch.int64)
    index += torch.repeat_interleave(block_base * 4 + starts % 4 - word_base, lengths)
    counters, index = counters.to(device), index.to(device)
    out = philox4x64((counters, 0, 0, 0), key)
    blocks = torch.stack([_as_tensor(w, counters) for w in out], dim=1)
    return blocks.view(-1)[index]


# -- the transforms -------------------------------------------------------------------------
def _open_unit(w: torch.Tensor) -> torch.Tensor:
    """``(2k + 1) * 2**-53`` for ``k = w >> 12`` (logical): exact, in (0, 1)."""
    k = (w >> 12).bitwise_and_(_MASK52).to(torch.float64)
    return k.mul_(2.0).add_(1.0).mul_(_TWO_M53)


def uniform(w: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``k * ((high - low) * 2**-53) + low`` for ``k = w >> 11`` (logical), in float64."""
    k = (w >> 11).bitwise_and_(_MASK53).to(torch.float64)
    return k.mul_((high - low) * _TWO_M53).add_(low)


def _poly(coeffs: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """Horner's rule, highest coefficient first: one rounding per ``*`` and per ``+``."""
    acc = x * coeffs[-1]
    for c in reversed(coeffs[1:-1]):
        acc.add_(c).mul_(x)
    return acc.add_(coeffs[0])


def _log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of positive normal float64 values: :func:`deferral.random._log` step by step."""
    m, e = torch.frexp(x)  # x = m * 2**e, m in [0.5, 1): exact
    small = m < _SQRT_HALF
    m = torch.where(small, m * 2.0, m)  # exact
    ef = e.to(torch.float64).sub_(small.to(torch.float64))  # exact small integers
    f = m.sub_(1.0)  # exact (Sterbenz)
    s = f / (f + 2.0)
    series = _poly(_ATANH_COEFFS, s * s)
    return ef.mul_(_LN2).add_((s + s).mul_(series))


def _two_square_error(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``y*y - p`` exactly, for ``p = y*y`` rounded (Dekker's product, no fused multiply-add)."""
    c = y * _SPLIT
    hi = c - (c - y)  # the upper 26 bits of y
    lo = y - hi  # the rest: hi*hi, hi*lo and lo*lo are exact
    err = hi * hi - p
    cross = hi * lo
    return err.add_(cross).add_(cross).add_(lo * lo)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root of positive float64 values in [2**-400, 2**400].

    ``torch.sqrt`` is correctly rounded on CUDA, but on the CPU it may call MKL's vector
    library, which can be one ulp off. So its result ``y`` is checked exactly and moved by
    one ulp where needed: with ``y = Y * u`` (``Y`` the 53-bit integer significand, ``u`` the
    ulp), ``D = (x - y*y) / u**2`` is an integer computed exactly (``x - p`` by Sterbenz,
    ``y*y - p`` by :func:`_two_square_error`, both scaled by a power of two and converted
    to int64). ``sqrt(x)`` lies above the midpoint ``y + u/2`` iff ``D > Y`` and below
    ``y - u/2`` iff ``D <= -Y`` (``-Y/2`` when ``y`` is a power of two: the gap below is
    ``u/2``); no square root of a double is ever exactly on a midpoint.
    """
    return _round_sqrt(x, torch.sqrt(x))


def _round_sqrt(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The correctly rounded ``sqrt(x)`` from ``y``, a square root at most one ulp off."""
    p = y * y
    m, e = torch.frexp(y)
    big_y = (m * 2.0**53).to(torch.int64)
    exponent = (106 - 2 * e).to(torch.int64)  # scale = 2**(106 - 2e) = 1 / u**2
    scale = ((exponent << 52) + _BITS_ONE).view(torch.float64)
    d = ((x - p) * scale).to(torch.int64)
    d -= (_two_square_error(y, p).mul_(scale)).to(torch.int64)
    power_of_two = big_y == (1 << 52)
    step = (d > big_y).to(torch.int64)
    step -= (d <= -torch.where(power_of_two, big_y >> 1, big_y)).to(torch.int64)
    return (y.view(torch.int64) + step).view(torch.float64)


def _tail(qt: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
    """The tail formulas of AS 241 for elements with ``|q| > 0.425`` (``q = p - 0.5``).

    Both tail polynomials are evaluated and the one for each element's ``r`` is kept: each
    element's arithmetic is the reference's.
    """
    negative = qt < 0.0
    r = torch.where(negative, pt, 1.0 - pt)
    r = _sqrt(_log(r).neg_())
    rn = r - 1.6
    near = _poly(_C, rn) / _poly(_D, rn)
    rf = r - 5.0
    far = _poly(_E, rf) / _poly(_F, rf)
    z = torch.where(r <= 5.0, near, far)
    return torch.where(negative, -z, z)


def _normal_quantile(p: torch.Tensor, compact: bool = True) -> torch.Tensor:
    """Inverse normal CDF for p in (0, 1): :func:`deferral.random._normal_quantile`'s bits.

    ``compact`` picks how the tail (about 15% of the elements) is evaluated, never what it
    computes: ``True`` gathers the tail elements first, like the reference (about half the
    work of the normal transform; on CUDA, reading how many there are synchronizes the device
    once per chunk); ``False`` evaluates the tail formulas on every element and selects (no
    synchronization, more work). Both are tested on the CPU against the reference.
    """
    q = p - 0.5
    r = (q * q).neg_().add_(0.180625)  # 0.180625 - q*q, one rounding
    out = (q * _poly(_A, r)).div_(_poly(_B, r))
    tail = q.abs() > 0.425
    if compact:
        index = tail.nonzero().squeeze(1)
        if index.numel():
            out[index] = _tail(q[index], p[index])
        return out
    return torch.where(tail, _tail(q, p), out)


def normal(w: torch.Tensor, mean: float, std: float, compact: bool = True) -> torch.Tensor:
    """``mean + std * quantile((2k + 1) * 2**-53)``, ``k = w >> 12``, in float64."""
    return _normal_quantile(_open_unit(w), compact).mul_(std).add_(mean)


def truncated_normal(
    w: torch.Tensor, mean: float, std: float, compact: bool = True
) -> torch.Tensor:
    """``mean + std * clip(quantile(PHI(-2) + MASS2 * u), -2, 2)``, ``u`` the open unit value."""
    p = _open_unit(w).mul_(_PHI_MASS2).add_(_PHI_M2)
    z = _normal_quantile(p, compact).clamp_(-2.0, 2.0)
    return z.mul_(std).add_(mean)


def transform(
    kind: str, a: float, b: float, w: torch.Tensor, compact: bool = True
) -> torch.Tensor:
    """Float64 values of recipe ``kind`` (one of :data:`NATIVE_KINDS`) for the words ``w``.

    Raises:
        ValueError: for a kind that is not generated from the stream.
    """
    if kind == "uniform":
        return uniform(w, a, b)
    if kind == "normal":
        return normal(w, a, b, compact)
    if kind == "truncated_normal":
        return truncated_normal(w, a, b, compact)
    raise ValueError(f"recipe kind {kind!r} is not generated natively; expected one of {sorted(NATIVE_KINDS)}")


# -- filling a parameter ------------------------------------------------------------------
def _round_into(out: torch.Tensor, v: torch.Tensor) -> None:
    """Write float64 ``v`` into ``out``, rounded like :func:`deferral._dtypes.round_to`."""
    if out.dtype in (torch.float16, torch.bfloat16):
        v = v.to(torch.float32)  # the second rounding starts from the float32 value
    out.copy_(v)


def _constant(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` through float32, as a Python float (exact in ``dtype``)."""
    rounded = torch.tensor(value, dtype=torch.float64)
    if dtype != torch.float64:
        rounded = rounded.to(torch.float32).to(dtype)
    return float(rounded.item())


def _copy_host(flat: torch.Tensor, request: MaterializeRequest, chunk: int) -> None:
    """Fill ``flat`` from the host reference, chunk by chunk (for ``orthogonal``)."""
    for start, stop in request.chunks(chunk):
        host = torch.from_numpy(request.host_values(start, stop))
        if flat.dtype == torch.bfloat16:  # host bfloat16 values are uint16 bit patterns
            host = host.view(torch.int16).view(torch.bfloat16)
        flat[start:stop].copy_(host)


def fill(
    values: torch.Tensor, request: MaterializeRequest, chunk: int | None = None,
    compact: bool = True, fused: bool | None = None,
) -> None:
    """Write the values of ``request`` into ``values`` (any device) with the reference bits.

    ``values`` must be contiguous, of ``request.local_shape`` and of ``request.dtype``: with a
    ``request.region`` (one rank's shard) it holds exactly the region's elements. Kinds in
    :data:`NATIVE_KINDS` are generated on ``values.device`` (on CUDA, in its current stream)
    in chunks of ``chunk`` elements (default: :data:`CPU_CHUNK_ELEMENTS` on the CPU,
    :data:`CHUNK_ELEMENTS` elsewhere); ``constant`` is a fill with the rounded value;
    ``orthogonal`` is computed on the host (reference path) and copied in, chunk by chunk.
    ``compact`` is passed to the normal quantile (see :func:`_normal_quantile`). On CUDA, each
    chunk is one launch of the fused Triton kernel where Triton is installed
    (:func:`fused_kernel`; ``fused=False`` forces the torch-ops path, ``fused=True`` requires
    the kernel); for a shard, chunks of one run use the kernel, chunks of several short runs
    (a column shard) the torch ops, in chunks of :data:`CHUNK_ELEMENTS`.

    Raises:
        TypeError: when ``values`` does not match the request.
        ValueError: for an unknown recipe kind, or ``orthogonal`` on part of a parameter.
    """
    if chunk is None:
        if values.device.type == "cpu":
            chunk = CPU_CHUNK_ELEMENTS
        else:  # a shard's batches of many runs go through torch ops: their temporaries stay bounded
            whole = request.region is None or request.region.is_full
            chunk = FUSED_CHUNK_ELEMENTS if whole and fused is not False and fused_kernel(values.device) else CHUNK_ELEMENTS
    expected = getattr(torch, request.dtype)
    shape = tuple(request.local_shape)
    if tuple(values.shape) != shape or values.dtype != expected or not values.is_contiguous():
        raise TypeError(
            f"fill for {request.name!r}: expected a contiguous {request.dtype} tensor of shape "
            f"{shape}; received {values.dtype} {tuple(values.shape)} "
            f"(contiguous={values.is_contiguous()})"
        )
    recipe = request.recipe
    with torch.no_grad():
        flat = values.view(-1)
        if recipe.kind == "constant":
            flat.fill_(_constant(recipe.a, values.dtype))
        elif recipe.kind == "orthogonal":
            request.require_whole_for_orthogonal()
            _copy_host(flat, request, chunk)
        elif recipe.kind in NATIVE_KINDS:
            _fill_stream(flat, request, chunk, compact, _progress.advance_elements(request.dtype), fused)
        else:
            raise ValueError(f"unknown recipe kind {recipe.kind!r}")


def fused_kernel(device: torch.device) -> ModuleType | None:
    """The fused Triton kernel module (:mod:`deferral_torch._triton`) for ``device``, or ``None``.

    Only CUDA devices use it, and only where Triton is installed (CUDA builds of torch ship
    it); it is never imported for the CPU (importing Triton next to TensorFlow can abort the
    process).
    """
    if device.type != "cuda":
        return None
    try:
        from . import _triton
    except ImportError:
        return None
    return _triton


def _fill_stream(
    flat: torch.Tensor, request: MaterializeRequest, chunk: int, compact: bool,
    progress: Callable[[int], None] | None, fused: bool | None = None,
) -> None:
    recipe = request.recipe
    kernel = fused_kernel(flat.device) if fused is not False else None
    if fused and kernel is None:
        raise ValueError(f"fused generation needs Triton and a CUDA device; {flat.device} has none")
    for start, runs in request.batches(chunk):
        count = sum(length for _, length in runs)
        if kernel is not None and len(runs) == 1:  # the fused kernel takes one run of offsets
            kernel.fill(flat[start:start + count], recipe.kind, recipe.a, recipe.b, request.key, runs[0][0])
        else:
            w = run_words(request.key, runs, flat.device)
            _round_into(flat[start:start + count], transform(recipe.kind, recipe.a, recipe.b, w, compact))
        if progress is not None:
            progress(count)
