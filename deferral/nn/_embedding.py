"""The embedding layer: rows of a weight matrix looked up by integer indices."""

from __future__ import annotations

import sys
from typing import Any

from .. import init as _init
from .. import ops
from ..parameter import Parameter
from ._args import positive_int as _positive_int
from ._block import Block

__all__ = ["Embedding"]


def _dtype_name(x: Any) -> str:
    """``"int64"``, ``"float32"``, ... for a NumPy, torch or TensorFlow array (or a backend's own)."""
    dtype = getattr(x, "dtype", None)
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):  # torch.dtype has no .name: "torch.int64"
        name = str(dtype).rsplit(".", 1)[-1]
    return name


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
        TypeError: for indices that are not of an integer dtype.
        ValueError: for indices outside ``[0, input_dim)`` on the NumPy backend (checked on
            every call). PyTorch raises its own ``IndexError`` on the CPU (a device-side assert
            on CUDA); TensorFlow raises ``InvalidArgumentError`` on the CPU and returns zeros
            on a GPU.

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
        name = _dtype_name(x)
        if not name.startswith(("int", "uint")):
            raise TypeError(
                f"{self.describe()}: expected integer indices. Received an input of dtype {name}. "
                "Convert it first, e.g. x.astype('int64')."
            )
        np = sys.modules.get("numpy")  # a NumPy input means numpy is imported; never import it here
        if np is not None and isinstance(x, np.ndarray) and x.size:
            low, high = int(x.min()), int(x.max())
            if low < 0 or high >= self.input_dim:
                bad = low if low < 0 else high
                raise ValueError(
                    f"{self.describe()}: indices must lie in [0, {self.input_dim}) (input_dim="
                    f"{self.input_dim}). Received index {bad} in an input of shape {x.shape}. "
                    "Fix the indices, or create the layer with a larger input_dim."
                )
        return ops.take(self.weight.data(), x)

    def _extra_repr(self) -> str:
        return f"{self.input_dim} -> {self.output_dim}"
