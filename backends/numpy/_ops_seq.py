"""numpy implementations of the seq ops of deferral.ops (being written)."""

from __future__ import annotations

from typing import Any


def split(*args: Any) -> Any:
    raise NotImplementedError("split is not implemented yet on the numpy backend")


def stack(*args: Any) -> Any:
    raise NotImplementedError("stack is not implemented yet on the numpy backend")


def unstack(*args: Any) -> Any:
    raise NotImplementedError("unstack is not implemented yet on the numpy backend")


def where(*args: Any) -> Any:
    raise NotImplementedError("where is not implemented yet on the numpy backend")


def zeros(*args: Any) -> Any:
    raise NotImplementedError("zeros is not implemented yet on the numpy backend")

