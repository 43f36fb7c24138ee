"""Regions: which elements of a parameter one rank (or device) owns, as global flat offsets.

A parameter split over a device mesh is held in pieces: each rank keeps a local tensor whose
element ``j`` (in C order) is some element of the full parameter. Because element ``i`` of a
parameter's values depends only on ``(seed, path, i)`` (:mod:`deferral.random`), a rank can
generate exactly its own elements, at their global flat offsets, and nothing else.

A :class:`Region` says which elements those are: for every dimension of the full shape, the
global indices the local tensor covers along it, in local order, as ``(offset, length)``
segments. The local tensor is the Cartesian product of the dimensions' indices (C order). That
describes a plain box (``Shard`` on any dimensions), the whole tensor (``Replicate``), and the
interleaved pieces of a strided shard (``_StridedShard``, FSDP2 over tensor parallelism).

:func:`region` builds one from a backend-neutral :class:`Layout` per mesh dimension, applied
left to right the way ``torch.distributed.tensor`` applies placements (each mesh dimension
splits what the previous ones left, ``torch.chunk`` style: chunks of ``ceil(n / parts)``, the
last ones shorter or empty). :meth:`Region.runs` turns a region into the runs of consecutive
global offsets a generator fills, in local order; :meth:`Region.batches` groups them into
pieces of bounded size, so the temporaries stay bounded however the parameter is split.

Example:
    >>> r = region((4, 6), (2,), (1,), (Layout("shard", 1),))  # columns 3..5 of a 4 x 6 matrix
    >>> r.local_shape, list(r.runs())
    ((4, 3), [(3, 3), (9, 3), (15, 3), (21, 3)])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Layout", "Region", "region"]

Shape = tuple[int, ...]
#: ``(offset, length)`` runs of global indices along one dimension, in local order.
Segments = tuple[tuple[int, int], ...]
_KINDS = ("replicate", "shard", "strided")


@dataclass(frozen=True)
class Layout:
    """How one mesh dimension places a parameter (backend-neutral).

    ``kind`` is ``"replicate"`` (every rank of the mesh dimension holds the same elements),
    ``"shard"`` (dimension ``dim`` is cut into one chunk per rank, ``torch.chunk`` style) or
    ``"strided"`` (dimension ``dim`` is first cut into ``split`` pieces, then each piece into one
    chunk per rank; a rank holds its chunk of every piece, in order: ``_StridedShard``).
    """

    kind: str
    dim: int = 0
    split: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown layout kind {self.kind!r}; expected one of {', '.join(_KINDS)}")
        if self.dim < 0 or self.split < 1:
            raise ValueError(f"a layout needs dim >= 0 and split >= 1; received {self!r}")


def _chunk(length: int, parts: int, rank: int) -> tuple[int, int]:
    """``(start, length)`` of chunk ``rank`` when ``length`` items are cut ``torch.chunk`` style."""
    size = -(-length // parts)
    start = min(length, size * rank)
    return start, max(0, min(length, start + size) - start)


def _pick(segments: Segments, start: int, length: int) -> Segments:
    """Local positions ``start .. start+length-1`` of a dimension, as global segments."""
    out: list[tuple[int, int]] = []
    position = 0
    for offset, size in segments:
        lo, hi = max(start, position), min(start + length, position + size)
        if lo < hi:
            out.append((offset + lo - position, hi - lo))
        position += size
    return _merge(out)


def _merge(segments: Sequence[tuple[int, int]]) -> Segments:
    out: list[tuple[int, int]] = []
    for offset, size in segments:
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + size)
        elif size:
            out.append((offset, size))
    return tuple(out)


def _split(segments: Segments, layout: Layout, parts: int, rank: int) -> Segments:
    """What a rank keeps of a dimension's local positions after one mesh dimension splits them."""
    length = sum(size for _, size in segments)
    if layout.kind == "shard":
        return _pick(segments, *_chunk(length, parts, rank))
    kept: list[tuple[int, int]] = []
    for piece in range(layout.split):  # strided: a chunk of every piece
        start, size = _chunk(length, layout.split, piece)
        sub, sub_size = _chunk(size, parts, rank)
        kept.extend(_pick(segments, start + sub, sub_size))
    return _merge(kept)


