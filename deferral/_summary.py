"""``deferral.summary``: a model's layers, output shapes, parameter counts and bytes, for free.

The model runs once on :class:`~deferral.TensorSpec` inputs (shape-only execution), so a
model far larger than memory is summarized without allocating a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._dtypes import ITEMSIZE
from ._shapes import TensorSpec

__all__ = ["Summary", "SummaryRow", "summary"]


@dataclass(frozen=True)
class SummaryRow:
    """One block call: its structural path, type, output shape and the parameters it owns.

    ``params`` counts the block's own parameters (not its children's) the first time they
    appear; a shared block called again shows 0 and ``shared=True``.
    """

    path: str
    type: str
    output_shape: Any
    params: int
    bytes: int
    shared: bool = False


@dataclass(frozen=True)
class Summary:
    """The result of :func:`summary`: ``rows``, totals, and text/Markdown renderings."""

    rows: list[SummaryRow]
    total_params: int
    trainable_params: int
    total_bytes: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)

    def _table(self) -> list[list[str]]:
        return [[r.path or "(root)", r.type, _fmt_shape(r.output_shape),
                 "shared" if r.shared else f"{r.params:,}", _fmt_bytes(r.bytes)] for r in self.rows]

    def _footer(self) -> list[str]:
        lines = [
            f"Total params: {self.total_params:,} (trainable: {self.trainable_params:,}, "
            f"non-trainable: {self.total_params - self.trainable_params:,})",
            "Total bytes: " + _fmt_bytes(self.total_bytes) + (
                " (" + ", ".join(f"{k}: {_fmt_bytes(v)}" for k, v in self.bytes_by_dtype.items()) + ")"
                if self.bytes_by_dtype else ""),
        ]
        if self.unresolved:
            lines.append("Shapes still unknown (never reached by forward): " + ", ".join(self.unresolved))
        return lines

    def __str__(self) -> str:
        head = ["Layer (path)", "Type", "Output shape", "Params", "Bytes"]
        table = self._table()
        widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(line(head))
        return "\n".join([line(head), rule, *map(line, table), rule, *self._footer()])

    def to_markdown(self) -> str:
        """The table as GitHub-flavoured Markdown."""
        out = ["| Layer (path) | Type | Output shape | Params | Bytes |", "|---|---|---|---:|---:|"]
        out += [f"| `{a}` | {b} | `{c}` | {d} | {e} |" for a, b, c, d, e in self._table()]
        return "\n".join(out + [""] + [f"{line}  " for line in self._footer()])


def _fmt_shape(shape: Any) -> str:
    if isinstance(shape, tuple) and shape and all(isinstance(s, tuple) for s in shape):
        return ", ".join(_fmt_shape(s) for s in shape)
    if isinstance(shape, tuple):
        return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    return str(shape)


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def _shape_of(out: Any) -> Any:
    if isinstance(out, TensorSpec):
        return out.shape
    if isinstance(out, (tuple, list)):
        return tuple(_shape_of(o) for o in out)
    return getattr(out, "shape", None)


def summary(net: Any, *input_shapes: Any, dtype: str | None = None) -> Summary:
    """Summarize ``net`` for inputs of ``input_shapes`` (one per forward argument).

    Runs shape-only inference (no parameter is allocated; a deferred model ends up
    ``shaped``), then lists every block call with its output shape and parameter count, and
    totals of parameters and bytes. ``dtype`` prices every parameter in that dtype; by
    default each parameter's own (``float32`` before ``initialize()``).

    Example:
        >>> import deferral
        >>> from deferral import nn
        >>> net = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(10)])
        >>> s = deferral.summary(net, (None, 20))
        >>> s.total_params, [r.output_shape for r in s.rows]
        (7946, [(None, 10), (None, 256), (None, 10)])
    """
    from .nn._block import _recorder

    recorded: list[list[Any]] = []
    token = _recorder.set(recorded)
    try:
        net.infer_shape(*input_shapes, dtype=None)
    finally:
        _recorder.reset(token)
    seen: set[int] = set()
    rows: list[SummaryRow] = []
    by_dtype: dict[str, int] = {}
    total = trainable = 0
    for block, out in recorded:
        params = bytes_ = 0
        shared = bool(block._params) and all(id(p) in seen for p in block._params.values())
        for param in block._params.values():
            if id(param) in seen or param.size is None:
                continue
            seen.add(id(param))
            name = dtype or param.dtype
            params += param.size
            bytes_ += param.size * ITEMSIZE[name]
            by_dtype[name] = by_dtype.get(name, 0) + param.size * ITEMSIZE[name]
            trainable += param.size if param.trainable else 0
        total += params
        rows.append(SummaryRow(block._path, type(block).__name__, _shape_of(out), params, bytes_, shared))
    unresolved = [name for name, p in net.collect_params().items() if p.size is None]
    return Summary(rows, total, trainable, sum(by_dtype.values()), by_dtype, unresolved)
