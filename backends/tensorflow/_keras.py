"""``deferral.native(net)`` on TensorFlow: a ``keras.Model`` over the model's own ``tf.Variable`` objects.

The Keras model mirrors the block tree: one Keras layer per block (named as the child is in
deferral, its class named after the block's), each holding its block's own parameters as Keras
variables whose storage *is* deferral's ``tf.Variable`` (Keras 3 adopts a ``tf.Variable`` given
as the initializer without copying it). Keras therefore lists, counts, trains and saves exactly
deferral's parameters; the computation is deferral's: calling the model (or any mirrored layer)
runs that block's ``forward``.

A deferred model is built by Keras' own build step (the first call, or ``model.build``):
deferral infers every shape from the input shape without computing anything and materializes
the parameters with their recorded intent, so the values are those ``net(x)`` would give.
Keras' ``training`` argument sets the mode of the call for its duration, in the calling thread
only (:func:`deferral.nn._block.training_mode`); ``None`` keeps the blocks' own mode
(``net.train()`` / ``net.eval()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras

from deferral import _native
from deferral.errors import DeferralError
from deferral.nn import Block, _block
from deferral.nn._block import training_mode
from deferral.parameter import Parameter

__all__ = ["DeferralModel", "NativeModelError", "native_model"]

_BACKEND = "tensorflow"


class NativeModelError(DeferralError, RuntimeError):
    """A Keras model made by ``deferral.native`` no longer fits its model: the model moved to
    another backend, or some parameters got new ``tf.Variable`` objects (a new dtype or device)."""


def native_model(block: Block) -> DeferralModel:
    """The ``keras.Model`` for ``block`` (a model bound to the TensorFlow backend)."""
    return DeferralModel(block)


def _shapes(input_shape: Any) -> list[tuple[int | None, ...]]:
    """One shape per positional argument of ``forward`` from what Keras' build receives."""
    if isinstance(input_shape, (list, tuple)) and input_shape and all(
        isinstance(s, (list, tuple)) for s in input_shape
    ):
        return [tuple(s) for s in input_shape]
    return [tuple(input_shape)]


def _dtype(block: Block) -> str | None:
    """The Keras dtype policy of a block: its parameters' dtype (NumPy inputs are cast to it)."""
    dtypes = {p.dtype for p in block.collect_params().values() if p.dtype is not None}
    return dtypes.pop() if len(dtypes) == 1 else None


def _arguments(inputs: Any) -> tuple[Any, ...]:
    """A list or tuple of inputs is passed as several positional arguments of ``forward``."""
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


class _Variables:
    """One Keras variable per deferral parameter, shared by every layer of a model (a shared
    parameter is one variable). Not a dict: Keras would track a dict's variables as the layer's."""

    def __init__(self, root: Block) -> None:
        self.root = root
        self.by_param: dict[int, keras.Variable] = {}

    def of(self, param: Parameter) -> keras.Variable:
        """The Keras variable over ``param``'s ``tf.Variable`` (made on first use, never copied)."""
        variable = self.by_param.get(id(param))
        if variable is None:
            data = param.data()
            variable = keras.Variable(data, dtype=data.dtype.name, trainable=param.trainable,
                                      name=param.path)
            self.by_param[id(param)] = variable
        return variable