@dataclass(frozen=True)
class Region:
    """The elements of a parameter of ``shape`` that one local tensor holds.

    ``index[d]`` lists the global indices along dimension ``d`` as ``(offset, length)``
    segments in local order; the local tensor is their product in C order.
    """

    shape: Shape
    index: tuple[Segments, ...]

    @classmethod
    def full(cls, shape: Sequence[int]) -> Region:
        """The whole parameter."""
        shape = tuple(int(d) for d in shape)
        return cls(shape, tuple(((0, d),) if d else () for d in shape))

    @property
    def local_shape(self) -> Shape:
        """The shape of the local tensor."""
        return tuple(sum(size for _, size in segs) for segs in self.index)

    @property
    def size(self) -> int:
        """Number of local elements."""
        return math.prod(self.local_shape)

    @property
    def is_full(self) -> bool:
        """True when the local tensor is the whole parameter, in order."""
        return all(segs == ((0, d),) for segs, d in zip(self.index, self.shape) if d)

    def runs(self) -> Iterator[tuple[int, int]]:
        """``(global flat offset, length)`` of each run of consecutive elements, in local order.

        Trailing dimensions held whole fold into the run, so a row-sharded matrix is one run
        and a column shard of an ``(m, n)`` matrix is ``m`` runs.
        """
        if self.size == 0:
            return
        strides = [math.prod(self.shape[d + 1:]) for d in range(len(self.shape))]
        inner = len(self.shape)
        while inner > 0 and self.index[inner - 1] == ((0, self.shape[inner - 1]),):
            inner -= 1
        if inner == 0:
            yield 0, math.prod(self.shape)
            return
        block = strides[inner - 1]
        outer = [[i for off, n in self.index[d] for i in range(off, off + n)] for d in range(inner - 1)]
        for position in itertools.product(*outer):
            base = sum(i * strides[d] for d, i in enumerate(position))
            for off, n in self.index[inner - 1]:
                yield base + off * block, n * block

    def batches(self, elements: int) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """``(local start, runs)`` groups of at most ``elements`` elements, covering the region.

        Each group's runs fill local positions ``start .. start + total - 1`` in order; a run
        longer than ``elements`` is cut into several groups.
        """
        batch: list[tuple[int, int]] = []
        start = filled = 0
        for offset, length in self.runs():
            while length:
                take = min(length, elements - filled)
                batch.append((offset, take))
                offset, length, filled = offset + take, length - take, filled + take
                if filled == elements:
                    yield start, batch
                    start, batch, filled = start + filled, [], 0
        if batch:
            yield start, batch


def region(shape: Sequence[int], mesh_shape: Sequence[int], coordinate: Sequence[int],
           layouts: Sequence[Layout]) -> Region:
    """The region a rank at ``coordinate`` of a mesh of ``mesh_shape`` holds under ``layouts``.

    One layout per mesh dimension, applied left to right (as ``torch.distributed.tensor``
    applies placements).

    Raises:
        ValueError: when the mesh, the coordinate and the layouts do not agree, or a layout
            names a dimension the parameter does not have.
    """
    shape = tuple(int(d) for d in shape)
    if not len(mesh_shape) == len(coordinate) == len(layouts):
        raise ValueError(
            f"a region needs one coordinate and one layout per mesh dimension; received mesh "
            f"{tuple(mesh_shape)}, coordinate {tuple(coordinate)}, {len(layouts)} layout(s)"
        )
    index = list(Region.full(shape).index)
    for parts, rank, layout in zip(mesh_shape, coordinate, layouts):
        if layout.kind == "replicate":
            continue
        if layout.dim >= len(shape):
            raise ValueError(f"layout {layout!r} shards dimension {layout.dim} of a parameter of shape {shape}")
        index[layout.dim] = _split(index[layout.dim], layout, parts, rank)
    return Region(shape, tuple(index))
