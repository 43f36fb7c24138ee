"""Conformance checks for the norm layer family (being written)."""

from __future__ import annotations

from ._base import ConformanceBase

__all__ = ["NormLayerChecks"]


class NormLayerChecks(ConformanceBase):
    """Layers of the norm family: parameters bit-identical to the reference, outputs agree."""
