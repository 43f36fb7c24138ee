"""torch implementations of the norm ops of deferral.ops (being written)."""

from __future__ import annotations

from typing import Any


def batch_norm(*args: Any) -> Any:
    raise NotImplementedError("batch_norm is not implemented yet on the torch backend")


def moments(*args: Any) -> Any:
    raise NotImplementedError("moments is not implemented yet on the torch backend")


def sqrt(*args: Any) -> Any:
    raise NotImplementedError("sqrt is not implemented yet on the torch backend")


def rsqrt(*args: Any) -> Any:
    raise NotImplementedError("rsqrt is not implemented yet on the torch backend")


def take(*args: Any) -> Any:
    raise NotImplementedError("take is not implemented yet on the torch backend")


def dropout(*args: Any) -> Any:
    raise NotImplementedError("dropout is not implemented yet on the torch backend")


def assign(*args: Any) -> Any:
    raise NotImplementedError("assign is not implemented yet on the torch backend")

