"""Recurrent layers: RNN, GRU and LSTM (PyTorch gate semantics, MXNet Gluon parameter names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .. import init as _init
from .. import ops
from .._lifecycle import SHAPE_ONLY
from ..errors import ShapeMismatchError
from ..parameter import Parameter
from ._args import positive_int as _positive_int
from ._block import Block
from ._inputs import require_float, require_nonempty

__all__ = ["GRU", "LSTM", "RNN"]

_KINDS = ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")


def _fmt(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def to_backend(value: Any, param: Parameter, where: str, what: str, dtype: str | None) -> Any:
    """Convert an array argument that did not go through ``Block.__call__`` (a keyword, a list
    element, an input of a child layer) to the native array type of ``param``'s backend.

    Native arrays come back unchanged; a NumPy array goes to the parameter's device, cast to
    ``dtype`` if it is floating and ``dtype`` is given.

    Raises:
        TypeError: if ``value`` is not an array of NumPy or of that backend.
    """
    from .. import registry

    backend = registry.load_backend(param.backend) if param.backend else None
    if backend is None or SHAPE_ONLY.get():  # not initialized (the layer raises the clearer
        return value  # error), or shape-only execution (values are TensorSpecs)
    native = backend.to_native(value, dtype, param.device or backend.info.default_device)
    if native is None:
        raise TypeError(
            f"{where}: expected {what} as an array (a NumPy array or a {backend.name!r} backend "
            f"array). Received: {type(value).__name__}. Convert it first, e.g. "
            "numpy.asarray(value, dtype='float32')."
        )
    return native


class _RecurrentLayer(Block):
    """The shared machinery of :class:`RNN`, :class:`GRU` and :class:`LSTM`."""

    #: Gate blocks stacked in each weight's first axis.
    _gates: ClassVar[int] = 1
    #: State arrays per layer: ``[h]`` or ``[h, c]``.
    _num_states: ClassVar[int] = 1

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        batch_first: bool,
        input_size: int | None,
        i2h_weight_initializer: _init.InitializerLike,
        h2h_weight_initializer: _init.InitializerLike,
        i2h_bias_initializer: _init.InitializerLike,
        h2h_bias_initializer: _init.InitializerLike,
        bidirectional: bool,
    ) -> None:
        super().__init__()
        cls = type(self).__name__
        self.hidden_size = _positive_int(cls, "hidden_size", hidden_size)
        self.num_layers = _positive_int(cls, "num_layers", num_layers)
        if not isinstance(batch_first, bool):
            raise ValueError(
                f"{cls}: expected True (input (N, T, C)) or False (input (T, N, C)) for batch_first. "
                f"Received: batch_first={batch_first!r}"
            )
        self.batch_first = batch_first
        if input_size is not None:
            _positive_int(cls, "input_size", input_size)
        if not isinstance(bidirectional, bool):
            raise ValueError(f"{cls}: expected True or False for bidirectional. Received: bidirectional={bidirectional!r}")
        self.bidirectional = bidirectional
        inits = dict(zip(_KINDS, (i2h_weight_initializer, h2h_weight_initializer,
                                  i2h_bias_initializer, h2h_bias_initializer)))
        rows = self._gates * hidden_size
        names: list[str] = []
        for layer in range(num_layers):
            columns = (input_size or -1) if layer == 0 else hidden_size * self._directions
            shapes = {"i2h_weight": (rows, columns), "h2h_weight": (rows, hidden_size),
                      "i2h_bias": (rows,), "h2h_bias": (rows,)}
            for prefix in "lr"[: self._directions]:
                for kind in _KINDS:
                    name = f"{prefix}{layer}_{kind}"
                    self.register_parameter(name, Parameter(name, shapes[kind], init=inits[kind]))
                    names.append(name)
        self._names = tuple(names)

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    # -- sizes -----------------------------------------------------------------------------
    @property
    def input_size(self) -> int | None:
        """The input feature size, or ``None`` while it is not known."""
        n = self.param("l0_i2h_weight").shape[1]
        return None if n == -1 else n

    def _time_axis(self) -> int:
        return 1 if self.batch_first else 0

    # -- states ----------------------------------------------------------------------------
    def begin_state(self, batch_size: int, like: Any = None) -> list[Any]:
        """Zero initial states: ``[h]`` (RNN, GRU) or ``[h, c]`` (LSTM), each
        ``(num_layers * directions, batch_size, hidden_size)`` (directions: 2 if bidirectional).

        ``like`` gives the array type, dtype and device (default: the layer's parameters once
        materialized, else a NumPy array of the layer's dtype, which a call converts).

        Example:
            >>> from deferral import nn
            >>> [s.shape for s in nn.LSTM(8, num_layers=2).begin_state(3)]
            [(2, 3, 8), (2, 3, 8)]
        """
        _positive_int(type(self).__name__, "batch_size", batch_size)
        if like is None:
            param = self.param("l0_h2h_weight")
            if param.initialized:
                like = param.data()
            else:
                import numpy as np

                dtype = param.dtype if param.dtype in ("float16", "float32", "float64") else "float32"
                like = np.zeros((), dtype=dtype)
        shape = (self.num_layers * self._directions, batch_size, self.hidden_size)
        return [ops.zeros(shape, like) for _ in range(self._num_states)]

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: Any, states: Any = None) -> Any:
        """Run the layers over the whole sequence.

        Returns the top layer's outputs for every step, ``(N, T, hidden_size)`` (``(T, N,
        hidden_size)`` when ``batch_first=False``); with ``states`` given, also the states
        after the last step: ``(outputs, new_states)``.
        """
        require_float(self, x)
        shape = ops.shape(x)
        t_axis = self._time_axis()
        if not shape[t_axis]:  # empty, or unknown while tracing
            self.build(shape)
        initial: list[list[Any]] | None = None
        if states is not None:
            initial = self._prepare_states(states, shape)
        data = [self._params[name].data() for name in self._names]

        seq = x
        last: list[list[Any]] = [[] for _ in range(self._num_states)]
        previous: list[Any] = []
        for index in range(self.num_layers * self._directions):  # layer 0 forward, 0 reverse, 1 ...
            carry = [None] * self._num_states if initial is None else [s[index] for s in initial]
            reverse = self.bidirectional and index % 2 == 1
            outputs, carry = self._run(seq, t_axis, carry, data[4 * index: 4 * index + 4], reverse)
            if index % self._directions == self._directions - 1:  # every direction of this layer ran
                seq = ops.stack(outputs, t_axis) if self._directions == 1 else ops.concat(
                    [ops.stack(previous, t_axis), ops.stack(outputs, t_axis)], -1)
            else:
                previous = outputs
            for kept, value in zip(last, carry):
                kept.append(value)
        if initial is None:
            return seq
        return seq, [ops.stack(kept, 0) for kept in last]

    def _run(self, seq: Any, t_axis: int, carry: list[Any], weights: list[Any],
             reverse: bool) -> tuple[list[Any], list[Any]]:
        """One direction of one layer over the whole sequence: its outputs in time order and
        its final carry (the reverse direction reads the sequence from the end)."""
        wi, wh, bi, bh = weights
        steps = ops.unstack(ops.linear(seq, wi, bi), t_axis)
        outputs = []
        for xt in reversed(steps) if reverse else steps:
            carry = self._step(xt, carry, wh, bh)
            outputs.append(carry[0])
        return (outputs[::-1] if reverse else outputs), carry

    def _step(self, xt: Any, carry: list[Any], wh: Any, bh: Any) -> list[Any]:
        """One time step of one layer: ``xt`` is the input's projection ``x W_ih^T + b_ih``;
        ``carry`` is ``[h]`` or ``[h, c]`` (``None`` entries: zero states)."""
        raise NotImplementedError

    # -- build -------------------------------------------------------------------------------
    def build(self, shape: Any, states: Any = None) -> None:
        """Check the input's rank, time axis and features; complete ``input_size``."""
        where = self.describe()
        layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
        if len(shape) != 3:
            raise ValueError(
                f"{where}: expected input of rank 3 {layout} (batch_first={self.batch_first}). "
                f"Received shape {_fmt(shape)}. Add the missing axis, e.g. x.reshape(1, *x.shape) "
                "for one sequence."
            )
        steps = shape[self._time_axis()]
        if steps is None:
            raise ValueError(
                f"{where}: the sequence length is unknown (input shape {_fmt(shape)}, {layout}); a "
                "recurrent layer unrolls over time and needs it. Under tf.function give the time "
                "axis a size in the input_signature (or trace without one); with infer_shape() "
                "give it in the input shape."
            )
        require_nonempty(self, shape, (self._time_axis(), 2), ("time axis", "feature axis"),
                         f"A recurrent layer needs at least one step and one feature; the layout is {layout}.")
        features = shape[2]
        if features is None:
            raise ValueError(
                f"{where}: the input's feature size is {features} (shape {_fmt(shape)}); cannot "
                "infer input_size."
            )
        first = self.param("l0_i2h_weight")
        known = first.shape[1]
        if known != -1 and known != features:
            raise ShapeMismatchError(
                f"{where}: expected {known} input features (l0_i2h_weight shape "
                f"{first.shape}). Received input of shape {_fmt(shape)} {layout} with "
                f"{features}. Fix the input, the previous layer's size, or this layer's input_size."
            )
        for prefix in "lr"[: self._directions]:
            self.param(f"{prefix}0_i2h_weight").complete((self._gates * self.hidden_size, features), where)

    def _prepare_states(self, states: Any, shape: tuple[int | None, ...]) -> list[list[Any]]:
        """Convert and check ``states``; return, per state, its per-layer slices."""
        where = self.describe()
        spelled = "[h]" if self._num_states == 1 else "[h, c]"
        if self._num_states == 1 and not isinstance(states, (list, tuple)):
            states = [states]
        if not isinstance(states, (list, tuple)) or len(states) != self._num_states:
            got = f"{len(states)} arrays" if isinstance(states, (list, tuple)) else type(states).__name__
            raise ValueError(
                f"{where}: expected states as a list {spelled} of {self._num_states} array(s). "
                f"Received: {got}. Use layer.begin_state(batch_size) for zero states."
            )
        param = self.param("l0_h2h_weight")
        batch = shape[1 - self._time_axis()] if len(shape) == 3 else None
        expected = (self.num_layers * self._directions, batch, self.hidden_size)
        out = []
        for which, state in zip(("h", "c"), states):
            native = to_backend(state, param, where, f"the state {which}", param.dtype)
            found = ops.shape(native)
            if len(found) != 3 or any(e is not None and g is not None and e != g for e, g in zip(expected, found)):
                raise ShapeMismatchError(
                    f"{where}: expected the state {which} of shape (num_layers * directions, batch, hidden_size) "
                    f"= {_fmt(expected)}. Received shape {_fmt(found)}. Use "
                    "layer.begin_state(batch_size) for zero states of the right shape."
                )
            out.append(ops.unstack(native, 0))
        return out

    def _extra_repr(self) -> str:
        n = self.param("l0_i2h_weight").shape[1]
        layout = "NTC" if self.batch_first else "TNC"
        both = ", bidirectional" if self.bidirectional else ""
        return f"{n} -> {self.hidden_size}, {layout}, num_layers={self.num_layers}{both}"


