"""Conformance cases for the conv ops (deferral.ops.CONV_OPS) (being written)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["CONV_CASES"]

#: name -> function of a generator giving a list of argument tuples (NumPy values).
CONV_CASES: dict[str, Callable[[np.random.Generator], list[tuple[Any, ...]]]] = {}
