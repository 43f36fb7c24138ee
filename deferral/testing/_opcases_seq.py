"""Conformance cases for the seq ops (deferral.ops.SEQ_OPS) (being written)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["SEQ_CASES"]

#: name -> function of a generator giving a list of argument tuples (NumPy values).
SEQ_CASES: dict[str, Callable[[np.random.Generator], list[tuple[Any, ...]]]] = {}
