"""Small models the conformance checks build. Module-level, so they pickle by reference.

Each one is written against :mod:`deferral.ops` only, like any user block, so it runs on
whichever backend it is initialized on.
"""

from __future__ import annotations

from typing import Any

from .. import init as _init
from .. import ops
from ..nn import Block, Dense

__all__ = [
    "ConcatHead",
    "Interrupting",
    "Stack",
    "TwoStage",
    "TwoStageRenamed",
    "ThreeStage",
    "Twin",
]


class ConcatHead(Block):
    """``b(concat([a(x), x]))`` where ``b`` has ``in_units`` fixed at 8 + 4 = 12.

    Inputs with 4 features work; any other feature size materializes ``a`` first and then
    fails in ``b`` (a shape mismatch in the second layer of the first call).
    """

    def __init__(self) -> None:
        super().__init__()
        self.a = Dense(8, activation="tanh")
        self.b = Dense(3, in_units=12)

    def forward(self, x: Any) -> Any:
        return self.b(ops.concat([self.a(x), x], axis=-1))


class Interrupting(Block):
    """Two Dense layers, then ``KeyboardInterrupt`` while :attr:`interrupt` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.a = Dense(6, activation="relu")
        self.b = Dense(2)
        self.interrupt = True

    def forward(self, x: Any) -> Any:
        y = self.b(self.a(x))
        if self.interrupt:
            raise KeyboardInterrupt("simulated interrupt inside Interrupting.forward")
        return y


class Twin(Block):
    """``a(x) + b(x)`` where ``b`` uses ``a``'s parameters through ``share_parameters``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = Dense(5)
        self.b = Dense(5).share_parameters(self.a.collect_params())

    def forward(self, x: Any) -> Any:
        return ops.add(self.a(x), self.b(x))


class Stack(Block):
    """Three Dense layers using ``initializer``: the first with ``in_units=3`` given up front.

    Weight shapes are ``(5, 3)`` (known at ``initialize()``), then ``(7, 5)`` and ``(3, 7)``
    (inferred; the last has fewer rows than columns). Biases use ``initializer`` too unless
    it needs a matrix (``Orthogonal``), in which case they start at zero.
    """

    def __init__(self, initializer: _init.Initializer) -> None:
        super().__init__()
        bias: _init.Initializer = _init.Zeros() if isinstance(initializer, _init.Orthogonal) else initializer
        self.up = Dense(5, in_units=3, weight_initializer=initializer, bias_initializer=bias)
        self.mid = Dense(7, activation="tanh", weight_initializer=initializer, bias_initializer=bias)
        self.low = Dense(3, weight_initializer=initializer, bias_initializer=bias)

    def forward(self, x: Any) -> Any:
        return self.low(self.mid(self.up(x)))


class TwoStage(Block):
    """``head(encoder(x))``: the baseline of the value-independence check."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Dense(8, activation="relu")
        self.head = Dense(3)

    def forward(self, x: Any) -> Any:
        return self.head(self.encoder(x))


class ThreeStage(Block):
    """:class:`TwoStage` with an ``adapter`` inserted between encoder and head (8 -> 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Dense(8, activation="relu")
        self.adapter = Dense(8, activation="relu")
        self.head = Dense(3)

    def forward(self, x: Any) -> Any:
        return self.head(self.adapter(self.encoder(x)))


class TwoStageRenamed(Block):
    """:class:`TwoStage` with the head under another name: the control of the same check."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Dense(8, activation="relu")
        self.classifier = Dense(3)

    def forward(self, x: Any) -> Any:
        return self.classifier(self.encoder(x))
