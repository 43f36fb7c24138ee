"""The measured models, built three ways: deferral with every shape given, deferral deferred
(shapes inferred by the first call), and the framework's own equivalent.

Every case builds float32 parameters of the same shapes on both sides. A deferral ``Dense``
weight is ``(units, in_units)`` on every backend; Keras stores the same numbers as
``(in_units, units)`` (same element count, its own layout). The deferral side uses its
default initializers (Xavier/Glorot uniform weights, zero biases); the native side uses the
framework's own defaults (PyTorch: Kaiming uniform weights and uniform biases, Keras: Glorot
uniform and zeros, NumPy: ``Generator.uniform`` with the Glorot bound and zeros).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

__all__ = ["BACKENDS", "MLP", "Backend", "ResNet", "Spec", "available", "chapter_mlp", "convolutions_available", "load",
           "native_init_label", "quiet_deferral", "spec_from_dict", "square_mlp", "wide_mlp"]

#: The backends the suite knows, in the order it runs them.
BACKENDS = ("numpy", "torch", "tensorflow")


@dataclass(frozen=True)
class MLP:
    """A multilayer perceptron: ``in_features -> units[0] -> ... -> units[-1]``, ReLU between."""

    key: str
    label: str
    in_features: int
    units: tuple[int, ...]
    kind = "mlp"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(units, in_units)`` of every weight, in order."""
        ins = (self.in_features, *self.units[:-1])
        return list(zip(self.units, ins))

    @property
    def activations(self) -> list[str | None]:
        return ["relu"] * (len(self.units) - 1) + [None]

    @property
    def params(self) -> int:
        return sum(out * inp + out for out, inp in self.shapes)

    @property
    def param_bytes(self) -> int:
        return 4 * self.params

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "label": self.label, "in_features": self.in_features,
                "units": list(self.units), "params": self.params, "param_bytes": self.param_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLP:
        return cls(d["key"], d["label"], d["in_features"], tuple(d["units"]))

    def deferral_net(self, given: bool) -> Any:
        """The deferral model; with ``given`` every ``in_units`` is passed (materializes at initialize)."""
        from deferral import nn

        net = nn.Sequential()
        for (out, inp), act in zip(self.shapes, self.activations):
            net.add(nn.Dense(out, activation=act, in_units=inp if given else None))
        return net

    def example(self, batch: int) -> tuple[int, ...]:
        """The input shape for ``batch`` rows."""
        return (batch, self.in_features)


#: ResNet-18's convolutional layout: (channels as a multiple of the base width, blocks,
#: first stride) per stage.
_RESNET18 = ((1, 2, 1), (2, 2, 2), (4, 2, 2), (8, 2, 2))


