"""Move weights between a deferral model and native framework code.

``to_torch_state_dict`` / ``load_torch_state_dict`` speak PyTorch's ``state_dict`` idiom
(name → tensor); ``to_tf_variables`` / ``load_tf_weights`` the TensorFlow one (name →
variable or tensor). Names are deferral's structural names; layouts are deferral's canonical
ones (a Dense weight is ``(units, in_units)``, as ``torch.nn.Linear``'s; a Keras ``Dense``
kernel is its transpose). Loading goes through the same all-or-nothing checks as
``load_parameters``. Frameworks are imported only when these functions are called.

Example:
    >>> import numpy as np
    >>> from deferral import interop, nn
    >>> net = nn.Sequential([nn.Dense(2, in_units=3)])
    >>> _ = net.initialize(seed=0)
    >>> arrays = interop.to_numpy_dict(net)
    >>> sorted(arrays), arrays["0.weight"].shape
    (['0.bias', '0.weight'], (2, 3))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import registry
from ._checkpoint import _host, load_arrays
from ._dtypes import canonical_dtype
from .errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np

    from .nn._block import Block

__all__ = [
    "load_numpy_dict",
    "load_tf_weights",
    "load_torch_state_dict",
    "to_numpy_dict",
    "to_tf_variables",
    "to_torch_state_dict",
]


_STRICT = ("strict=False", "strict=False")


def to_numpy_dict(net: Block) -> dict[str, np.ndarray]:
    """Host copies of every parameter by structural name (bfloat16 widened to float32)."""
    out = {}
    for name, param in net.collect_params().items():
        out[name] = registry.load_backend(param.backend or registry.get_backend()).to_numpy(param.data())
    return out


def _entries(mapping: Mapping[str, Any], convert: Any, what: str) -> dict[str, tuple[str, Any]]:
    arrays: dict[str, tuple[str, Any]] = {}
    problems = []
    for name, value in mapping.items():
        try:
            dtype, host = convert(value)
        except TypeError as exc:
            problems.append(f"{name}: {exc}")
            continue
        arrays[name] = (dtype, _host(host, dtype))
    if problems:
        raise CheckpointError(f"cannot load the {what}:\n  - " + "\n  - ".join(problems))
    return arrays


def _from_numpy(value: Any) -> tuple[str, Any]:
    import numpy as np

    array = np.asarray(value)
    return canonical_dtype(array.dtype), array


def load_numpy_dict(net: Block, mapping: Mapping[str, Any], strict: bool = True) -> None:
    """Load ``{structural name: array}`` (NumPy arrays in the parameters' dtypes); all or nothing.

    ``strict=False`` allows missing and ignores unexpected names.
    """
    load_arrays(net, _entries(mapping, _from_numpy, "arrays"), not strict, not strict, "the arrays", options=_STRICT)


def to_torch_state_dict(net: Block) -> dict[str, Any]:
    """``{structural name: torch.Tensor}``: the parameters themselves (detached) on the torch
    backend, CPU copies otherwise. ``torch.save`` it, or load it into native modules whose
    names you map."""
    import torch

    out: dict[str, Any] = {}
    for name, param in net.collect_params().items():
        data = param.data()
        if param.backend == "torch":
            out[name] = data.detach()
        else:
            host = registry.load_backend(param.backend).to_numpy(data)
            tensor = torch.from_numpy(host.copy())
            out[name] = tensor.to(torch.bfloat16) if param.dtype == "bfloat16" else tensor
    return out


def _from_torch(value: Any) -> tuple[str, Any]:
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, received {type(value).__name__}")
    dtype = canonical_dtype(value.dtype)
    tensor = value.detach().cpu()
    return dtype, (tensor.float() if dtype == "bfloat16" else tensor).numpy()


def load_torch_state_dict(net: Block, state_dict: Mapping[str, Any], strict: bool = True) -> None:
    """Load a ``{structural name: torch.Tensor}`` mapping into ``net`` (any backend); all or nothing."""
    load_arrays(net, _entries(state_dict, _from_torch, "state dict"), not strict, not strict, "the state dict", options=_STRICT)


def to_tf_variables(net: Block) -> dict[str, Any]:
    """``{structural name: tf.Variable}`` on the tensorflow backend, ``tf.Tensor`` copies otherwise."""
    import tensorflow as tf

    out: dict[str, Any] = {}
    for name, param in net.collect_params().items():
        data = param.data()
        if param.backend == "tensorflow":
            out[name] = data
        else:
            host = registry.load_backend(param.backend).to_numpy(data)
            out[name] = tf.cast(tf.constant(host), tf.bfloat16) if param.dtype == "bfloat16" else tf.constant(host)
    return out


def _from_tf(value: Any) -> tuple[str, Any]:
    import tensorflow as tf

    if not isinstance(value, (tf.Tensor, tf.Variable)):
        try:  # a Keras 3 variable, or anything TensorFlow can convert
            value = tf.convert_to_tensor(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"expected a tf.Tensor, tf.Variable or Keras variable, received {type(value).__name__}") from exc
    dtype = canonical_dtype(value.dtype.name)
    tensor = tf.cast(value, tf.float32) if dtype == "bfloat16" else tf.convert_to_tensor(value)
    return dtype, tensor.numpy()


def load_tf_weights(net: Block, weights: Mapping[str, Any], strict: bool = True) -> None:
    """Load ``{structural name: tf.Variable or tf.Tensor}`` into ``net`` (any backend); all or nothing."""
    load_arrays(net, _entries(weights, _from_tf, "weights"), not strict, not strict, "the weights", options=_STRICT)


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
