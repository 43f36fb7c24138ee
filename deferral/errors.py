"""The exceptions deferral raises.

Every error derives from :class:`DeferralError` and also from the built-in exception a
Python user would catch for the same mistake, so ``except ValueError`` keeps working.
Messages name the parameter or layer path, what was expected, what was received and how to
fix it.
"""

from __future__ import annotations

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
    "ShapeMismatchError",
]


class DeferralError(Exception):
    """Root of every exception raised by deferral."""

    # TensorFlow's AutoGraph re-raises unknown exceptions from a traced function as its own
    # error type; this attribute makes it pass deferral's errors through unchanged, so
    # ``except ShapeMismatchError`` works inside ``tf.function`` too.
    ag_pass_through = True


class DeferredInitializationError(DeferralError, RuntimeError):
    """A parameter's value was requested before it exists.

    Raised by :meth:`deferral.Parameter.data` (and ``get_weights``) while the parameter is
    *declared* or *shaped*: call ``initialize()`` and run one forward pass (or give every
    input size) first.
    """


class ShapeMismatchError(DeferralError, ValueError):
    """An input or a value does not fit a shape that is already fixed."""


class BackendNotFoundError(DeferralError, LookupError):
    """A backend name is unknown, or its framework is not installed."""


class CheckpointError(DeferralError, ValueError):
    """A parameter file (or mapping) cannot be loaded; the message lists every problem."""


class InitializerError(DeferralError, ValueError):
    """An initializer was created with impossible arguments, or cannot be resolved."""


class FunctionalUseError(DeferralError, ValueError):
    """The parameter values given to ``deferral.functional``'s ``apply`` do not fit the model."""


class InputDtypeError(DeferralError, TypeError):
    """A layer received an input of a dtype it does not compute with.

    Floating layers (Dense, convolutions, pooling, normalization, recurrent, attention and the
    activation layers) refuse integer and boolean inputs on every backend rather than guess a
    cast; ``Embedding`` refuses indices that are not integers.
    """


class InvalidIndexError(DeferralError, IndexError, ValueError):
    """Indices outside the range a layer accepts (``Embedding``: ``[0, input_dim)``).

    Also an ``IndexError`` (what PyTorch raises) and a ``ValueError`` (what deferral raised
    before it had this class).
    """


class EmptyInputError(DeferralError, ValueError):
    """An input axis a layer computes over is empty (no features, no time steps, no keys,
    an empty spatial axis, an empty batch for batch statistics)."""


class MaterializeError(DeferralError, ValueError):
    """``deferral.materialize`` cannot fill a model as asked (it already holds values, or its
    names or layout are not ones deferral can fill)."""