@dataclass(frozen=True)
class ResNet:
    """(c): a ResNet-18-shaped network: 7x7 stem, four stages of two basic blocks (3x3 convs
    without bias, BatchNorm, a 1x1 projection where the shape changes), global average
    pooling and a 1000-way Dense head. Channels-first; at the default width 11.7M trainable
    parameters plus the BatchNorm running statistics (which every framework allocates too).
    """

    key: str = "c"
    label: str = "(c) ResNet-18-style"
    in_channels: int = 3
    classes: int = 1000
    image: int = 32  # side of the one image the deferred path's first call sees
    width: int = 64  # the stem's channels; ResNet-18 has 64 (the harness's own test uses less)
    kind = "resnet"

    def stages(self) -> list[tuple[int, int, int]]:
        return [(m * self.width, blocks, stride) for m, blocks, stride in _RESNET18]

    @property
    def layers(self) -> list[tuple[Any, ...]]:
        """Every layer that holds parameters, in order: ("conv", in, out, k, stride, pad), ("bn", c), ("dense", in, out)."""
        w = self.width
        out: list[tuple[Any, ...]] = [("conv", self.in_channels, w, 7, 2, 3), ("bn", w)]
        cin = w
        for cout, blocks, stride in self.stages():
            for b in range(blocks):
                s = stride if b == 0 else 1
                out += [("conv", cin, cout, 3, s, 1), ("bn", cout), ("conv", cout, cout, 3, 1, 1), ("bn", cout)]
                if s != 1 or cin != cout:
                    out += [("conv", cin, cout, 1, s, 0), ("bn", cout)]
                cin = cout
        out.append(("dense", cin, self.classes))
        return out

    @property
    def params(self) -> int:
        n = 0
        for layer in self.layers:
            if layer[0] == "conv":
                _, cin, cout, k, _, _ = layer
                n += cout * cin * k * k
            elif layer[0] == "bn":
                n += 4 * layer[1]  # gamma, beta, running mean, running variance
            else:
                n += layer[1] * layer[2] + layer[2]
        return n

    @property
    def param_bytes(self) -> int:
        return 4 * self.params

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "label": self.label, "in_channels": self.in_channels,
                "classes": self.classes, "image": self.image, "width": self.width, "params": self.params,
                "param_bytes": self.param_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResNet:
        return cls(d["key"], d["label"], d["in_channels"], d["classes"], d["image"], d["width"])

    def deferral_net(self, given: bool) -> Any:
        return _deferral_resnet(self, given)

    def example(self, batch: int) -> tuple[int, ...]:
        return (batch, self.in_channels, self.image, self.image)


#: Any model description the suite measures.
Spec = Union[MLP, ResNet]  # noqa: UP007 - a runtime alias on 3.10


def spec_from_dict(d: dict[str, Any]) -> Spec:
    """Rebuild a model description saved with ``to_dict()``."""
    return ResNet.from_dict(d) if d.get("kind") == "resnet" else MLP.from_dict(d)


def convolutions_available() -> str | None:
    """None when deferral exports what (c) needs; else what is missing, for the report."""
    from deferral import nn, ops

    missing = [f"nn.{n}" for n in ("Conv2D", "BatchNorm") if not hasattr(nn, n)]
    missing += [f"ops.{n}" for n in ("max_pool", "mean") if not hasattr(ops, n)]
    return ", ".join(missing) or None


