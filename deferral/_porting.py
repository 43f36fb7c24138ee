"""Name maps and layout rules for porting weights: torchvision state dicts in, Keras weights out.

torchvision and deferral's reference models hold the same tensors in the same layouts (NCHW
convolutions, ``(out, in)`` dense weights); only the names differ, and torchvision's
BatchNorm carries an int64 ``num_batches_tracked`` counter that deferral's BatchNorm (a fixed
momentum, never the cumulative average torch uses with ``momentum=None``) has no use for.
Keras holds the same tensors in other layouts; :func:`keras_weights` transposes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import nn
from .errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np

    from .nn._block import Block

__all__ = ["TORCHVISION_MODELS", "keras_weights", "torchvision_names"]

_BN = (("gamma", "weight"), ("beta", "bias"), ("running_mean", "running_mean"), ("running_var", "running_var"))


def _conv_bn(ours: str, theirs: str, conv: str, bn: str) -> Iterator[tuple[str, str]]:
    yield f"{ours}{conv}.weight", f"{theirs}{conv}.weight"
    for mine, torch_name in _BN:
        yield f"{ours}{bn}.{mine}", f"{theirs}{bn}.{torch_name}"


def _resnet18() -> Iterator[tuple[str, str]]:
    """``deferral.models.resnet18``: Sequential [conv, bn, relu, pool, 8 blocks, pool, flatten, dense]."""
    yield "0.weight", "conv1.weight"
    yield from ((f"1.{m}", f"bn1.{t}") for m, t in _BN)
    for stage in range(4):
        for block in range(2):
            ours, theirs = f"{4 + 2 * stage + block}.", f"layer{stage + 1}.{block}."
            yield from _conv_bn(ours, theirs, "conv1", "bn1")
            yield from _conv_bn(ours, theirs, "conv2", "bn2")
            if stage > 0 and block == 0:
                yield from _conv_bn(ours + "downsample.", theirs + "downsample.", "0", "1")
    yield from (("14.weight", "fc.weight"), ("14.bias", "fc.bias"))


def _vgg11() -> Iterator[tuple[str, str]]:
    """``deferral.models.vgg11``: a pool after each stage, activations inside the layers; torchvision
    has separate ReLU modules, so its indices run ahead."""
    ours = theirs = 0
    for stage in (1, 1, 2, 2, 2):
        for _ in range(stage):
            yield from ((f"{ours}.{k}", f"features.{theirs}.{k}") for k in ("weight", "bias"))
            ours, theirs = ours + 1, theirs + 2  # conv (+ ReLU)
        ours, theirs = ours + 1, theirs + 1  # pool
    for ours_dense, theirs_dense in ((ours + 1, 0), (ours + 3, 3), (ours + 5, 6)):  # after Flatten
        yield from ((f"{ours_dense}.{k}", f"classifier.{theirs_dense}.{k}") for k in ("weight", "bias"))


#: The torchvision architectures whose state dicts load into the deferral model of the same name.
TORCHVISION_MODELS = {"resnet18": _resnet18, "vgg11": _vgg11}


def torchvision_names(model: str) -> dict[str, str]:
    """``{deferral name: torchvision name}`` for ``deferral.models.<model>()``.

    Raises:
        CheckpointError: for a model without a map; the message lists those with one.
    """
    if model not in TORCHVISION_MODELS:
        raise CheckpointError(f"no torchvision name map for {model!r}. Choose one of: {', '.join(TORCHVISION_MODELS)}")
    return dict(TORCHVISION_MODELS[model]())


def guess_torchvision_model(names: set[str]) -> str:
    """The architecture whose torchvision names best cover ``names`` (counters ignored)."""
    def overlap(model: str) -> int:
        return len(names & set(torchvision_names(model).values()))

    return max(TORCHVISION_MODELS, key=overlap)


# -- Keras layouts ------------------------------------------------------------------------------

def _conv_kernel(w: np.ndarray) -> np.ndarray:
    """(out, in, *kernel) -> (*kernel, in, out); the inverse is Keras's ``transpose(3, 2, 0, 1)`` in 2-D."""
    return w.transpose(*range(2, w.ndim), 1, 0)


def _lstm(values: dict[str, np.ndarray]) -> list[np.ndarray]:
    # PyTorch's gate order (i, f, g, o) is Keras's (i, f, c, o); Keras has one bias.
    return [values["l0_i2h_weight"].T, values["l0_h2h_weight"].T, values["l0_i2h_bias"] + values["l0_h2h_bias"]]


def _gru(values: dict[str, np.ndarray]) -> list[np.ndarray]:
    # PyTorch's gates (r, z, n) are Keras's (z, r, h), with reset_after=True (Keras's default)
    # for PyTorch's formula; the two biases become the rows of Keras's (2, 3 * units) bias.
    import numpy as np

    def reorder(a: np.ndarray) -> np.ndarray:
        r, z, n = np.split(a, 3, axis=0)
        return np.concatenate([z, r, n], axis=0)

    return [reorder(values["l0_i2h_weight"]).T, reorder(values["l0_h2h_weight"]).T,
            np.stack([reorder(values["l0_i2h_bias"]), reorder(values["l0_h2h_bias"])])]


def _block_weights(block: Block, values: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """The weights of the Keras layer matching ``block``, in Keras's order; None if it has none."""
    def present(*names: str) -> list[np.ndarray]:
        return [values[n] for n in names if n in values]

    if isinstance(block, nn.MultiHeadAttention):
        raise CheckpointError(
            f"to_keras_weights: {block.describe()}: Keras's MultiHeadAttention keeps its projections "
            "as (units, heads, head_size) kernels; reshape each Dense weight (transposed) by hand. Its "
            "mask means True = may attend, as deferral's (torch's attn_mask is the opposite)."
        )

    if isinstance(block, nn.Dense):
        return [values["weight"].T, *present("bias")]
    if isinstance(block, (nn.Conv1D, nn.Conv2D, nn.Conv3D)):
        return [_conv_kernel(values["weight"]), *present("bias")]
    if isinstance(block, nn.BatchNorm):
        return present("gamma", "beta", "running_mean", "running_var")
    if isinstance(block, (nn.LayerNorm, nn.Embedding)):
        return present("gamma", "beta", "weight")
    if isinstance(block, (nn.LSTM, nn.GRU)) and set(values) == {"l0_i2h_weight", "l0_h2h_weight", "l0_i2h_bias", "l0_h2h_bias"}:
        return _lstm(values) if isinstance(block, nn.LSTM) else _gru(values)
    if values:
        raise CheckpointError(
            f"to_keras_weights: no Keras layout rule for {block.describe()} ({type(block).__name__}); "
            "rules exist for Dense, Conv1D/2D/3D, BatchNorm, LayerNorm, Embedding and one-layer, "
            "one-direction LSTM and GRU. Convert its parameters by hand (see the porting guide)."
        )
    return None


def keras_weights(net: Block, host: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """``{block path: weights in Keras's layout and order}`` from host arrays by structural name."""
    out: dict[str, list[np.ndarray]] = {}
    for prefix, block in net._walk():
        values = {n[len(prefix):]: a for n, a in host.items()
                  if n.startswith(prefix) and "." not in n[len(prefix):]}
        weights = _block_weights(block, values)
        if weights is not None:
            out[prefix[:-1]] = weights
    return out