class _Mirror:
    """What the model and its layers share: the block, its own parameters' variables, its children."""

    _deferral_block: Block
    _deferral_variables: _Variables
    _deferral_children: list[_BlockLayer]
    _deferral_weights: list[keras.Variable]
    # The core's count of structural changes when the tree was last seen to fit the blocks.
    _deferral_structure: int
    _deferral_layout: tuple[tuple[int, ...], tuple[int, ...]]
    built: bool  # Keras' flag (set by the Keras class this is mixed into)

    def _mirror(self, block: Block, variables: _Variables) -> None:
        self._deferral_block = block
        self._deferral_variables = variables
        # The block's own variables as an attribute (a Keras-tracked list): Keras counts and
        # trains them, and TensorFlow's object graph (checkpoints, SavedModel) finds them.
        self._deferral_weights = []
        self._deferral_children = [_layer(child, name, variables) for name, child in block.children()]
        self._deferral_structure = _block.structure_version
        self._deferral_layout = _layout(block)

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """The layers mirroring the block's children (``summary(expand_nested=True)`` shows them)."""
        return list(self._deferral_children)

    def _mirrors(self) -> Iterator[_Mirror]:
        yield self
        for child in self._deferral_children:
            yield from child._mirrors()

    def _adopt(self) -> None:
        """Track every materialized parameter of the tree; the tree is built once all are."""
        complete = True
        for mirror in self._mirrors():
            for param in mirror._deferral_block._params.values():  # the block's own, not its children's
                if param.initialized:
                    mirror._track(self._deferral_variables.of(param))
                else:
                    complete = False
        if complete:
            for mirror in self._mirrors():
                mirror.built = True

    def _track(self, variable: keras.Variable) -> None:
        if not any(v is variable for v in self._deferral_weights):
            self._deferral_weights.append(variable)

    def _build_block(self, input_shape: Any) -> None:
        self._check()
        _native.build(self._deferral_block, *_shapes(input_shape))
        self._adopt()

    def _check(self) -> None:
        """Refuse to run once the model left what this Keras model holds: another backend, or
        parameters whose ``tf.Variable`` was replaced (a new dtype, device or shape).

        The cached native object is dropped first, so ``deferral.native(net)`` makes a new one.
        """
        block, variables = self._deferral_block, self._deferral_variables
        params = block.collect_params()
        bound = sorted({p.backend for p in params.values() if p.backend} - {_BACKEND})
        replaced = [path for path, p in params.items() if id(p) in variables.by_param
                    and (not p.initialized or variables.by_param[id(p)].value is not p.data())]
        if not bound and not replaced:
            return
        object.__setattr__(variables.root, "_native", None)
        if bound:
            raise NativeModelError(
                f"{block.describe()}: this keras.Model was made by deferral.native() for backend "
                f"{_BACKEND!r}, but the model is now bound to {', '.join(map(repr, bound))}. A "
                f"Keras model computes with the {_BACKEND!r} backend only: initialize the model "
                f"with initialize(backend={_BACKEND!r}, force_reinit=True) again, or call "
                "deferral.native(net) again for the other backend's native object."
            )
        raise NativeModelError(
            f"{block.describe()}: parameter(s) {', '.join(replaced[:4])}"
            f"{', ...' if len(replaced) > 4 else ''} got a new tf.Variable (their dtype, device "
            "or shape changed), which this keras.Model does not hold. Call deferral.native(net) "
            "again for a keras.Model over the new variables (re-initializing or loading with "
            "the same dtype, device and shape writes into the existing variables instead)."
        )

    def _check_structure(self) -> None:
        """Refuse to run once a block of the tree got, lost or replaced a child or parameter
        (Keras tracks the layers and weights it was made with; a new model must be made).

        Compared only after the core counted a structural change somewhere (one integer test).
        """
        if _block.structure_version == self._deferral_structure:
            return
        changed = [m._deferral_block for m in self._mirrors() if _layout(m._deferral_block) != m._deferral_layout]
        if not changed:
            self._deferral_structure = _block.structure_version
            return
        object.__setattr__(self._deferral_variables.root, "_native", None)
        raise NativeModelError(
            f"{changed[0].describe()}: its children or parameters changed after deferral.native() "
            f"made this keras.Model ({len(changed)} block(s) changed), so Keras would not track or "
            "train what the model now computes with. Call deferral.native(net) again for a "
            "keras.Model of the new structure (and compile it again)."
        )

    def _run(self, inputs: Any, training: bool | None) -> Any:
        block = self._deferral_block
        self._check_structure()
        if block._state is None:  # a first call, or the parameters changed
            self._check()
        args = _arguments(inputs)
        if training is None or bool(training) == block.training:
            return block(*args)
        with training_mode(bool(training)):
            return block(*args)


class DeferralModel(_Mirror, keras.Model):
    """A deferral model as a ``keras.Model``: ``compile``/``fit``/``evaluate``/``predict``, ``summary``,
    ``save_weights``/``load_weights`` and SavedModel export, sharing the model's ``tf.Variable`` objects.

    ``model(x)`` runs the block's ``forward``; a list or tuple ``x`` gives several arguments.
    Made by :func:`deferral.native`; the block stays usable (``net(x)``) alongside.
    """

    def __init__(self, block: Block) -> None:
        super().__init__(dtype=_dtype(block))
        self._mirror(block, _Variables(block))
        self._adopt()

    def build(self, input_shape: Any) -> None:
        """Infer every unknown size from ``input_shape`` and materialize (deferral's recorded intent)."""
        self._build_block(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """The block's ``forward`` on ``inputs``, in training mode when ``training`` is true."""
        return self._run(inputs, training)

    # ``fit``, ``evaluate`` and ``predict`` reuse the functions Keras traced: check before.
    def make_train_function(self, force: bool = False) -> Any:
        self._check_structure()
        return super().make_train_function(force)

    def make_test_function(self, force: bool = False) -> Any:
        self._check_structure()
        return super().make_test_function(force)

    def make_predict_function(self, force: bool = False) -> Any:
        self._check_structure()
        return super().make_predict_function(force)


class _BlockLayer(_Mirror, keras.layers.Layer):
    """The Keras layer of one child block (holding its parameters); calling it runs that block."""

    def __init__(self, block: Block, name: str, variables: _Variables) -> None:
        super().__init__(name=name, dtype=_dtype(block))
        self._mirror(block, variables)

    def build(self, input_shape: Any) -> None:
        self._build_block(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self._run(inputs, training)


_classes: dict[type[Block], type[_BlockLayer]] = {}


def _layout(block: Block) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """What a mirror of ``block`` was made for: its children and own parameters (identities)."""
    return tuple(id(c) for _, c in block.children()), tuple(id(p) for p in block._params.values())


def _layer(block: Block, name: str, variables: _Variables) -> _BlockLayer:
    """A layer for ``block`` whose class bears the block's class name (what ``summary`` shows)."""
    kind = type(block)
    cls = _classes.get(kind)
    if cls is None:
        cls = _classes[kind] = type(kind.__name__, (_BlockLayer,), {"__module__": __name__})
    return cls(block, name, variables)