class RNN(_RecurrentLayer):
    """Elman RNN: ``h_t = activation(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (one gate).

    Args:
        hidden_size: the size of the hidden state ``h`` (and of each output step).
        num_layers: layers stacked: layer ``l + 1`` reads the outputs of layer ``l``.
        activation: ``"tanh"`` (default) or ``"relu"``.
        batch_first: ``True`` (default, as Keras): inputs and outputs are ``(N, T, C)``.
            ``False`` (as PyTorch and MXNet): ``(T, N, C)``. States are
            ``(num_layers, N, hidden_size)`` either way.
        input_size: the input feature size ``C``, if known; with it, ``initialize()``
            materializes the layer at once. Otherwise it is inferred (``-1`` until then).
        i2h_weight_initializer: the ``l*_i2h_weight`` initializer (default: the one given to
            ``initialize()``, else Xavier uniform); likewise ``h2h_weight_initializer``.
        i2h_bias_initializer: the ``l*_i2h_bias`` initializer (default zeros); likewise
            ``h2h_bias_initializer``.
        bidirectional: also run each layer over the reversed sequence (as PyTorch's
            ``bidirectional=True``): that direction's parameters are ``r{l}_i2h_weight``,
            ``r{l}_h2h_weight``, ``r{l}_i2h_bias``, ``r{l}_h2h_bias`` (MXNet Gluon's names;
            PyTorch's ``*_l{l}_reverse``), registered after layer ``l``'s own; outputs are
            ``2 * hidden_size`` wide (forward, then reverse features), layers above read
            ``2 * hidden_size`` inputs, and states are ``(2 * num_layers, N, hidden_size)``,
            ordered layer 0 forward, layer 0 reverse, layer 1 forward, ...

    Parameters of layer ``l``: ``l{l}_i2h_weight`` ``(hidden_size, input)`` (input is
    ``input_size`` for layer 0, ``hidden_size`` above), ``l{l}_h2h_weight``
    ``(hidden_size, hidden_size)``, ``l{l}_i2h_bias`` and ``l{l}_h2h_bias``
    ``(hidden_size,)``: as many as PyTorch's ``nn.RNN``.

    ``layer(x)`` returns the top layer's output at every step, ``(N, T, hidden_size)``
    (``(T, N, hidden_size)`` if not ``batch_first``), from zero initial states;
    ``layer(x, states)`` returns ``(outputs, new_states)`` with ``states`` a list ``[h]``
    of ``(num_layers, N, hidden_size)`` arrays (see :meth:`begin_state`). Under
    ``tf.function`` the sequence length must be static.

    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> rnn = nn.RNN(16, num_layers=2)
        >>> rnn.l0_i2h_weight.shape, rnn.l1_i2h_weight.shape
        ((16, -1), (16, 16))
        >>> _ = rnn.initialize(seed=0)
        >>> rnn(np.ones((4, 7, 3), dtype="float32")).shape
        (4, 7, 16)
    """

    _gates = 1

    def __init__(
        self,
        hidden_size: int,
        num_layers: int = 1,
        activation: str = "tanh",
        batch_first: bool = True,
        input_size: int | None = None,
        i2h_weight_initializer: _init.InitializerLike = None,
        h2h_weight_initializer: _init.InitializerLike = None,
        i2h_bias_initializer: _init.InitializerLike = "zeros",
        h2h_bias_initializer: _init.InitializerLike = "zeros",
        bidirectional: bool = False,
    ) -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(
                f"RNN: expected 'tanh' or 'relu' for activation. Received: activation={activation!r}"
            )
        super().__init__(hidden_size, num_layers, batch_first, input_size, i2h_weight_initializer,
                         h2h_weight_initializer, i2h_bias_initializer, h2h_bias_initializer, bidirectional)
        self.activation = activation

    def _step(self, xt: Any, carry: list[Any], wh: Any, bh: Any) -> list[Any]:
        (h,) = carry
        pre = ops.add(xt, bh if h is None else ops.linear(h, wh, bh))
        return [ops.tanh(pre) if self.activation == "tanh" else ops.relu(pre)]

    def _extra_repr(self) -> str:
        return f"{super()._extra_repr()}, {self.activation}"


