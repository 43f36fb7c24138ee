"""Parameters and their deferred states.

A :class:`Parameter` moves through three states:

``declared``
    some dimensions are unknown (shown as ``-1``); nothing can be allocated.
``shaped``
    every dimension is known, no storage exists yet.
``materialized``
    a native array (NumPy array, ``torch.nn.Parameter``, ``tf.Variable``) holds its values.

``initialize()`` records the *intent* (initializer, seed, dtype, device, backend) and
materializes at once every parameter whose layer's shapes are all known; the first forward
pass completes the unknown dimensions (each layer's ``build`` step) and materializes the rest.
The transitions, the lock and the transaction live in :mod:`deferral._lifecycle`; every change
made inside a :func:`transaction` is undone if the transaction raises.
"""

from __future__ import annotations

import re
import warnings
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _functional, _lifecycle, _progress
from . import init as _init
from . import random as _random
from ._dtypes import ITEMSIZE
from ._lifecycle import SHAPE_ONLY, transaction
from .errors import DeferredInitializationError, ShapeMismatchError

if TYPE_CHECKING:
    from .nn import Block

__all__ = ["DEFAULT_INIT", "Intent", "Parameter", "ParameterDict", "transaction"]

#: The initializer used for a parameter that has none of its own when ``initialize()`` gives none.
DEFAULT_INIT: _init.Initializer = _init.XavierUniform()

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Intent:
    """What ``initialize()`` recorded for one parameter.

    ``path`` is the structural path the parameter had when it was initialized: with ``seed``
    it keys the parameter's value stream.
    """

    backend: str
    dtype: str
    device: str
    seed: int
    path: str
    init: _init.Initializer


