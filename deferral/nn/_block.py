"""Block and Sequential: the containers every model is built from."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from .. import _lifecycle, _progress, registry
from .. import ops as _ops
from .._lifecycle import SHAPE_ONLY, transaction
from .._shapes import TensorSpec
from ..errors import DeferredInitializationError
from ..parameter import Parameter, ParameterDict, refuse_positional

__all__ = ["Block", "Sequential"]

_B = TypeVar("_B", bound="Block")

# While deferral.summary() runs: [block, output spec] of every block call, parent first.
_recorder: contextvars.ContextVar[list[list[Any]] | None] = contextvars.ContextVar(
    "deferral_recorder", default=None
)


def _shapes_of(out: Any) -> Any:
    if isinstance(out, TensorSpec):
        return out.shape
    if isinstance(out, (tuple, list)):
        return tuple(_shapes_of(o) for o in out)
    return out


def _input_shapes(values: Any) -> Any:
    """What ``build`` receives for call arguments: an array's shape, a list's shapes, else the value."""
    if isinstance(values, (list, tuple)):
        return [_input_shapes(v) for v in values]
    if values is None or isinstance(values, (bool, int, float, complex, str, bytes, type)):
        return values
    try:
        return tuple(_ops.shape(values))
    except Exception:  # not an array of any loaded backend: build sees the value itself
        return values


# The mode a native object's call asks for (Keras' ``training`` argument), per thread and task.
# Blocks consult it only while some call has one active (``_overriding`` > 0, read without a
# context lookup), so ``block.training`` stays a plain read that torch.compile traces through.
_mode: contextvars.ContextVar[bool | None] = contextvars.ContextVar("deferral_mode", default=None)
_overriding = 0
_overriding_lock = threading.Lock()


@contextlib.contextmanager
def training_mode(training: bool) -> Iterator[None]:
    """Run every block called inside in training (``True``) or inference mode, in this thread only.

    For native objects whose framework passes the mode with each call (Keras' ``training``
    argument): the blocks' own modes (``train()``/``eval()``) are left as they are, and calls
    in other threads keep seeing them.
    """
    global _overriding
    with _overriding_lock:
        _overriding += 1
    token = _mode.set(bool(training))
    try:
        yield
    finally:
        _mode.reset(token)
        with _overriding_lock:
            _overriding -= 1


class _NativeCalls(threading.local):
    """Per thread: the block whose native container's call is running (``None``: none is).

    A thread-local object, not a context variable: ``torch.compile`` traces its reads and
    writes (a native call never awaits, so tasks sharing a thread cannot interleave in one).
    """

    entered: Block | None = None
    # The block whose call was just sent to its own container (routed_block() takes it).
    routed: Block | None = None


# Native containers that see every block call (torch: each child runs through its module's
# ``__call__``, so hooks fire). While a container's call runs, ``_calls.entered`` holds the
# block it entered: that block's own call computes, and every other block met on the way
# whose container asked for it (``_route``) is called through the container. ``_routing`` is
# set once such a container exists: a process that never made one pays one global test per call.
_routing = False
_calls = _NativeCalls()
# Counts structural changes (children or parameters added, replaced, removed) in any block;
# a native container that cannot follow them at once compares it (Keras).
structure_version = 0


def route_calls(block: Block, container: Callable[..., Any]) -> None:
    """Call ``block`` through ``container`` whenever a native container's call meets it.

    For a backend's native container (:func:`deferral.native`) that must see each child's
    call, such as a ``torch.nn.Module`` whose hooks fire in its ``__call__``: inside
    :func:`native_call`, ``block(*args)`` becomes ``container(*args)``, which must compute by
    calling :func:`native_call` on ``block`` in turn (the block it is for: when ``container``
    is the block's own native container, :func:`routed_block` gives it). Calls outside a
    native call (``net(x)``) are not routed and cost nothing more.
    """
    global _routing
    object.__setattr__(block, "_route", container)
    object.__setattr__(block, "_route_is_native", container is block._native)
    _routing = True


def routed_block(container: Any) -> Block | None:
    """The block whose call was just routed to ``container``, its own native container, else
    ``None`` (a direct call of the container).

    The container can then compute that block without reading its own reference to it: two
    paths to one object cost ``torch.compile`` a guard evaluated in Python on every call.
    """
    block = _calls.routed
    if block is not None and block._route is container and block._route_is_native:
        _calls.routed = None
        return block
    return None


def native_call(block: Block, args: tuple[Any, ...], kwargs: dict[str, Any],
                native: bool = False) -> Any:
    """Call ``block`` as its native container's call: the block computes, and its descendants
    run through their containers (:func:`route_calls`). A plain function (no context manager),
    so ``torch.compile`` traces it.

    ``native``: the container checked that every positional argument is already the bound
    backend's array, which the input converter would pass unchanged, so it is skipped (what
    ``torch.compile`` traces of a call is then what it guards on every call).
    """
    state = block._state
    if state is not None and state.leaf:  # a leaf calls no other block: nothing to route
        return block._compute(args, kwargs, native)
    outer = _calls.entered
    _calls.entered = block
    try:
        return block._compute(args, kwargs, native)
    finally:
        _calls.entered = outer


class _NotNative(TypeError):
    """An argument the bound backend cannot take as it is (a TensorSpec, another framework's array)."""


_serials = itertools.count(1)


class _CallState:
    """What a block's fast path needs once all its parameters exist: the input converter.

    ``serial`` numbers call states process-wide, so a native container can tell whether the
    state it last checked is still the block's by comparing two ints (which ``torch.compile``
    guards in C++, where comparing the objects would need a Python guard). ``leaf``: the block
    has no children (a change of children drops the state), so its calls route nothing.
    """

    __slots__ = ("convert", "leaf", "serial")

    def __init__(self, convert: Callable[[tuple[Any, ...]], tuple[Any, ...]], leaf: bool) -> None:
        self.convert = convert
        self.leaf = leaf
        self.serial = next(_serials)


class Block:
    """Base class of every layer and model.

    Subclass it, create children and parameters as attributes in ``__init__`` (after
    ``super().__init__()``), complete the parameters' unknown dimensions in :meth:`build`,
    and write ``forward`` with :mod:`deferral.ops`. Children and parameters get structural
    names from the attributes (``"hidden.weight"``).

    Calling a block runs ``forward``. The first call on a model with deferred parameters runs
    each layer's ``build`` with the shapes of its inputs and materializes the parameters, as
    one transaction: if it raises, every parameter is back in its previous state. Later calls
    check one flag and run ``forward``.

    Example:
        >>> import numpy as np
        >>> from deferral import nn, ops
        >>> class MLP(nn.Block):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.hidden = nn.Dense(8, activation="relu")
        ...         self.out = nn.Dense(2)
        ...     def forward(self, x):
        ...         return self.out(self.hidden(x))
        >>> net = MLP()
        >>> _ = net.initialize(seed=0)
        >>> net(np.ones((3, 4), dtype="float32")).shape
        (3, 2)
        >>> list(net.collect_params())
        ['hidden.weight', 'hidden.bias', 'out.weight', 'out.bias']
    """

    _training: bool
    _children: dict[str, Block]
    _params: dict[str, Parameter]
    _path: str
    _state: _CallState | None
    _backend_choice: str | None
    # The framework's own object for this model (deferral.native), and the backend it is for.
    _native: Any
    _native_backend: str | None
    # What calls of this block run through inside a native container's call (route_calls),
    # and whether that is the block's own native container.
    _route: Callable[..., Any] | None
    _route_is_native: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_path", "")
        object.__setattr__(self, "_state", None)
        object.__setattr__(self, "_backend_choice", None)
        object.__setattr__(self, "_native", None)
        object.__setattr__(self, "_native_backend", None)
        object.__setattr__(self, "_route", None)
        object.__setattr__(self, "_route_is_native", False)
        object.__setattr__(self, "_training", False)

    @property
    def training(self) -> bool:
        """Whether the block computes in training mode (Dropout drops, BatchNorm uses and updates
        batch statistics). Set it with :meth:`train` and :meth:`eval`; a native object's call
        may ask for another mode for its duration (see :func:`training_mode`)."""
        if _overriding:
            mode = _mode.get()
            if mode is not None:
                return mode
        return self._training

    # -- modes -------------------------------------------------------------------------
    def train(self: _B, mode: bool = True) -> _B:
        """Put this block and its descendants in training mode (``False``: inference). Returns self.

        Blocks start in inference mode, as in Keras and Gluon: Dropout is off and BatchNorm
        uses its running statistics until you call ``net.train()``; ``net.eval()`` switches
        back. Read the mode from ``block.training``.
        """
        for _, block in self._walk():
            object.__setattr__(block, "_training", bool(mode))
        return self

    def eval(self: _B) -> _B:
        """Put this block and its descendants in inference mode. Returns self."""
        return self.train(False)

    # -- structure ---------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_children" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes"
            )
        if name == "training":
            raise AttributeError(
                f"{self.describe()}: set the mode with .train() or .eval(), which also set it on "
                "every descendant"
            )
        removed = self._children.pop(name, None) is not None
        removed = self._params.pop(name, None) is not None or removed
        if isinstance(value, Block):
            self._children[name] = value
            value._name_subtree(f"{self._path}.{name}" if self._path else name)
            object.__setattr__(self, name, value)
            self._structure_changed()
        elif isinstance(value, Parameter):
            self.register_parameter(name, value)
        else:
            object.__setattr__(self, name, value)
            if removed:
                self._structure_changed()

    def __delattr__(self, name: str) -> None:
        self._children.pop(name, None)
        self._params.pop(name, None)
        object.__delattr__(self, name)
        self._structure_changed()

    def register_child(self, block: Block, name: str | None = None) -> Block:
        """Add ``block`` as a child under ``name`` (default: the next index) and return it."""
        if not isinstance(block, Block):
            raise TypeError(
                f"{type(self).__name__}: expected a deferral.nn.Block as child. "
                f"Received: {type(block).__name__}"
            )
        name = str(len(self._children)) if name is None else name
        self._children[name] = block
        block._name_subtree(f"{self._path}.{name}" if self._path else name)
        self._structure_changed()
        return block

    def register_parameter(self, name: str, param: Parameter) -> Parameter:
        """Add ``param`` under ``name`` (for names made at run time, e.g. per layer of an RNN).

        ``self.weight = Parameter(...)`` does the same for a fixed name: the parameter is also
        the attribute ``name``. Returns ``param``; :meth:`param` finds it again.
        """
        if not isinstance(param, Parameter):
            raise TypeError(
                f"{self.describe()}: expected a deferral.Parameter for {name!r}. "
                f"Received: {type(param).__name__}"
            )
        self._params[name] = param
        if param._group is None:
            param._group = self._params
        param._assign_path(f"{self._path}.{name}" if self._path else name)
        object.__setattr__(self, name, param)
        self._structure_changed()
        return param

    def param(self, name: str) -> Parameter:
        """This block's own parameter ``name`` (``KeyError`` naming the known ones if absent)."""
        try:
            return self._params[name]
        except KeyError:
            raise KeyError(
                f"{self.describe()} has no parameter {name!r}. Its parameters: "
                f"{', '.join(self._params) or '(none)'}"
            ) from None

    def _name_subtree(self, path: str) -> None:
        """Give this block the structural ``path`` and its descendants and parameters theirs.

        Paths are relative to the outermost block known so far; a shared block keeps the first
        path met in the walk. Parameters keep the path ``initialize()`` froze (it keys their
        values), so initializing a sub-block (``net[1].initialize()``) uses the same paths,
        and values, as initializing the whole model.
        """
        named: set[int] = set()
        base = f"{path}." if path else ""
        for prefix, block in self._walk():
            if id(block) in named:
                continue
            named.add(id(block))
            object.__setattr__(block, "_path", base + prefix[:-1] if prefix else path)
            for pname, param in block._params.items():
                param._assign_path(base + prefix + pname)

    def children(self) -> Iterator[tuple[str, Block]]:
        """``(name, block)`` for each direct child, in registration order."""
        return iter(list(self._children.items()))

    def _walk(self, prefix: str = "") -> Iterator[tuple[str, Block]]:
        yield prefix, self
        for name, child in self._children.items():
            yield from child._walk(f"{prefix}{name}.")

    def collect_params(self, select: str | None = None) -> ParameterDict:
        """Every parameter of this block and its descendants, by structural name.

        A shared parameter is listed once, under its first path. ``select`` is a regular
        expression the whole name must match (``".*weight"``). Parameters not initialized yet
        take the listed name as their :attr:`~deferral.Parameter.path`.
        """
        self._name_subtree(self._path)
        found: dict[str, Parameter] = {}
        seen: set[int] = set()
        for prefix, block in self._walk():
            for name, param in block._params.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    found[prefix + name] = param
        params = ParameterDict(found)
        return params.select(select) if select is not None else params

    def share_parameters(self: _B, shared: ParameterDict | dict[str, Parameter]) -> _B:
        """Use the parameters in ``shared`` wherever this block has one of the same name.

        Names are structural and relative to this block (``"weight"``, ``"0.bias"``); pass
        another block's ``collect_params()``. Returns ``self``.

        Example:
            >>> from deferral import nn
            >>> a, b = nn.Dense(4), nn.Dense(4)
            >>> _ = b.share_parameters(a.collect_params())
            >>> a.weight is b.weight
            True
        """
        for prefix, block in self._walk():
            for name in list(block._params):
                other = shared.get(prefix + name)
                if other is not None:
                    if not isinstance(other, Parameter):
                        raise TypeError(f"share_parameters: {prefix + name!r} is not a Parameter")
                    setattr(block, name, other)
        self._drop_call_state()
        return self

    # -- initialization ----------------------------------------------------------------
    def initialize(
        self,
        init: Any = None,
        *positional: object,
        force_reinit: bool = False,
        seed: int | None = None,
        dtype: object = "float32",
        device: str | None = None,
        backend: str | None = None,
    ) -> int:
        """Record how every parameter will be initialized and bind the model to a backend.

        Parameters whose layer's shapes are all known are materialized at once; the others
        wait for the first forward pass. ``init`` applies to parameters without an initializer
        of their own (biases of built-in layers start at zero); the default is
        :data:`deferral.parameter.DEFAULT_INIT` (Xavier uniform). Without ``force_reinit``,
        parameters initialized before are left unchanged, with a warning. Every argument
        after ``init`` is keyword-only.

        Returns the seed used (drawn afresh and recorded when neither ``seed`` nor
        :func:`deferral.seed` gave one). See :meth:`ParameterDict.initialize` for the arguments.
        """
        refuse_positional("initialize", positional)
        self._drop_call_state()
        # A block without parameters (an activation, Dropout) still runs on the chosen backend.
        object.__setattr__(self, "_backend_choice", backend)
        return self.collect_params().initialize(
            init, force_reinit=force_reinit, seed=seed, dtype=dtype, device=device, backend=backend,
            default_only=True,
        )

    def get_weights(self) -> list[Any]:
        """Host NumPy copies of every parameter, in ``collect_params()`` order.

        A parameter sharded over processes (FSDP2, tensor parallelism) is gathered whole by its
        backend: a collective, so every process must call ``get_weights()`` then.

        Raises:
            DeferredInitializationError: before the parameters are materialized.
        """
        return self.collect_params().get_weights()

    def parameters(self, trainable_only: bool = True) -> list[Any]:
        """The backend-native parameter objects, for the framework's optimizer.

        ``torch.optim.SGD(net.parameters(), lr=0.1)`` on PyTorch (``torch.nn.Parameter``);
        ``tape.gradient(loss, net.parameters())`` on TensorFlow (``tf.Variable``). A shared
        parameter appears once.

        Raises:
            DeferredInitializationError: before the parameters are materialized.
        """
        return [p.data() for p in self.collect_params().values() if p.trainable or not trainable_only]

    # -- checkpoints -------------------------------------------------------------------
    def save_parameters(self, path: str | os.PathLike[str]) -> None:
        """Save every parameter to ``path`` in the safetensors format (see :mod:`deferral._checkpoint`).

        Raises:
            DeferredInitializationError: if a parameter is not materialized yet.
        """
        from .._checkpoint import save_parameters

        save_parameters(self, path)

    def load_parameters(self, path: str | os.PathLike[str], allow_missing: bool = False,
                        ignore_extra: bool = False) -> dict[str, str]:
        """Load a safetensors file saved on any backend; returns its metadata.

        A deferred model is completed: unknown dimensions come from the file, and the
        parameters are materialized on the backend the model is bound to (the default
        backend if it was never initialized). All or nothing: on any problem nothing changes.

        Raises:
            CheckpointError: listing every problem (a truncated or corrupted file, missing or
                unexpected parameters, shape or dtype mismatches).
        """
        from .._checkpoint import load_parameters

        return load_parameters(self, path, allow_missing, ignore_extra)

    # -- building and calling ----------------------------------------------------------
    def build(self, *input_shapes: Any, **kwargs: Any) -> None:
        """Complete this block's own parameter shapes from the shapes of its inputs.

        The core calls it before a call that cannot take the fast path (the first call,
        shape inference) with one entry per argument of ``forward``: an array's shape as a
        tuple (``None`` for a size unknown while tracing), a list of shapes for a list of
        arrays, other values as they are. It also calls it to explain a failing call. So it
        must only check the shapes and :meth:`~deferral.Parameter.complete` parameters: with
        shapes that fit, a second call changes nothing. Raise
        :class:`~deferral.ShapeMismatchError` (or ``ValueError``) naming the block for inputs
        that do not fit. The default does nothing (containers, parameter-free layers).

        Example:
            >>> from deferral import Parameter, nn, ops
            >>> class Scale(nn.Block):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.alpha = Parameter("alpha", (-1,), init="ones")
            ...     def build(self, x_shape):
            ...         self.alpha.complete((x_shape[-1],), self.describe())
            ...     def forward(self, x):
            ...         return ops.multiply(x, self.alpha.data())
            >>> layer = Scale()
            >>> layer.infer_shape((2, 5))
            (2, 5)
            >>> layer.alpha.shape
            (5,)
        """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the block's output with :mod:`deferral.ops`. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def describe(self) -> str:
        """``TypeName 'path'`` for messages."""
        return f"{type(self).__name__} {self._path!r}" if self._path else type(self).__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _routing:  # inside a native call, another block's: through this block's container
            entered = _calls.entered
            if entered is not None and entered is not self:
                route = self._route
                if route is not None:
                    _calls.routed = self
                    return route(*args, **kwargs)
        return self._compute(args, kwargs)

    def _compute(self, args: tuple[Any, ...], kwargs: dict[str, Any], native: bool = False) -> Any:
        """The call itself: the fast path once the block has a call state, else the slow one.
        ``native``: the arguments are the bound backend's arrays already (see :func:`native_call`)."""
        state = self._state
        if state is not None:
            try:
                out = self.forward(*(args if native else state.convert(args)), **kwargs)
            except _NotNative:
                return self._slow_call(args, kwargs)
            except Exception as exc:
                self._explain(state, args, kwargs, exc)
                raise
            if self._state is state:
                return out
        return self._slow_call(args, kwargs)

    def _drop_call_state(self) -> None:
        """Forget the call state (the next call takes the slow path); a native container that
        keeps its own view of it is told (its ``call_state_dropped()``)."""
        object.__setattr__(self, "_state", None)
        native = self._native
        if native is not None and native is not self:
            dropped = getattr(native, "call_state_dropped", None)
            if dropped is not None:
                dropped()

    def _structure_changed(self) -> None:
        """A child or parameter was added, replaced or removed: drop the call state, and let the
        native container follow (its ``block_changed()``) or, lacking one, be made again."""
        global structure_version
        structure_version += 1
        self._drop_call_state()
        native = self._native
        if native is None or native is self:
            return
        follow = getattr(native, "block_changed", None)
        if follow is not None:
            follow()
        else:
            object.__setattr__(self, "_native", None)

    def _explain(self, state: _CallState, args: tuple[Any, ...], kwargs: dict[str, Any],
                 exc: Exception) -> None:
        """Raise a clear error if ``build`` says the inputs do not fit; else return."""
        try:
            shapes = _input_shapes(state.convert(args))
            kwshapes = {k: _input_shapes(v) for k, v in kwargs.items()}
        except Exception:
            return
        try:
            self.build(*shapes, **kwshapes)
        except Exception as clear:  # build refusing the inputs is the clearer error
            raise clear from exc

    def _slow_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if SHAPE_ONLY.get() or any(isinstance(a, TensorSpec) for a in args):
            return self._shape_call(args, kwargs)
        with _progress.task("deferral: materializing"), transaction():
            backend, dtype, device = self._binding(args)
            convert = _input_converter(self, backend, dtype, device)
            inputs = convert(args)
            self._build(inputs, kwargs)
            _lifecycle.checkpoint()  # Ctrl-C lands between blocks and rolls the first call back
            out = self.forward(*inputs, **kwargs)
            params = self.collect_params().values()
            if all(p.initialized for p in params):
                for p in params:
                    p._owners.add(self)
                object.__setattr__(self, "_state", _CallState(convert, not self._children))
        return out

    def _build(self, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Run ``build`` with the inputs' shapes, then materialize this block's own parameters."""
        if type(self).build is not Block.build:
            self.build(*_input_shapes(inputs), **{k: _input_shapes(v) for k, v in kwargs.items()})
        own = self._params.values()
        if not SHAPE_ONLY.get() and own and all(p.shape_known for p in own):
            _lifecycle.materialize(own)

    # -- shape-only execution ------------------------------------------------------------
    def infer_shape(self, *input_shapes: Any, dtype: str | None = None) -> Any:
        """Infer every parameter's shape from input shapes, allocating and computing nothing.

        Each argument is a shape tuple (``None`` for an unknown batch size) or a
        :class:`deferral.TensorSpec`, one per positional argument of ``forward``. Parameters
        go from ``declared`` to ``shaped``; an ``initialize()`` afterwards materializes them at
        once. Returns the output shape (a tuple, or a tuple of them for several outputs).

        Raises:
            ShapeMismatchError, ValueError: as the real forward pass would; the model is then
                exactly as before.

        Example:
            >>> from deferral import nn
            >>> net = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(10)])
            >>> net.infer_shape((None, 20))
            (None, 10)
            >>> net[0].weight.shape, net[0].weight.state
            ((256, 20), 'shaped')
        """
        specs = [s if isinstance(s, TensorSpec) else TensorSpec(tuple(s), dtype or "float32") for s in input_shapes]
        out = self._shape_call(tuple(specs), {})
        return _shapes_of(out)

    def _shape_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if SHAPE_ONLY.get():
            return self._shape_forward(args, kwargs)
        self.collect_params()  # assigns structural paths for messages and summaries
        token = SHAPE_ONLY.set(True)
        try:
            with transaction():
                return self._shape_forward(args, kwargs)
        finally:
            SHAPE_ONLY.reset(token)

    def _shape_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._build(args, kwargs)
        recorder = _recorder.get()
        if recorder is None:
            return self.forward(*args, **kwargs)
        entry: list[Any] = [self, None]
        recorder.append(entry)  # calls are listed parent first, in call order
        entry[1] = self.forward(*args, **kwargs)
        return entry[1]

    def _binding(self, args: tuple[Any, ...] = ()) -> tuple[Any, str | None, str | None]:
        """Return ``(backend, dtype, device)`` of this model's parameters.

        A block without parameters runs on the backend it was initialized for, else on the
        default backend, unless its first input is another loaded backend's array.
        """
        params = self.collect_params()
        intents = {(p.backend, p.dtype, p.device) for p in params.values() if p.backend}
        if not intents:
            if params:
                raise DeferredInitializationError(
                    f"{self.describe()}: call initialize() before the first forward pass; its "
                    f"parameters ({', '.join(list(params)[:4])}{', ...' if len(params) > 4 else ''}) "
                    "have not been initialized."
                )
            choice = self._backend_choice
            default = registry.load_backend(choice or registry.get_backend())
            if choice is None and args and args[0] is not None:
                # An input the default backend cannot take (another framework's tensor) picks
                # the loaded backend it belongs to.
                if default.to_native(args[0], None, default.info.default_device) is None:
                    for loaded in list(registry._backends.values()):
                        if loaded.is_native(args[0]):
                            return loaded, None, None
            return default, None, None
        backends = {b for b, _, _ in intents}
        if len(backends) > 1:
            raise ValueError(
                f"{self.describe()}: its parameters are bound to several backends "
                f"({', '.join(sorted(backends))}); initialize the whole model on one with "
                "initialize(backend=..., force_reinit=True)."
            )
        name, dtype, device = sorted(intents, key=str)[0]
        return registry.load_backend(str(name)), dtype, device

    # -- copying, printing -------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_state"] = None
        state["_native"] = state["_native_backend"] = state["_route"] = None
        state["_route_is_native"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "training" in state:  # pickled before the mode became a property
            state["_training"] = state.pop("training")
        state.setdefault("_native_backend", None)
        state.setdefault("_route", None)
        state.setdefault("_route_is_native", False)
        self.__dict__.update(state)

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self._extra_repr()}"
        if not self._children:
            return head + ")"
        lines = [head]
        for name, child in self._children.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


def _input_converter(block: Block, backend: Any, dtype: str | None, device: str | None) -> Any:
    """Build the function that turns call arguments into the backend's arrays.

    Runs on every call: it calls the backend's ``deferral_to_native`` implementation itself (no
    pluggy dispatch) and has a path of its own for the usual single argument.
    """
    to_native = backend._to_native
    device = device or backend.info.default_device
    name = block.describe()

    def refuse(arg: Any) -> _NotNative:
        if isinstance(arg, TensorSpec):
            return _NotNative(f"{name}: a TensorSpec takes the shape-only path")
        return _NotNative(_not_native(name, backend.name, arg))

    def convert(args: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(args) == 1:
            arg = args[0]
            native = None if arg is None or isinstance(arg, TensorSpec) else to_native(arg, dtype, device)
            if native is None:
                raise refuse(arg)
            return args if native is arg else (native,)
        out = []
        for i, arg in enumerate(args):
            native = None if arg is None or isinstance(arg, TensorSpec) else to_native(arg, dtype, device)
            if native is None:
                if i == 0 or isinstance(arg, TensorSpec):
                    raise refuse(arg)
                native = arg
            out.append(native)
        return tuple(out)

    return convert


def _not_native(name: str, bound: str, arg: Any) -> str:
    """Why ``arg`` cannot be the input of a model bound to ``bound`` (naming its own backend)."""
    other = next((b.name for b in list(registry._backends.values()) if b.name != bound and b.is_native(arg)), None)
    received = type(arg).__name__
    if other is not None:
        received = f"a {other!r} backend array ({received}), but the model is bound to {bound!r}"
    return (f"{name}: expected an array as input (a NumPy array or a {bound!r} backend array). "
            f"Received: {received}. Convert it first, e.g. numpy.asarray(x, dtype='float32').")


class Sequential(Block):
    """Chains blocks: the output of each is the input of the next.

    Accepts blocks as a list (Keras style) or through :meth:`add` (Gluon style); supports
    ``len``, iteration, indexing (a slice gives a new Sequential sharing the blocks) and
    nesting. Children are named ``"0"``, ``"1"``, ...

    Example:
        >>> from deferral import nn
        >>> net = nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(10)])
        >>> len(net), type(net[1]).__name__
        (2, 'Dense')
    """

    def __init__(self, blocks: list[Block] | tuple[Block, ...] | None = None) -> None:
        super().__init__()
        if blocks is not None:
            self.add(*blocks)

    def add(self, *blocks: Block) -> Sequential:
        """Append blocks (the same block may be added twice: its parameters are shared)."""
        for block in blocks:
            self.register_child(block)
        return self

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        for block in self._children.values():
            x = block(x)
        return x

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Block]:
        return iter(list(self._children.values()))

    # The blocks are of different types: an index gives Any (as a heterogeneous list would),
    # so ``net[0].weight`` type-checks; a slice gives a Sequential.
    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Sequential: ...
    def __getitem__(self, index: int | slice) -> Any:
        blocks = list(self._children.values())
        if isinstance(index, slice):
            return Sequential(blocks[index])
        try:
            return blocks[index]
        except IndexError:
            raise IndexError(
                f"Sequential has {len(blocks)} blocks; index {index} is out of range"
            ) from None