class GRU(_RecurrentLayer):
    """Gated recurrent unit, with PyTorch's gates (3: reset ``r``, update ``z``, new ``n``)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Args:
        hidden_size: the size of the hidden state ``h`` (and of each output step).
        num_layers: layers stacked: layer ``l + 1`` reads the outputs of layer ``l``.
        batch_first: ``True`` (default, as Keras): inputs and outputs are ``(N, T, C)``.
            ``False`` (as PyTorch and MXNet): ``(T, N, C)``. States are
            ``(num_layers, N, hidden_size)`` either way.
        input_size: the input feature size ``C``, if known; with it, ``initialize()``
            materializes the layer at once. Otherwise it is inferred (``-1`` until then).
        i2h_weight_initializer: the ``l*_i2h_weight`` initializer (default: the one given to
            ``initialize()``, else Xavier uniform); likewise ``h2h_weight_initializer``.
        i2h_bias_initializer: the ``l*_i2h_bias`` initializer (default zeros); likewise
            ``h2h_bias_initializer``.
        bidirectional: also run each layer over the reversed sequence (as PyTorch's
            ``bidirectional=True``): that direction's parameters are ``r{l}_i2h_weight``,
            ``r{l}_h2h_weight``, ``r{l}_i2h_bias``, ``r{l}_h2h_bias`` (MXNet Gluon's names;
            PyTorch's ``*_l{l}_reverse``), registered after layer ``l``'s own; outputs are
            ``2 * hidden_size`` wide (forward, then reverse features), layers above read
            ``2 * hidden_size`` inputs, and states are ``(2 * num_layers, N, hidden_size)``,
            ordered layer 0 forward, layer 0 reverse, layer 1 forward, ...

    Parameters of layer ``l``: ``l{l}_i2h_weight`` ``(3*hidden_size, input)`` (input is
    ``input_size`` for layer 0, ``hidden_size`` above), ``l{l}_h2h_weight``
    ``(3*hidden_size, hidden_size)``, ``l{l}_i2h_bias`` and ``l{l}_h2h_bias``
    ``(3*hidden_size,)``: as many as PyTorch's ``nn.GRU``.

    ``layer(x)`` returns the top layer's output at every step, ``(N, T, hidden_size)``
    (``(T, N, hidden_size)`` if not ``batch_first``), from zero initial states;
    ``layer(x, states)`` returns ``(outputs, new_states)`` with ``states`` a list ``[h]``
    of ``(num_layers, N, hidden_size)`` arrays (see :meth:`begin_state`). Under
    ``tf.function`` the sequence length must be static.
    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> gru = nn.GRU(8, batch_first=False, input_size=5)
        >>> gru.l0_i2h_weight.shape
        (24, 5)
        >>> _ = gru.initialize(seed=0)
        >>> out, [h] = gru(np.ones((6, 2, 5), dtype="float32"), gru.begin_state(2))
        >>> out.shape, h.shape
        ((6, 2, 8), (1, 2, 8))
    """

    _gates = 3

    def __init__(
        self,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = True,
        input_size: int | None = None,
        i2h_weight_initializer: _init.InitializerLike = None,
        h2h_weight_initializer: _init.InitializerLike = None,
        i2h_bias_initializer: _init.InitializerLike = "zeros",
        h2h_bias_initializer: _init.InitializerLike = "zeros",
        bidirectional: bool = False,
    ) -> None:
        super().__init__(hidden_size, num_layers, batch_first, input_size, i2h_weight_initializer,
                         h2h_weight_initializer, i2h_bias_initializer, h2h_bias_initializer, bidirectional)

    def _step(self, xt: Any, carry: list[Any], wh: Any, bh: Any) -> list[Any]:
        (h,) = carry
        i_r, i_z, i_n = ops.split(xt, 3, -1)
        h_r, h_z, h_n = ops.split(bh if h is None else ops.linear(h, wh, bh), 3, -1)
        r = ops.sigmoid(ops.add(i_r, h_r))
        z = ops.sigmoid(ops.add(i_z, h_z))
        n = ops.tanh(ops.add(i_n, ops.multiply(r, h_n)))
        # (1 - z) * n + z * h, written so that the zero state needs no array
        if h is None:
            return [ops.subtract(n, ops.multiply(z, n))]
        return [ops.add(n, ops.multiply(z, ops.subtract(h, n)))]