def _size(value: object) -> int | None:
    """``value`` as a Python int if it is an integer (NumPy integers included), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    index = getattr(type(value), "__index__", None)
    if index is None or isinstance(value, float):
        return None
    return int(index(value))


def _normalize_shape(shape: object, where: str) -> Shape:
    if _size(shape) is not None:
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{where}: expected a shape (a tuple of ints). Received: {shape!r}")
    out = []
    for d in shape:
        n = None if d is None else _size(d)
        if d is None or n in (-1, 0):
            out.append(-1)
        elif n is not None and n > 0:
            out.append(n)
        else:
            raise ValueError(
                f"{where}: every dimension must be a positive int, or -1/None for unknown. "
                f"Received: shape={tuple(shape)!r}"
            )
    return tuple(out)


class Parameter:
    """A named tensor of a block whose shape may be partly unknown until the first forward.

    Args:
        name: the display name (usually the block attribute it is assigned to). The
            structural path that keys its values (``"0.weight"``) is :attr:`path`, given by
            the model the parameter belongs to.
        shape: the shape, with ``-1`` (or ``None``/``0``) for each dimension not known yet.
        init: the parameter's own initializer (wins over the one given to
            ``Block.initialize``); ``None`` uses that one, or :data:`DEFAULT_INIT`.
        trainable: whether optimizers should update it.

    Example:
        >>> from deferral import Parameter
        >>> w = Parameter("weight", shape=(256, -1))
        >>> w.shape, w.state
        ((256, -1), 'declared')
        >>> w.complete((256, 20))
        >>> w.shape, w.state
        ((256, 20), 'shaped')
    """

    name: str
    trainable: bool
    _shape: Shape
    _own_init: _init.Initializer | None
    _intent: Intent | None
    _data: Any
    _path: str
    # The parameters declared together with this one (its block's); initialize()
    # materializes a parameter at once only when all of them have known shapes, so a layer is
    # materialized as a whole.
    _group: Mapping[str, Parameter] | None
    # Blocks whose cached call state relies on this parameter (see deferral._lifecycle).
    _owners: weakref.WeakSet[Block]
    # Native containers showing this parameter (deferral.native), told of every change.
    _views: weakref.WeakSet[Any]

    def __init__(
        self,
        name: str = "param",
        shape: object = (),
        init: _init.InitializerLike = None,
        trainable: bool = True,
    ) -> None:
        self.name = name
        self._shape = _normalize_shape(shape, f"Parameter {name!r}")
        self._own_init = _init.create(init)
        self.trainable = bool(trainable)
        self._intent = None
        self._data = None
        self._path = name
        self._group = None
        self._owners = weakref.WeakSet()
        self._views = weakref.WeakSet()

    # -- state -------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The structural path (``"0.weight"``): where the parameter sits in its model.

        Read-only: the model assigns it; ``initialize()`` freezes it, since with the seed it
        keys the parameter's values (so ``net[1].initialize()`` gives the values
        ``net.initialize()`` would).
        """
        return self._path

    def _assign_path(self, path: str) -> None:
        """Called by the block holding the parameter; ``initialize()`` freezes the path."""
        if self._intent is None:
            self._path = path

    @property
    def shape(self) -> Shape:
        """The shape, ``-1`` for each dimension not known yet."""
        return self._shape

    @property
    def shape_known(self) -> bool:
        """True once every dimension is known."""
        return -1 not in self._shape

    @property
    def state(self) -> str:
        """``"declared"``, ``"shaped"`` or ``"materialized"``."""
        if self._data is not None:
            return "materialized"
        return "shaped" if self.shape_known else "declared"

    @property
    def initialized(self) -> bool:
        """True once the parameter is materialized (its values exist)."""
        return self._data is not None

    @property
    def init(self) -> _init.Initializer | None:
        """The recorded initializer: the one ``initialize()`` chose, else the parameter's own."""
        return self._intent.init if self._intent is not None else self._own_init

    @property
    def dtype(self) -> str:
        """The dtype name; ``"float32"`` until ``initialize()`` records another."""
        return self._intent.dtype if self._intent is not None else "float32"

    @property
    def device(self) -> str | None:
        """The device recorded by ``initialize()``, or ``None`` before it."""
        return self._intent.device if self._intent is not None else None

    @property
    def backend(self) -> str | None:
        """The backend the parameter is bound to by ``initialize()``, or ``None`` before it."""
        return self._intent.backend if self._intent is not None else None

    @property
    def seed(self) -> int | None:
        """The seed recorded by ``initialize()`` (drawn afresh when none was given)."""
        return self._intent.seed if self._intent is not None else None

    @property
    def size(self) -> int | None:
        """Number of elements, or ``None`` while the shape is not known."""
        if not self.shape_known:
            return None
        n = 1
        for d in self._shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int | None:
        """Bytes the values take in ``dtype``, or ``None`` while the shape is not known."""
        size = self.size
        return None if size is None else size * ITEMSIZE[self.dtype]

    def __repr__(self) -> str:
        return f"Parameter {self._path} (shape={self._shape}, dtype={self.dtype}, {self.state})"

    # -- shapes (a layer's build step) ---------------------------------------------------
    def complete(self, shape: object, where: str | None = None) -> None:
        """Fix the unknown dimensions to those of ``shape``; the known ones must match.

        Layers call it from ``build`` (see :meth:`deferral.nn.Block.build`); the core
        materializes the layer afterwards. Calling it again with the same shape does nothing.

        Raises:
            ShapeMismatchError: if ``shape`` contradicts a known dimension (``where``, the
                layer's description, is named in the message). Nothing changes then.
        """
        full = _normalize_shape(shape, f"Parameter {self._path!r}")
        if full == self._shape:
            return
        if -1 in full or len(full) != len(self._shape) or any(
            known not in (-1, got) for known, got in zip(self._shape, full)
        ):
            raise ShapeMismatchError(self._mismatch(full, where))
        _lifecycle.complete(self, full)

    def _mismatch(self, shape: Shape, where: str | None) -> str:
        if where is None:
            return (f"Parameter {self._path!r}: expected shape {self._shape} (-1 = any size). "
                    f"Received shape {shape}.")
        if self.shape_known:
            return (f"{where}: parameter {self._path!r} has shape {self._shape}, but the input needs "
                    f"{shape}. A materialized layer never re-initializes: feed inputs of the size it "
                    "was built for, or create a new layer.")
        return (f"{where}: parameter {self._path!r} expected shape {self._shape} (-1 = any size). "
                f"Received shape {shape}.")

    # -- values ------------------------------------------------------------------------
    def data(self) -> Any:
        """Return the backend-native array holding the values.

        Inside a call of ``deferral.functional``'s ``apply``, the value that call was given.

        Raises:
            DeferredInitializationError: while the parameter is not materialized; the message
                says which step is missing.
        """
        if _functional.active:  # some thread runs a functional call: is it this one?
            value = _functional.value_of(self)
            if value is not _functional.MISSING:
                return value
        data = self._data
        if data is not None:
            return data
        if self.shape_known and SHAPE_ONLY.get():
            from ._shapes import TensorSpec

            return TensorSpec(self._shape, self.dtype)
        raise DeferredInitializationError(self._why_not_materialized())

    def _why_not_materialized(self) -> str:
        if self._intent is None:
            fix = "Call net.initialize()"
            if not self.shape_known:
                fix += " and run one forward pass (net(x)), or give every input size (e.g. in_units=...)"
            return (
                f"Parameter {self._path!r} has not been initialized (shape {self._shape}): "
                f"initialize() was not called. {fix}."
            )
        if self.shape_known:
            return (
                f"Parameter {self._path!r} (shape {self._shape}) is deferred with its layer, "
                "whose other parameters' shapes are not known yet. Run one forward pass (net(x))."
            )
        return (
            f"Parameter {self._path!r} is deferred: initialize() was called, but its shape "
            f"{self._shape} is not known yet (-1 marks unknown dimensions). Run one forward pass "
            "(net(x)) so it can be inferred, or give the input size when creating the layer."
        )

    def set_data(self, value: Any) -> None:
        """Replace the values with ``value`` (a NumPy array or the bound backend's array).

        Unknown dimensions take the sizes of ``value``; known ones must match. A parameter
        that was never initialized is bound to the default backend with float32.

        Raises:
            ShapeMismatchError: if ``value``'s shape contradicts a known dimension.
            TypeError: if ``value`` is not an array.
        """
        from . import registry

        intent = self._intent
        backend = registry.load_backend(intent.backend if intent else registry.get_backend())
        if backend.is_native(value):
            value = backend.to_numpy(value)
        elif not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise TypeError(
                f"Parameter {self._path!r}: set_data expects a NumPy array or a {backend.name!r} "
                f"array. Received: {type(value).__name__}"
            )
        import numpy as np

        array = np.asarray(value)
        shape = tuple(int(d) for d in array.shape)
        if len(shape) != len(self._shape) or any(k not in (-1, g) for k, g in zip(self._shape, shape)):
            raise ShapeMismatchError(
                f"Parameter {self._path!r}: set_data expected shape {self._shape} (-1 = any size). "
                f"Received shape {shape}."
            )
        if intent is None:
            intent = self._default_intent()
        from ._dtypes import round_to

        with np.errstate(invalid="ignore"):  # widening a signaling NaN warns; it stays a NaN
            values = array.astype(np.float64)
        self._replace(round_to(values, intent.dtype), shape, intent, owned=True)  # a new array

    def _replace(self, host: Any, shape: Shape, intent: Intent, *, owned: bool = False) -> None:
        """Store host values already in ``intent.dtype`` (uint16 bits for bfloat16) as the data;
        ``owned``: ``host`` is new and nothing else refers to it (the backend may keep it)."""
        from . import registry

        backend = registry.load_backend(intent.backend)
        with transaction():
            native = _lifecycle.guarded(backend.parameter_from_numpy, host.reshape(shape), intent.dtype,
                                        intent.device, self.trainable, owned)
            _lifecycle.swap([(self, intent, shape, native)])

    # -- native containers (deferral.native) ---------------------------------------------
    def watch(self, view: Any) -> None:
        """Tell ``view`` of every change of this parameter's state, as it happens.

        For a backend's native container (:func:`deferral.native`): after each change
        (materialized, completed, new values swapped in, rolled back) the core calls
        ``view.parameter_changed(self)``, which must only read the parameter and must not
        raise. ``view`` is held weakly.
        """
        self._views.add(view)

    def adopt(self, value: Any, dtype: str, device: str) -> None:
        """Make ``value``, an array of the bound backend, the storage as it is (no copy),
        and record ``dtype`` and ``device`` as those of the values.

        For a backend's native container (:func:`deferral.native`): a ``torch.nn.Module``
        converted with ``.double()`` or ``.to("cuda")``, or given another tensor for a
        parameter (``load_state_dict(assign=True)``, ``torch.func.functional_call``), hands
        it over this way, so ``get_weights()`` and the next forward pass see it.
        ``value=None`` on a parameter not materialized yet changes only the dtype and device it
        will be materialized with.

        Raises:
            DeferredInitializationError: if the parameter was never initialized.
            ShapeMismatchError: if ``value``'s shape contradicts a known dimension.
            ValueError: for ``value=None`` on a materialized parameter, or a dtype or device
                the backend does not accept.
        """
        from dataclasses import replace

        from . import registry

        intent = self._intent
        if intent is None:
            raise DeferredInitializationError(self._why_not_materialized())
        shape = self._shape
        if value is not None:
            shape = tuple(int(d) for d in value.shape)
            if len(shape) != len(self._shape) or any(k not in (-1, g) for k, g in zip(self._shape, shape)):
                raise ShapeMismatchError(self._mismatch(shape, None))
        elif self._data is not None:
            raise ValueError(f"Parameter {self._path!r} is materialized: adopt() needs its new values")
        backend = registry.load_backend(intent.backend)
        new = replace(intent, dtype=backend.canonical_dtype(dtype), device=backend.canonical_device(device))
        if value is not None and self._data is not None and shape == self._shape and new == intent:
            _lifecycle.rebind(self, value)
            return
        with transaction():
            _lifecycle.swap([(self, new, shape, value)])

    def _default_intent(self, dtype: str = "float32", seed: int = 0) -> Intent:
        """The intent of a parameter given values without ``initialize()``: the default backend.

        ``seed`` records where the values came from when known (a checkpoint's metadata).
        """
        from . import registry

        backend = registry.load_backend(registry.get_backend())
        return Intent(backend.name, backend.canonical_dtype(dtype), backend.canonical_device(None), seed,
                      self._path, self._own_init or DEFAULT_INIT)

    # -- copying: values travel as host arrays, so every backend's parameters pickle ---------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_owners", None)
        state.pop("_views", None)
        if self._data is not None and self._intent is not None:
            from . import registry

            state["_data"] = ("host", registry.load_backend(self._intent.backend).to_numpy(self._data))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        data = state.get("_data")
        intent = state.get("_intent")
        if isinstance(data, tuple) and len(data) == 2 and data[0] == "host" and intent is not None:
            from . import registry
            from ._dtypes import round_to

            backend = registry.load_backend(intent.backend)
            host = round_to(data[1].astype("float64"), intent.dtype)
            state["_data"] = backend.parameter_from_numpy(
                host, intent.dtype, intent.device, state.get("trainable", True), True
            )
        state["_owners"] = weakref.WeakSet()
        state["_views"] = weakref.WeakSet()
        self.__dict__.update(state)


