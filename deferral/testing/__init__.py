"""Reusable checks for backend plugins: the conformance suite.

A backend's test module subclasses :class:`BackendConformance`::

    from deferral.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "mybackend"

This subpackage imports pytest; ``import deferral`` never imports it.
"""

from ._conformance import BackendConformance as BackendConformance
from ._reference import ParamState as ParamState
from ._reference import assert_bits_equal as assert_bits_equal
from ._reference import assert_matches_reference as assert_matches_reference
from ._reference import assert_unchanged as assert_unchanged
from ._reference import host_bits as host_bits
from ._reference import param_bits as param_bits
from ._reference import reference_bits as reference_bits
from ._reference import snapshot as snapshot

__all__ = [
    "BackendConformance",
    "ParamState",
    "assert_bits_equal",
    "assert_matches_reference",
    "assert_unchanged",
    "host_bits",
    "param_bits",
    "reference_bits",
    "snapshot",
]
