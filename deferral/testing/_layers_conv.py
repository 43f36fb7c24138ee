"""Conformance checks for the conv layer family (being written)."""

from __future__ import annotations

from ._base import ConformanceBase

__all__ = ["ConvLayerChecks"]


class ConvLayerChecks(ConformanceBase):
    """Layers of the conv family: parameters bit-identical to the reference, outputs agree."""