class ParameterDict(Mapping[str, Parameter]):
    """An ordered, read-only mapping of structural names to parameters.

    Returned by ``Block.collect_params()``; :meth:`initialize` initializes just these
    parameters, so groups can get different initializers.
    """

    def __init__(self, items: Mapping[str, Parameter] | None = None) -> None:
        self._items: dict[str, Parameter] = dict(items or {})

    def __getitem__(self, key: str) -> Parameter:
        try:
            return self._items[key]
        except KeyError:
            raise KeyError(
                f"no parameter named {key!r}. Known: {', '.join(self._items) or '(none)'}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        if not self._items:
            return "ParameterDict()"
        width = max(len(k) for k in self._items)
        lines = [
            f"  {k:<{width}}  shape={p.shape!s:<14} dtype={p.dtype:<8} {p.state}"
            for k, p in self._items.items()
        ]
        return "ParameterDict(\n" + "\n".join(lines) + "\n)"

    def select(self, pattern: str) -> ParameterDict:
        """The parameters whose names match the regular expression ``pattern`` (full match)."""
        regex = re.compile(pattern)
        return ParameterDict({k: p for k, p in self._items.items() if regex.fullmatch(k)})

    def initialize(
        self,
        init: _init.InitializerLike = None,
        *positional: object,
        force_reinit: bool = False,
        seed: int | None = None,
        dtype: object = "float32",
        device: str | None = None,
        backend: str | None = None,
        default_only: bool = False,
    ) -> int:
        """Record how these parameters will be initialized; materialize those with known shapes.

        Every argument after ``init`` is keyword-only.

        Args:
            init: the initializer (or its name). Here it applies to every selected parameter;
                with ``default_only=True`` (what ``Block.initialize`` uses) only to parameters
                without an initializer of their own (a layer's ``weight_initializer``).
            force_reinit: re-initialize parameters that already are; without it they are left
                unchanged and a warning says so. The new values are made first and swapped in
                at once: a forward pass running meanwhile sees all old or all new values.
            seed: the seed; default: :func:`deferral.seed`'s, else a fresh one (recorded in
                each parameter's ``.seed`` and returned).
            dtype: ``"float32"`` (default), ``"float64"``, ``"float16"`` or ``"bfloat16"``.
            device: the backend's device string; default: the backend's default device.
            backend: the backend to bind to; default: :func:`deferral.get_backend`.

        Returns:
            The seed used.

        Raises:
            InitializerError, BackendNotFoundError, TypeError, ValueError: for bad arguments,
                before anything changes.
        """
        refuse_positional("initialize", positional)
        from . import registry

        initializer = _init.create(init)
        bound = registry.load_backend(backend if backend is not None else registry.get_backend())
        dtype_name = bound.canonical_dtype(dtype)
        device_name = bound.canonical_device(device)
        if seed is None:
            seed = _random.get_seed()
        seed = _random.fresh_seed() if seed is None else _random._check_seed(seed)
        chosen = {path: p for path, p in self._items.items() if p._intent is None or force_reinit}
        intents = {
            path: Intent(bound.name, dtype_name, device_name, seed, param._path,
                         _choose(initializer, param, default_only))
            for path, param in chosen.items()
        }
        _apply(chosen, intents, ITEMSIZE[dtype_name])
        skipped = [path for path in self._items if path not in chosen]
        if skipped:
            warnings.warn(
                f"{len(skipped)} parameter(s) already initialized were left unchanged "
                f"({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}). "
                "Pass force_reinit=True to re-initialize them.",
                UserWarning,
                stacklevel=3 if default_only else 2,
            )
        return seed

    def get_weights(self) -> list[Any]:
        """Host NumPy copies of the values, in this dict's order.

        Raises:
            DeferredInitializationError: if a parameter is not materialized yet.
        """
        from . import registry

        out = []
        for param in self._items.values():
            data = param.data()
            out.append(registry.load_backend(param.backend or registry.get_backend()).to_numpy(data))
        return out


def refuse_positional(method: str, positional: tuple[object, ...]) -> None:
    """Raise a clear ``TypeError`` for the old positional form of ``initialize``."""
    if positional:
        raise TypeError(
            f"{method}() takes the initializer as its only positional argument; pass the others "
            f"by keyword: {method}(init, force_reinit=..., seed=..., dtype=..., device=..., "
            f"backend=...). Received {len(positional)} more positional argument(s): "
            f"{', '.join(repr(a) for a in positional)}"
        )


def _choose(initializer: _init.Initializer | None, param: Parameter, default_only: bool) -> _init.Initializer:
    if default_only:
        return param._own_init or initializer or DEFAULT_INIT
    return initializer or param._own_init or DEFAULT_INIT


def _layer_known(param: Parameter) -> bool:
    """Whether every parameter of ``param``'s layer has a known shape (it materializes as a whole)."""
    group = param._group.values() if param._group is not None else (param,)
    return not any(-1 in p._shape for p in group)


def _apply(params: Mapping[str, Parameter], intents: Mapping[str, Intent], itemsize: int) -> None:
    """Make the new values of every parameter whose layer is fully shaped, then swap all in."""
    ready = [(path, p, (p.size or 0) * itemsize) for path, p in params.items() if _layer_known(p)]
    total = sum(nbytes for _, _, nbytes in ready)
    with _progress.task("deferral: materializing", total or None), transaction():
        values = {}
        # SIGINT is held back per window of work, the swap included (it must not be torn).
        with _lifecycle.deferred_in_windows() as window:
            for path, param, nbytes in ready:
                values[path] = _lifecycle.new_values(param, intents[path], guard=False)
                window.step(nbytes)
            _lifecycle.swap([(p, intents[path], p._shape, values.get(path)) for path, p in params.items()])
