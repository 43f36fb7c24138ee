"""tensorflow implementations of the conv ops of deferral.ops (being written)."""

from __future__ import annotations

from typing import Any


def conv(*args: Any) -> Any:
    raise NotImplementedError("conv is not implemented yet on the tensorflow backend")


def conv_transpose(*args: Any) -> Any:
    raise NotImplementedError("conv_transpose is not implemented yet on the tensorflow backend")


def max_pool(*args: Any) -> Any:
    raise NotImplementedError("max_pool is not implemented yet on the tensorflow backend")


def avg_pool(*args: Any) -> Any:
    raise NotImplementedError("avg_pool is not implemented yet on the tensorflow backend")