def _deferral_resnet(spec: ResNet, given: bool) -> Any:
    """The deferral ResNet-18-style model (residual blocks written against deferral.ops)."""
    from deferral import nn, ops

    def known(c: int) -> int | None:
        return c if given else None

    class Basic(nn.Block):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(cout, 3, strides=stride, padding=1, use_bias=False, in_channels=known(cin))
            self.bn1 = nn.BatchNorm(in_channels=known(cout))
            self.conv2 = nn.Conv2D(cout, 3, padding=1, use_bias=False, in_channels=known(cout))
            self.bn2 = nn.BatchNorm(in_channels=known(cout))
            self.project = stride != 1 or cin != cout
            if self.project:
                self.down = nn.Conv2D(cout, 1, strides=stride, use_bias=False, in_channels=known(cin))
                self.down_bn = nn.BatchNorm(in_channels=known(cout))

        def forward(self, x: Any) -> Any:
            y = self.bn2(self.conv2(ops.relu(self.bn1(self.conv1(x)))))
            return ops.relu(ops.add(y, self.down_bn(self.down(x)) if self.project else x))

    class Stem(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2D(spec.width, 7, strides=2, padding=3, use_bias=False,
                                  in_channels=known(spec.in_channels))
            self.bn = nn.BatchNorm(in_channels=known(spec.width))

        def forward(self, x: Any) -> Any:
            return ops.max_pool(ops.relu(self.bn(self.conv(x))), (3, 3), (2, 2), ((1, 1), (1, 1)))

    class Head(nn.Block):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.fc = nn.Dense(spec.classes, in_units=known(cin))

        def forward(self, x: Any) -> Any:
            return self.fc(ops.mean(x, (2, 3)))

    net = nn.Sequential([Stem()])
    cin = spec.width
    for cout, blocks, stride in spec.stages():
        for b in range(blocks):
            net.add(Basic(cin, cout, stride if b == 0 else 1))
            cin = cout
    net.add(Head(cin))
    return net


def chapter_mlp() -> MLP:
    """(a): the chapter's ``Dense(256, relu) -> Dense(10)`` on 20 input features."""
    return MLP("a", "(a) chapter MLP 20-256-10", 20, (256, 10))


def wide_mlp(width: int = 4096, depth: int = 8) -> MLP:
    """(b): ``depth`` Dense layers of ``width`` units on ``width`` input features."""
    return MLP("b", f"(b) MLP {depth}x{width}", width, (width,) * depth)


def square_mlp(width: int, depth: int = 6) -> MLP:
    """A sweep point: ``depth`` layers of ``width`` units on ``width`` inputs."""
    return MLP(f"sweep-{depth}x{width}", f"MLP {depth}x{width}", width, (width,) * depth)


# -- the three ways ---------------------------------------------------------------------
def quiet_deferral() -> None:
    """Switch deferral's progress bar off (it would draw on a terminal during long runs)."""
    os.environ.setdefault("DEFERRAL_PROGRESS", "0")
    import deferral

    set_progress = getattr(deferral, "set_progress", None)
    if set_progress is not None:
        set_progress(False)


class Backend:
    """One backend's three ways of building a model and its inputs; subclasses per framework."""

    name = ""
    #: What the native materialization is, for the tables.
    native_init = ""
    #: What the native forward pass is, for the tables.
    native_forward = ""

    #: The same, for the convolutional case (c).
    native_init_conv = ""

    def native_label(self, spec: Spec) -> str:
        """What the native materialization of ``spec`` is, for the tables."""
        return self.native_init_conv if isinstance(spec, ResNet) else self.native_init

    def setup(self) -> None:
        """Import the framework (outside any timing)."""

    def tensor(self, array: Any) -> Any:
        """A native input holding ``array`` (float32)."""
        return array

    # deferral
    def deferral_given(self, spec: Spec) -> Callable[[], Any]:
        """Build the model with every ``in_units`` given and initialize it: materializes."""
        name = self.name

        def run() -> Any:
            net = spec.deferral_net(True)
            net.initialize(seed=0, backend=name, dtype="float32")
            return net

        return run

    def deferral_deferred(self, spec: Spec) -> Callable[[], Any]:
        """Build the model without input sizes, initialize it, and run the first call on one row."""
        import numpy as np

        name = self.name
        x = self.tensor(np.ones(spec.example(1), dtype=np.float32))

        def run() -> Any:
            net = spec.deferral_net(False)
            net.initialize(seed=0, backend=name, dtype="float32")
            net(x)
            return net

        return run

    # native
    def native_materialize(self, spec: Spec) -> Callable[[], Any]:
        raise NotImplementedError

    def extra_materialize(self, spec: Spec) -> dict[str, Callable[[], Any]]:
        """Further native ways, reported for information (no target)."""
        return {}

    def native_model(self, spec: MLP, weights: list[Any]) -> Callable[[Any], Any]:
        """The equivalent native model holding ``weights`` (deferral's host copies), as a callable."""
        raise NotImplementedError

    def extra_forward(self, spec: MLP, net: Any, weights: list[Any]) -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
        """Further (deferral, native) forward pairs reported for information."""
        return {}


class NumpyBackend(Backend):
    name = "numpy"
    native_init = "Generator.uniform(...).astype(float32)"
    native_init_conv = "Generator.uniform(...).astype(float32), ones/zeros for BatchNorm"
    native_forward = "NumPy matmuls (x @ W.T; += b; maximum in place)"

    def setup(self) -> None:
        import numpy  # noqa: F401

    def native_materialize(self, spec: Spec) -> Callable[[], Any]:
        import numpy as np

        if isinstance(spec, ResNet):
            return self._resnet(spec)

        def run() -> Any:
            rng = np.random.default_rng(0)
            params = []
            for out, inp in spec.shapes:
                bound = math.sqrt(6.0 / (inp + out))
                params.append(rng.uniform(-bound, bound, size=(out, inp)).astype(np.float32))
                params.append(np.zeros(out, dtype=np.float32))
            return params

        return run

    def _resnet(self, spec: ResNet) -> Callable[[], Any]:
        import numpy as np

        def run() -> Any:
            rng = np.random.default_rng(0)
            params: list[Any] = []
            for layer in spec.layers:
                if layer[0] == "conv":
                    _, cin, cout, k, _, _ = layer
                    bound = math.sqrt(6.0 / ((cin + cout) * k * k))
                    params.append(rng.uniform(-bound, bound, size=(cout, cin, k, k)).astype(np.float32))
                elif layer[0] == "bn":
                    c = layer[1]
                    params += [np.ones(c, np.float32), np.zeros(c, np.float32),
                               np.zeros(c, np.float32), np.ones(c, np.float32)]
                else:
                    _, inp, out = layer
                    bound = math.sqrt(6.0 / (inp + out))
                    params += [rng.uniform(-bound, bound, size=(out, inp)).astype(np.float32),
                               np.zeros(out, np.float32)]
            return params

        return run

    def extra_materialize(self, spec: Spec) -> dict[str, Callable[[], Any]]:
        import numpy as np

        if isinstance(spec, ResNet):
            return {}

        def run() -> Any:
            rng = np.random.default_rng(0)
            params = []
            for out, inp in spec.shapes:
                bound = math.sqrt(6.0 / (inp + out))
                w = rng.random((out, inp), dtype=np.float32)
                w *= 2.0 * bound
                w -= bound
                params.extend([w, np.zeros(out, dtype=np.float32)])
            return params

        return {"Generator.random(dtype=float32), scaled in place": run}

    def native_model(self, spec: MLP, weights: list[Any]) -> Callable[[Any], Any]:
        import numpy as np

        layers = [(weights[2 * i], weights[2 * i + 1], act) for i, act in enumerate(spec.activations)]

        def forward(x: Any) -> Any:
            for w, b, act in layers:
                y = x @ w.T
                y += b
                if act is not None:
                    np.maximum(y, 0, out=y)
                x = y
            return x

        return forward


class TorchBackend(Backend):
    name = "torch"
    native_init = "torch.nn.Linear construction (default init)"
    native_init_conv = "torch.nn.Conv2d / BatchNorm2d / Linear construction"
    native_forward = "torch.nn.Sequential(Linear, ReLU, ...)"

    def setup(self) -> None:
        import torch  # noqa: F401

    def tensor(self, array: Any) -> Any:
        import torch

        return torch.from_numpy(array.copy())

    def _sequential(self, spec: MLP) -> Any:
        import torch

        mods: list[Any] = []
        for (out, inp), act in zip(spec.shapes, spec.activations):
            mods.append(torch.nn.Linear(inp, out, dtype=torch.float32))
            if act is not None:
                mods.append(torch.nn.ReLU())
        return torch.nn.Sequential(*mods)

    def native_materialize(self, spec: Spec) -> Callable[[], Any]:
        if isinstance(spec, ResNet):
            return lambda: self._resnet(spec)
        return lambda: self._sequential(spec)

    def _resnet(self, spec: ResNet) -> Any:
        import torch

        mods: list[Any] = []
        for layer in spec.layers:
            if layer[0] == "conv":
                _, cin, cout, k, stride, pad = layer
                mods.append(torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False))
            elif layer[0] == "bn":
                mods.append(torch.nn.BatchNorm2d(layer[1]))
            else:
                mods.append(torch.nn.Linear(layer[1], layer[2]))
        return torch.nn.ModuleList(mods)

    def native_model(self, spec: MLP, weights: list[Any]) -> Callable[[Any], Any]:
        import torch

        model = self._sequential(spec)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for i, lin in enumerate(linears):
                lin.weight.copy_(torch.from_numpy(weights[2 * i]))
                lin.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        return model


