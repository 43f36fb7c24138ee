"""Parameters and the deferred-state machine.

A :class:`Parameter` moves through three states:

``declared``
    some dimensions are unknown (shown as ``-1``); nothing can be allocated.
``shaped``
    every dimension is known, no storage exists yet.
``materialized``
    a native array (NumPy array, ``torch.nn.Parameter``, ``tf.Variable``) holds its values.

``initialize()`` records the *intent* (initializer, seed, dtype, device, backend) and
materializes at once every parameter whose shape is already known; the first forward pass
fills in the unknown dimensions and materializes the rest. Every change of state made inside
a :func:`transaction` is undone if the transaction raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import _progress
from . import init as _init
from . import random as _random
from ._dtypes import ITEMSIZE
from .errors import DeferredInitializationError, ShapeMismatchError
from .hookspec import MaterializeRequest

__all__ = ["DEFAULT_INIT", "Parameter", "ParameterDict", "transaction"]

#: The initializer used for a parameter that has none of its own when ``initialize()`` gives none.
DEFAULT_INIT: _init.Initializer = _init.XavierUniform()

Shape = tuple[int, ...]

# Serializes first calls and initialization across threads (materialization happens once).
LOCK = threading.RLock()


class _Epoch:
    """A counter bumped whenever any parameter changes state; blocks cache against it."""

    value = 0

    @classmethod
    def bump(cls) -> None:
        cls.value += 1


EPOCH = _Epoch

#: True while a model runs on TensorSpec inputs: shapes are inferred, nothing is materialized.
SHAPE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("deferral_shape_only", default=False)

_journal: contextvars.ContextVar[dict[int, tuple[Parameter, tuple[Any, ...]]] | None] = (
    contextvars.ContextVar("deferral_journal", default=None)
)


@contextlib.contextmanager
def transaction() -> Iterator[None]:
    """Undo every parameter state change made inside the block if it raises.

    Any exception counts, ``KeyboardInterrupt`` included. Nested transactions join the
    outermost one.
    """
    if _journal.get() is not None:
        yield
        return
    journal: dict[int, tuple[Parameter, tuple[Any, ...]]] = {}
    token = _journal.set(journal)
    try:
        with LOCK:
            yield
    except BaseException:
        for param, snapshot in reversed(list(journal.values())):
            param._restore(snapshot)
        EPOCH.bump()
        raise
    finally:
        _journal.reset(token)


@dataclass(frozen=True)
class Intent:
    """What ``initialize()`` recorded for one parameter."""

    backend: str
    dtype: str
    device: str
    seed: int
    path: str
    init: _init.Initializer


def _normalize_shape(shape: object, where: str) -> Shape:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{where}: expected a shape (a tuple of ints). Received: {shape!r}")
    out = []
    for d in shape:
        if d is None or d == -1 or d == 0:
            out.append(-1)
        elif isinstance(d, int) and not isinstance(d, bool) and d > 0:
            out.append(int(d))
        else:
            raise ValueError(
                f"{where}: every dimension must be a positive int, or -1/None for unknown. "
                f"Received: shape={tuple(shape)!r}"
            )
    return tuple(out)


class Parameter:
    """A named tensor of a block whose shape may be partly unknown until the first forward.

    Args:
        name: the local name (the block attribute); becomes the structural path
            (``"0.weight"``) when a model collects or initializes it.
        shape: the shape, with ``-1`` (or ``None``/``0``) for each dimension not known yet.
        init: the parameter's own initializer (wins over the one given to
            ``Block.initialize``); ``None`` uses that one, or :data:`DEFAULT_INIT`.
        trainable: whether optimizers should update it.

    Example:
        >>> from deferral import Parameter
        >>> w = Parameter("weight", shape=(256, -1))
        >>> w.shape, w.state
        ((256, -1), 'declared')
    """

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
        self._intent: Intent | None = None
        self._data: Any = None
        # The parameters declared together with this one (its block's); initialize()
        # materializes a parameter at once only when all of them have known shapes, so a
        # layer is materialized as a whole.
        self._group: Mapping[str, Parameter] | None = None

    # -- state -------------------------------------------------------------------------
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
        return f"Parameter {self.name} (shape={self._shape}, dtype={self.dtype}, {self.state})"

    # -- values ------------------------------------------------------------------------
    def data(self) -> Any:
        """Return the backend-native array holding the values.

        Raises:
            DeferredInitializationError: while the parameter is not materialized; the message
                says which step is missing.
        """
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
                f"Parameter {self.name!r} has not been initialized (shape {self._shape}): "
                f"initialize() was not called. {fix}."
            )
        if self.shape_known:
            return (
                f"Parameter {self.name!r} (shape {self._shape}) is deferred with its layer, "
                "whose other parameters' shapes are not known yet. Run one forward pass (net(x))."
            )
        return (
            f"Parameter {self.name!r} is deferred: initialize() was called, but its shape "
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
                f"Parameter {self.name!r}: set_data expects a NumPy array or a {backend.name!r} "
                f"array. Received: {type(value).__name__}"
            )
        import numpy as np

        array = np.asarray(value)
        shape = self._merged_shape(tuple(int(d) for d in array.shape), "set_data")
        if intent is None:
            intent = self._default_intent()
        from ._dtypes import round_to

        with np.errstate(invalid="ignore"):  # widening a signaling NaN warns; it stays a NaN
            values = array.astype(np.float64)
        self._replace(round_to(values, intent.dtype), shape, intent)

    def _replace(self, host: Any, shape: Shape, intent: Intent) -> None:
        """Store host values already in ``intent.dtype`` (uint16 bits for bfloat16) as the data."""
        from . import registry

        backend = registry.load_backend(intent.backend)
        native = backend.parameter_from_numpy(host.reshape(shape), intent.dtype, intent.device, self.trainable)
        with transaction():
            self._journal()
            self._intent, self._shape, self._data = intent, shape, native
            EPOCH.bump()

    def _default_intent(self, dtype: str = "float32", seed: int = 0) -> Intent:
        """The intent of a parameter given values without ``initialize()``: the default backend.

        ``seed`` records where the values came from when known (a checkpoint's metadata).
        """
        from . import registry

        backend = registry.load_backend(registry.get_backend())
        return Intent(backend.name, backend.canonical_dtype(dtype), backend.canonical_device(None), seed,
                      self.name, self._own_init or DEFAULT_INIT)

    # -- transitions (called by the core) ----------------------------------------------
    def _journal(self) -> None:
        journal = _journal.get()
        if journal is not None and id(self) not in journal:
            journal[id(self)] = (self, (self._shape, self._intent, self._data, self.name))

    def _restore(self, snapshot: tuple[Any, ...]) -> None:
        self._shape, self._intent, self._data, self.name = snapshot

    def _merged_shape(self, shape: Shape, where: str) -> Shape:
        if len(shape) != len(self._shape) or any(
            known not in (-1, got) for known, got in zip(self._shape, shape)
        ):
            raise ShapeMismatchError(
                f"Parameter {self.name!r}: {where} expected shape {self._shape} (-1 = any size). "
                f"Received shape {shape}."
            )
        return shape

    def _record(self, intent: Intent) -> None:
        """Record ``intent`` and materialize now if the shape is known."""
        self._journal()
        self._intent = intent
        self._data = None
        self.name = intent.path
        group = self._group.values() if self._group is not None else (self,)
        if all(p.shape_known for p in group):
            self._materialize()
        EPOCH.bump()

    def _infer_shape(self, shape: Shape, where: str) -> None:
        """Fix the unknown dimensions (during a forward pass) and materialize.

        ``where`` names the layer for messages. A materialized parameter is only checked.
        """
        if self._data is not None or self.shape_known:
            if shape != self._shape:
                raise ShapeMismatchError(
                    f"{where}: parameter {self.name!r} has shape {self._shape}, but the input "
                    f"needs {shape}. A materialized layer never re-initializes: feed inputs "
                    "of the size it was built for, or create a new layer."
                )
            if self._data is not None:
                return
        else:
            merged = self._merged_shape(shape, where)
            self._journal()
            self._shape = merged
            EPOCH.bump()
        if SHAPE_ONLY.get():
            return
        if self._intent is None:
            raise DeferredInitializationError(
                f"{where}: parameter {self.name!r} has not been initialized. Call "
                "net.initialize() before the first forward pass."
            )
        self._materialize()

    def _materialize(self) -> None:
        from . import registry

        intent = self._intent
        assert intent is not None and self.shape_known
        backend = registry.load_backend(intent.backend)
        request = MaterializeRequest(
            name=intent.path,
            shape=self._shape,
            dtype=intent.dtype,
            device=intent.device,
            trainable=self.trainable,
            key=_random.derive_key(intent.seed, intent.path),
            recipe=intent.init.recipe(self._shape),
        )
        self._journal()
        self._data = backend.materialize(request)
        EPOCH.bump()

    # -- copying: values travel as host arrays, so every backend's parameters pickle ---------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
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
                host, intent.dtype, intent.device, state.get("trainable", True)
            )
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
        force_reinit: bool = False,
        seed: int | None = None,
        dtype: object = "float32",
        device: str | None = None,
        backend: str | None = None,
        *,
        default_only: bool = False,
    ) -> int:
        """Record how these parameters will be initialized; materialize those with known shapes.

        Args:
            init: the initializer (or its name). Here it applies to every selected parameter;
                with ``default_only=True`` (what ``Block.initialize`` uses) only to parameters
                without an initializer of their own (a layer's ``weight_initializer``).
            force_reinit: re-initialize parameters that already are; without it they are left
                unchanged and a warning says so.
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
        from . import registry

        initializer = _init.create(init)
        bound = registry.load_backend(backend if backend is not None else registry.get_backend())
        dtype_name = bound.canonical_dtype(dtype)
        device_name = bound.canonical_device(device)
        if seed is None:
            seed = _random.get_seed()
        seed = _random.fresh_seed() if seed is None else _random._check_seed(seed)
        skipped = []
        group_known = [
            p for p in self._items.values()
            if p._intent is None or force_reinit
            if all(q.shape_known for q in (p._group.values() if p._group is not None else (p,)))
        ]
        total = sum(p.size or 0 for p in group_known) * ITEMSIZE[dtype_name]
        with _progress.task("deferral: materializing", total or None), transaction():
            for path, param in self._items.items():
                if param._intent is not None and not force_reinit:
                    skipped.append(path)
                    continue
                if default_only:
                    chosen = param._own_init or initializer or DEFAULT_INIT
                else:
                    chosen = initializer or param._own_init or DEFAULT_INIT
                param._record(Intent(bound.name, dtype_name, device_name, seed, param.name, chosen))
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
