"""Conformance checks for the seq layer family (being written)."""

from __future__ import annotations

from ._base import ConformanceBase

__all__ = ["SeqLayerChecks"]


class SeqLayerChecks(ConformanceBase):
    """Layers of the seq family: parameters bit-identical to the reference, outputs agree."""
