"""deferral: one lazy model definition, identical initial weights on every framework.

Define a model without input sizes, call ``initialize()`` to record how its parameters will
be initialized, and let the first forward pass infer every shape and materialize the
parameters on the selected backend (NumPy, PyTorch or TensorFlow) with the same bits for the
same seed.

Importing deferral imports no framework; a backend's framework is imported when the backend
is first used.
"""

from . import init as init
from . import nn as nn
from . import ops as ops
from ._fill import get_num_threads as get_num_threads
from ._fill import set_num_threads as set_num_threads
from ._functional import functional as functional
from ._materialize import materialize as materialize
from ._native import native as native
from ._progress import get_progress as get_progress
from ._progress import set_progress as set_progress
from ._shapes import TensorSpec as TensorSpec
from ._summary import Summary as Summary
from ._summary import summary as summary
from ._version import __version__ as __version__
from .errors import BackendNotFoundError as BackendNotFoundError
from .errors import CheckpointError as CheckpointError
from .errors import DeferralError as DeferralError
from .errors import DeferredInitializationError as DeferredInitializationError
from .errors import EmptyInputError as EmptyInputError
from .errors import FunctionalUseError as FunctionalUseError
from .errors import InitializerError as InitializerError
from .errors import InputDtypeError as InputDtypeError
from .errors import InvalidIndexError as InvalidIndexError
from .errors import MaterializeError as MaterializeError
from .errors import ShapeMismatchError as ShapeMismatchError
from .hookspec import hookimpl as hookimpl
from .parameter import Parameter as Parameter
from .parameter import ParameterDict as ParameterDict
from .random import get_seed as get_seed
from .random import seed as seed
from .registry import available_backends as available_backends
from .registry import get_backend as get_backend
from .registry import load_backend as load_backend
from .registry import register_backend as register_backend
from .registry import set_backend as set_backend
from .registry import unregister_backend as unregister_backend
from .registry import use_backend as use_backend

__all__ = [
    "BackendNotFoundError",
    "CheckpointError",
    "DeferralError",
    "DeferredInitializationError",
    "EmptyInputError",
    "FunctionalUseError",
    "InitializerError",
    "InputDtypeError",
    "InvalidIndexError",
    "MaterializeError",
    "Parameter",
    "ParameterDict",
    "ShapeMismatchError",
    "Summary",
    "TensorSpec",
    "__version__",
    "available_backends",
    "functional",
    "get_backend",
    "get_num_threads",
    "get_progress",
    "get_seed",
    "hookimpl",
    "init",
    "load_backend",
    "materialize",
    "native",
    "nn",
    "ops",
    "register_backend",
    "seed",
    "set_backend",
    "set_num_threads",
    "set_progress",
    "summary",
    "unregister_backend",
    "use_backend",
]


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