class LSTM(_RecurrentLayer):
    """Long short-term memory, with PyTorch's gate order (4: input, forget, cell, output)::

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')


    Args:
        hidden_size: the size of the hidden state ``h`` (and of each output step).
        num_layers: layers stacked: layer ``l + 1`` reads the outputs of layer ``l``.
        batch_first: ``True`` (default, as Keras): inputs and outputs are ``(N, T, C)``.
            ``False`` (as PyTorch and MXNet): ``(T, N, C)``. States are
            ``(num_layers, N, hidden_size)`` either way.
        input_size: the input feature size ``C``, if known; with it, ``initialize()``
            materializes the layer at once. Otherwise it is inferred (``-1`` until then).
        i2h_weight_initializer: the ``l*_i2h_weight`` initializer (default: the one given to
            ``initialize()``, else Xavier uniform); likewise ``h2h_weight_initializer``.
        i2h_bias_initializer: the ``l*_i2h_bias`` initializer (default zeros); likewise
            ``h2h_bias_initializer``.
        bidirectional: also run each layer over the reversed sequence (as PyTorch's
            ``bidirectional=True``): that direction's parameters are ``r{l}_i2h_weight``,
            ``r{l}_h2h_weight``, ``r{l}_i2h_bias``, ``r{l}_h2h_bias`` (MXNet Gluon's names;
            PyTorch's ``*_l{l}_reverse``), registered after layer ``l``'s own; outputs are
            ``2 * hidden_size`` wide (forward, then reverse features), layers above read
            ``2 * hidden_size`` inputs, and states are ``(2 * num_layers, N, hidden_size)``,
            ordered layer 0 forward, layer 0 reverse, layer 1 forward, ...

    Parameters of layer ``l``: ``l{l}_i2h_weight`` ``(4*hidden_size, input)`` (input is
    ``input_size`` for layer 0, ``hidden_size`` above), ``l{l}_h2h_weight``
    ``(4*hidden_size, hidden_size)``, ``l{l}_i2h_bias`` and ``l{l}_h2h_bias``
    ``(4*hidden_size,)``: as many as PyTorch's ``nn.LSTM``.

    ``layer(x)`` returns the top layer's output at every step, ``(N, T, hidden_size)``
    (``(T, N, hidden_size)`` if not ``batch_first``), from zero initial states;
    ``layer(x, states)`` returns ``(outputs, new_states)`` with ``states`` a list ``[h, c]``
    of ``(num_layers, N, hidden_size)`` arrays (see :meth:`begin_state`). Under
    ``tf.function`` the sequence length must be static.
    Example:
        >>> import numpy as np
        >>> from deferral import nn
        >>> lstm = nn.LSTM(8, num_layers=2)
        >>> _ = lstm.initialize(seed=0)
        >>> out, (h, c) = lstm(np.ones((2, 5, 3), dtype="float32"), lstm.begin_state(2))
        >>> out.shape, h.shape, c.shape, lstm.l0_i2h_weight.shape
        ((2, 5, 8), (2, 2, 8), (2, 2, 8), (32, 3))
    """

    _gates = 4
    _num_states = 2

    def __init__(
        self,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = True,
        input_size: int | None = None,
        i2h_weight_initializer: _init.InitializerLike = None,
        h2h_weight_initializer: _init.InitializerLike = None,
        i2h_bias_initializer: _init.InitializerLike = "zeros",
        h2h_bias_initializer: _init.InitializerLike = "zeros",
        bidirectional: bool = False,
    ) -> None:
        super().__init__(hidden_size, num_layers, batch_first, input_size, i2h_weight_initializer,
                         h2h_weight_initializer, i2h_bias_initializer, h2h_bias_initializer, bidirectional)

    def _step(self, xt: Any, carry: list[Any], wh: Any, bh: Any) -> list[Any]:
        h, c = carry
        gates = ops.add(xt, bh if h is None else ops.linear(h, wh, bh))
        i, f, g, o = ops.split(gates, 4, -1)
        i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
        ig = ops.multiply(i, g)
        c = ig if c is None else ops.add(ops.multiply(f, c), ig)
        return [ops.multiply(o, ops.tanh(c)), c]

