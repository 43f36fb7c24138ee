"""Move weights between a deferral model and native framework code.

``to_torch_state_dict`` / ``load_torch_state_dict`` speak PyTorch's ``state_dict`` idiom
(name → tensor); ``to_tf_variables`` / ``load_tf_weights`` the TensorFlow one (name →
variable or tensor); ``to_numpy_dict`` / ``load_numpy_dict`` plain NumPy. Names are
deferral's structural names; layouts are deferral's canonical ones (a Dense weight is
``(units, in_units)``, as ``torch.nn.Linear``'s). Porting helpers translate the rest:
``load_torchvision_state_dict`` takes a torchvision model's ``state_dict()`` as it is, and
``to_keras_weights`` gives each layer's weights in Keras's layouts. ``save_safetensors`` /
``load_safetensors`` exchange NumPy arrays of any dtype (integer buffers, masks) through files.
Loading goes through the same all-or-nothing checks as ``load_parameters``; with
``strict=False`` names the model lacks are skipped whatever they hold. Frameworks are imported
only when these functions are called.

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

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import registry
from ._checkpoint import Source, load_into, to_host
from ._dtypes import tensor_dtype
from ._porting import TORCHVISION_MODELS, guess_torchvision_model, keras_weights, torchvision_names
from ._safetensors_read import read_safetensors
from ._safetensors_write import write_safetensors
from .errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np

    from .nn._block import Block

__all__ = [
    "TORCHVISION_MODELS",
    "load_numpy_dict",
    "load_safetensors",
    "load_tf_weights",
    "load_torch_state_dict",
    "load_torchvision_state_dict",
    "save_safetensors",
    "to_keras_weights",
    "to_numpy_dict",
    "to_tf_variables",
    "to_torch_state_dict",
    "torchvision_names",
]

_STRICT = ("strict=False", "strict=False")
#: ``describe(value) -> (dtype, shape)`` and ``host(value, dtype) -> array`` for one framework.
_Adapter = tuple[Callable[[Any], tuple[str, tuple[int, ...]]], Callable[[Any, str], Any]]


def to_numpy_dict(net: Block) -> dict[str, np.ndarray]:
    """Host copies of every parameter by structural name (bfloat16 widened to float32)."""
    out = {}
    for name, param in net.collect_params().items():
        out[name] = registry.load_backend(param.backend or registry.get_backend()).to_numpy(param.data())
    return out


def _load(net: Block, mapping: Mapping[str, Any], adapter: _Adapter, strict: bool, source: str) -> None:
    describe, host = adapter
    sources: dict[str, Source] = {}
    for name, value in mapping.items():
        try:
            dtype, shape = describe(value)
        except TypeError as exc:
            sources[name] = Source(None, (), f"{name}: {exc}")
            continue
        sources[name] = Source(dtype, shape)
    load_into(net, sources, lambda name: to_host(host(mapping[name], sources[name].dtype or ""),
                                                 sources[name].dtype or ""),
              allow_missing=not strict, ignore_extra=not strict, source=source, options=_STRICT)


def _numpy_describe(value: Any) -> tuple[str, tuple[int, ...]]:
    import numpy as np

    array = np.asarray(value)
    return tensor_dtype(array.dtype), tuple(array.shape)


_NUMPY: _Adapter = (_numpy_describe, lambda value, dtype: value)


def load_numpy_dict(net: Block, mapping: Mapping[str, Any], strict: bool = True) -> None:
    """Load ``{structural name: array}`` (NumPy arrays in the parameters' dtypes); all or nothing.

    ``strict=False`` allows missing names and skips unexpected ones.

    Raises:
        CheckpointError: listing every problem; ``net`` is then unchanged.
    """
    _load(net, mapping, _NUMPY, strict, "the arrays")


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
            host = registry.load_backend(param.backend or registry.get_backend()).to_numpy(data)
            tensor = torch.from_numpy(host.copy())
            out[name] = tensor.to(torch.bfloat16) if param.dtype == "bfloat16" else tensor
    return out


def _torch_describe(value: Any) -> tuple[str, tuple[int, ...]]:
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, received {type(value).__name__}")
    return tensor_dtype(value.dtype), tuple(value.shape)


def _torch_host(value: Any, dtype: str) -> Any:
    tensor = value.detach().cpu()
    return (tensor.float() if dtype == "bfloat16" else tensor).numpy()


def load_torch_state_dict(net: Block, state_dict: Mapping[str, Any], strict: bool = True) -> None:
    """Load a ``{structural name: torch.Tensor}`` mapping into ``net`` (any backend); all or nothing.

    ``strict=False`` allows missing names and skips unexpected ones of any dtype (int64
    counters, masks). For a torchvision model's own names use :func:`load_torchvision_state_dict`.

    Raises:
        CheckpointError: listing every problem; ``net`` is then unchanged.
    """
    _load(net, state_dict, (_torch_describe, _torch_host), strict, "the state dict")


def load_torchvision_state_dict(net: Block, state_dict: Mapping[str, Any], model: str | None = None,
                                strict: bool = True) -> None:
    """Load a torchvision model's ``state_dict()`` into the deferral model of the same architecture.

    ``model`` is one of :data:`TORCHVISION_MODELS` (``"resnet18"``, ``"vgg11"``); by default the
    one whose names the state dict has. Names are translated with :func:`torchvision_names`;
    BatchNorm's ``num_batches_tracked`` counters are dropped (deferral's BatchNorm uses its
    fixed ``momentum``: torch's ``momentum=0.1`` is deferral's default ``0.9``). All or nothing.

    Raises:
        CheckpointError: listing torchvision names the map does not know (unless
            ``strict=False``) and every missing, mis-shaped or mis-typed parameter.

    Example:
        >>> from deferral import interop
        >>> interop.torchvision_names("resnet18")["4.bn1.gamma"]
        'layer1.0.bn1.weight'
    """
    counters = {n for n in state_dict if n.rsplit(".", 1)[-1] == "num_batches_tracked"}
    model = model or guess_torchvision_model(set(state_dict) - counters)
    ours = {theirs: mine for mine, theirs in torchvision_names(model).items()}
    unknown = [n for n in state_dict if n not in ours and n not in counters]
    if unknown and strict:
        raise CheckpointError(
            f"cannot load the torchvision {model} state dict into {net.describe()}:\n  - names the "
            f"{model} map does not know: {', '.join(unknown)} (a different architecture? pass "
            "strict=False to skip them)"
        )
    renamed = {ours[n]: v for n, v in state_dict.items() if n in ours}
    _load(net, renamed, (_torch_describe, _torch_host), strict, f"the torchvision {model} state dict")


def to_keras_weights(net: Block) -> dict[str, list[np.ndarray]]:
    """``{block path: [arrays]}`` in Keras's layouts and weight order, for ``layer.set_weights``.

    ``Dense`` kernels are transposed to ``(in, units)``; convolution kernels go from
    ``(out, in, *kernel)`` to ``(*kernel, in, out)``; ``BatchNorm`` gives ``[gamma, beta,
    moving_mean, moving_variance]``; a one-layer ``LSTM`` gives ``[kernel, recurrent_kernel,
    bias]`` (the two biases summed); a one-layer ``GRU`` the same with gates reordered from
    PyTorch's (r, z, n) to Keras's (z, r, h) and a ``(2, 3 * units)`` bias, for Keras's
    ``reset_after=True``. Build the Keras layers with deferral's settings: BatchNorm's
    ``epsilon`` (deferral 1e-5, Keras 1e-3) and ``momentum`` (the same convention in both).

    Raises:
        CheckpointError: for a block without a layout rule (``MultiHeadAttention``, multi-layer
            recurrent layers), naming it.
    """
    return keras_weights(net, to_numpy_dict(net))


def to_tf_variables(net: Block) -> dict[str, Any]:
    """``{structural name: tf.Variable}`` on the tensorflow backend, ``tf.Tensor`` copies otherwise."""
    import tensorflow as tf

    out: dict[str, Any] = {}
    for name, param in net.collect_params().items():
        data = param.data()
        if param.backend == "tensorflow":
            out[name] = data
        else:
            host = registry.load_backend(param.backend or registry.get_backend()).to_numpy(data)
            out[name] = tf.cast(tf.constant(host), tf.bfloat16) if param.dtype == "bfloat16" else tf.constant(host)
    return out


def _tf_tensor(value: Any) -> Any:
    import tensorflow as tf

    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value
    try:  # a Keras 3 variable, or anything TensorFlow can convert
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"expected a tf.Tensor, tf.Variable or Keras variable, received {type(value).__name__}") from exc


def _tf_describe(value: Any) -> tuple[str, tuple[int, ...]]:
    tensor = _tf_tensor(value)
    return tensor_dtype(tensor.dtype.name), tuple(int(d) for d in tensor.shape)


def _tf_host(value: Any, dtype: str) -> Any:
    import tensorflow as tf

    tensor = _tf_tensor(value)
    return (tf.cast(tensor, tf.float32) if dtype == "bfloat16" else tf.convert_to_tensor(tensor)).numpy()


def load_tf_weights(net: Block, weights: Mapping[str, Any], strict: bool = True) -> None:
    """Load ``{structural name: tf.Variable or tf.Tensor}`` into ``net`` (any backend); all or nothing.

    Raises:
        CheckpointError: listing every problem; ``net`` is then unchanged.
    """
    _load(net, weights, (_tf_describe, _tf_host), strict, "the weights")


def save_safetensors(path: str | os.PathLike[str], arrays: Mapping[str, Any],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write NumPy arrays of any checkpoint dtype (floating, ``int8``..``uint64``, ``bool``,
    ``complex64``; ``bfloat16`` arrays of ml_dtypes as BF16) to a safetensors file, atomically.

    Raises:
        CheckpointError: for an array of another dtype, or a file that cannot be written.
    """
    import numpy as np

    tensors = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        try:
            dtype = tensor_dtype(array.dtype)
        except TypeError as exc:
            raise CheckpointError(f"save_safetensors: {name}: {exc}") from None
        tensors[name] = (dtype, to_host(array, dtype))
    write_safetensors(path, tensors, dict(metadata or {}))


def load_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file as NumPy arrays (bfloat16 widened to float32 exactly),
    and its metadata.

    Raises:
        CheckpointError: naming the file and the problem (see :meth:`deferral.nn.Block.load_parameters`).
    """
    from ._dtypes import bfloat16_bits_to_float32

    arrays, metadata = read_safetensors(path)
    return {name: bfloat16_bits_to_float32(a) if dtype == "bfloat16" else a
            for name, (dtype, a) in arrays.items()}, metadata


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
