"""The dropout layer."""

from __future__ import annotations

from typing import Any

from .. import ops
from ._args import number as _number
from ._block import Block
from ._inputs import require_float

__all__ = ["Dropout"]


class Dropout(Block):
    """Inverted dropout: in training mode each element is zeroed with probability ``rate`` and
    the survivors are scaled by ``1 / (1 - rate)``; in inference mode (the default) the input
    passes unchanged.

    Training mode is ``net.train()`` (``net.eval()`` switches back). Masks come from the
    backend's own generator, so they differ between backends for the same seed: PyTorch's
    (``torch.manual_seed``), TensorFlow's (``tf.random.set_seed``), and on NumPy a generator
    seeded from the operating system at import (``deferral_numpy._ops_norm.seed_dropout(seed)``
    reseeds it).

    Args:
        rate: the probability of zeroing an element, in ``[0, 1)``.

    Raises (when called in training mode):
        InputDtypeError: for an integer or boolean input (in inference mode any input passes).

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> drop = nn.Dropout(0.5)
        >>> x = np.ones((2, 4), dtype="float32")
        >>> bool((drop(x) == x).all())  # inference: identity
        True
        >>> y = drop.train()(x)
        >>> sorted(set(y.ravel().tolist()) - {0.0, 2.0})
        []
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = _number("Dropout", "rate", rate, 0.0, 1.0, high_open=True)

    def forward(self, x: Any) -> Any:
        if self.rate == 0.0 or not self.training:
            return x
        require_float(self, x)
        return ops.dropout(x, self.rate)

    def _extra_repr(self) -> str:
        return f"rate={self.rate:g}"
