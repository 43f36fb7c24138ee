"""The embedding layer: rows of a weight matrix looked up by integer indices."""

from __future__ import annotations

from typing import Any

from .. import init as _init
from .. import ops
from ..errors import InputDtypeError, InvalidIndexError
from ..parameter import Parameter
from ._args import positive_int as _positive_int
from ._block import Block
from ._inputs import dtype_name, is_integer

__all__ = ["Embedding"]


class Embedding(Block):
    """Maps integer indices to dense vectors: ``y = weight[x]``.

    ``weight`` has shape ``(input_dim, output_dim)``, fully known at creation, so
    ``initialize()`` materializes it at once. An input of integer indices of any shape
    ``S`` gives an output of shape ``S + (output_dim,)``.

    Args:
        input_dim: the vocabulary size (indices run from 0 to ``input_dim - 1``).
        output_dim: the size of each vector.
        weight_initializer: the weight's own initializer. Default: the one given to
            ``initialize()``, else the library default (Xavier uniform). Frameworks differ
            here: PyTorch's ``nn.Embedding`` draws N(0, 1), Keras U(-0.05, 0.05); pass
            ``"normal"``-style initializers explicitly to match one.

    Raises (when called):
        InputDtypeError: (a ``TypeError``) for indices that are not of an integer dtype.
        InvalidIndexError: (an ``IndexError`` and a ``ValueError``) for indices outside
            ``[0, input_dim)``, on every backend and device: each call reads the indices'
            minimum and maximum back to the host (one synchronization on a GPU). Any integer
            dtype is accepted (``uint8`` included) on every backend.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> emb = nn.Embedding(10, 4)
        >>> _ = emb.initialize(seed=0)
        >>> emb.weight.state
        'materialized'
        >>> emb(np.array([[1, 2, 3], [4, 5, 9]])).shape
        (2, 3, 4)
    """

    def __init__(self, input_dim: int, output_dim: int, weight_initializer: _init.InitializerLike = None) -> None:
        super().__init__()
        self.input_dim = _positive_int("Embedding", "input_dim", input_dim)
        self.output_dim = _positive_int("Embedding", "output_dim", output_dim)
        self.weight = Parameter("weight", (input_dim, output_dim), init=weight_initializer)

    def forward(self, x: Any) -> Any:
        name = dtype_name(x)
        if not is_integer(name):
            raise InputDtypeError(
                f"{self.describe()}: expected integer indices. Received an input of dtype {name}. "
                "Convert it first, e.g. x.astype('int64')."
            )
        self._check_range(x)
        return ops.take(self.weight.data(), x)

    def _check_range(self, x: Any) -> None:
        """Raise :class:`InvalidIndexError` for an index outside ``[0, input_dim)``.

        The bounds are two reductions read back to the host, on every backend (the frameworks'
        own checks differ: an IndexError, an InvalidArgumentError, zeros on a TensorFlow GPU, a
        device-side assertion on CUDA). While a framework traces (``tf.function``) the values
        are unknown and the framework's own behaviour applies.
        """
        if 0 in ops.shape(x):
            return
        try:
            low, high = int(ops.min(x)), int(ops.max(x))
        except TypeError:  # symbolic while tracing, or a TensorSpec in shape-only inference
            return
        if low < 0 or high >= self.input_dim:
            raise InvalidIndexError(
                f"{self.describe()}: indices must lie in [0, {self.input_dim}) (input_dim="
                f"{self.input_dim}). Received index {low if low < 0 else high} in an input of shape "
                f"{tuple(ops.shape(x))}. Fix the indices, or create the layer with a larger input_dim."
            )

    def _extra_repr(self) -> str:
        return f"{self.input_dim} -> {self.output_dim}"