class TensorflowBackend(Backend):
    name = "tensorflow"
    native_init = "keras Dense(...).build((None, n))"
    native_init_conv = "keras Conv2D / BatchNormalization / Dense .build(...)"
    native_forward = "keras.Sequential, called eagerly: model(x)"

    def setup(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

    def tensor(self, array: Any) -> Any:
        import tensorflow as tf

        return tf.constant(array)

    def native_materialize(self, spec: Spec) -> Callable[[], Any]:
        import keras

        if isinstance(spec, ResNet):
            return self._resnet(spec)

        def run() -> Any:
            layers = []
            for (out, inp), act in zip(spec.shapes, spec.activations):
                layer = keras.layers.Dense(out, activation=act, dtype="float32")
                layer.build((None, inp))
                layers.append(layer)
            return layers

        return run

    def _resnet(self, spec: ResNet) -> Callable[[], Any]:
        import keras

        def run() -> Any:
            layers = []
            for layer in spec.layers:  # Keras is channels-last: kernels (k, k, in, out)
                if layer[0] == "conv":
                    _, cin, cout, k, stride, _ = layer
                    built = keras.layers.Conv2D(cout, k, strides=stride, padding="same", use_bias=False,
                                                dtype="float32")
                    built.build((None, None, None, cin))
                elif layer[0] == "bn":
                    built = keras.layers.BatchNormalization(dtype="float32")
                    built.build((None, None, None, layer[1]))
                else:
                    built = keras.layers.Dense(layer[2], dtype="float32")
                    built.build((None, layer[1]))
                layers.append(built)
            return layers

        return run

    def extra_materialize(self, spec: Spec) -> dict[str, Callable[[], Any]]:
        import keras

        if isinstance(spec, ResNet):
            return {}

        def run() -> Any:
            layers = [keras.Input((spec.in_features,), dtype="float32")]
            for (out, _), act in zip(spec.shapes, spec.activations):
                layers.append(keras.layers.Dense(out, activation=act, dtype="float32"))
            return keras.Sequential(layers)

        return {"keras.Sequential([Input, Dense, ...])": run}

    def _keras_model(self, spec: MLP, weights: list[Any]) -> Any:
        import keras

        layers: list[Any] = [keras.Input((spec.in_features,), dtype="float32")]
        for (out, _), act in zip(spec.shapes, spec.activations):
            layers.append(keras.layers.Dense(out, activation=act, dtype="float32"))
        model = keras.Sequential(layers)
        model.set_weights([w.T if w.ndim == 2 else w for w in weights])
        return model

    def native_model(self, spec: MLP, weights: list[Any]) -> Callable[[Any], Any]:
        return self._keras_model(spec, weights)

    def extra_forward(self, spec: MLP, net: Any, weights: list[Any]) -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
        import tensorflow as tf

        model = self._keras_model(spec, weights)

        def ours(x: Any) -> Any:
            return net(x)

        def theirs(x: Any) -> Any:
            return model(x)

        # autograph=False: neither forward has Python control flow on tensors to convert.
        return {"tf.function (both sides)": (tf.function(ours, autograph=False),
                                             tf.function(theirs, autograph=False))}


_CLASSES: dict[str, type[Backend]] = {
    "numpy": NumpyBackend, "torch": TorchBackend, "tensorflow": TensorflowBackend,
}


def load(name: str) -> Backend:
    """The backend's case builders, framework imported."""
    backend = _CLASSES[name]()
    backend.setup()
    quiet_deferral()
    return backend


def native_init_label(name: str) -> str:
    """What the native materialization of backend ``name`` is (imports nothing)."""
    return _CLASSES[name].native_init


def available(name: str) -> bool:
    """Whether the framework behind ``name`` is installed (imports nothing)."""
    import importlib.util

    module = {"numpy": "numpy", "torch": "torch", "tensorflow": "tensorflow"}[name]
    return importlib.util.find_spec(module) is not None
