"""``BackendConformance``: every check a backend plugin must pass, in one reusable class."""

from __future__ import annotations

from ._discovery import DiscoveryChecks
from ._layers_act import ActivationLayerChecks
from ._layers_conv import ConvLayerChecks
from ._layers_errors import ErrorChecks
from ._layers_norm import NormLayerChecks
from ._layers_seq import SeqLayerChecks
from ._lifecycle import LifecycleChecks
from ._opchecks import OpChecks
from ._robustness import RobustnessChecks
from ._values import ValueChecks

__all__ = ["BackendConformance"]


class BackendConformance(
    DiscoveryChecks, ValueChecks, LifecycleChecks, RobustnessChecks, OpChecks,
    ConvLayerChecks, NormLayerChecks, SeqLayerChecks, ActivationLayerChecks, ErrorChecks,
):
    """The conformance suite of a deferral backend, as a pytest base class.

    Subclass it in a test module under a ``Test`` name and set :attr:`backend`; pytest then
    runs every check against that backend. Nothing is collected from this class itself.

    Checks (each test's docstring says what it proves):

    * discovery: listed by ``available_backends()``, a truthful ``BackendInfo``, ValueError for
      a bad device, TypeError for an undeclared dtype, conversions as the hookspec says;
    * values: bit-identical to the host reference (and to the NumPy backend) for every
      declared dtype and checked device, every built-in initializer, several shapes and seeds;
      inserting a layer changes no other layer's values; CUDA when declared and present;
    * life cycle: declared -> shaped -> materialized, re-initialization, bad inputs and shape
      mismatches leave the model untouched, failed first calls roll back, tied parameters are
      one native object;
    * robustness: pickle and deepcopy keep every bit; concurrent first calls materialize once;
    * ops: every name in ``deferral.ops.OP_NAMES`` agrees with the NumPy backend (optional
      op families a backend does not provide are skipped, with the reason);
    * activations: every activation layer against its float64 formula; names, ``(name,
      *args)``, layers and callables as a layer's ``activation``;
    * errors: out-of-range indices, integer inputs to float layers, empty inputs and a
      channels-last image raise the same ``deferral.errors`` class naming the layer;
    * layers: convolution/pooling, normalization/embedding/dropout, recurrent/attention layers
      have bit-identical parameters and outputs within tolerance.

    Class attributes a backend may override: :attr:`backend` (required), :attr:`devices`
    (checked besides the default device), :attr:`op_rtol` / :attr:`op_atol`,
    :attr:`cuda_rtol` / :attr:`cuda_atol`, :attr:`seeds`, :attr:`threads`. Override the
    class-scoped fixture ``backend_environment`` to set up what the backend needs before any
    check runs.

    Example (a backend's ``tests/test_conformance.py``)::

        from deferral.testing import BackendConformance

        class TestMyBackend(BackendConformance):
            backend = "mybackend"
            devices = ("cpu", "gpu:1")
            op_rtol = 1e-4
    """
