"""Input checks the built-in layers share: dtypes, empty axes, a likely channels-last image.

Each raises the same :mod:`deferral.errors` class on every backend, naming the layer, so a
user sees one message whatever framework computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import EmptyInputError, InputDtypeError, ShapeMismatchError

__all__ = ["channels_last_hint", "dtype_name", "is_floating", "is_integer", "require_float", "require_nonempty"]

def dtype_name(x: Any) -> str:
    """``"int64"``, ``"float32"``, ``"bool"``, ... for an array of any backend (or a TensorSpec)."""
    dtype = getattr(x, "dtype", None)
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):  # torch.dtype has no .name: "torch.int64"; a TensorSpec: "int64"
        name = str(dtype).rsplit(".", 1)[-1]
    return "bool" if name == "bool_" else name


def is_floating(name: str) -> bool:
    """Whether a dtype name is a floating type (``float16/32/64``, ``bfloat16``)."""
    return "float" in name


def is_integer(name: str) -> bool:
    """Whether a dtype name is a (signed or unsigned) integer type."""
    return name.startswith(("int", "uint"))


def require_float(layer: Any, x: Any, what: str = "input") -> None:
    """Raise :class:`InputDtypeError`, naming ``layer`` (a block), unless ``x`` is floating.

    Integer and boolean inputs are refused on every backend (NumPy would promote them to
    float64, PyTorch and TensorFlow raise their own dtype errors): feeding integers to a float
    layer is most often indices meant for an ``Embedding`` or unscaled ``uint8`` pixels.
    """
    # Every forward pass of a float layer runs this: the usual dtypes are told by one attribute
    # (a NumPy dtype builds its .name anew on each read, about 2 us; a torch dtype has none):
    # NumPy's and JAX's kind, torch's is_floating_point, TensorFlow's is_floating.
    dtype = getattr(x, "dtype", None)
    if (getattr(dtype, "kind", None) == "f" or getattr(dtype, "is_floating_point", False) is True
            or getattr(dtype, "is_floating", False) is True):
        return
    name = dtype_name(x)
    if "float" in name:  # is_floating, inlined: every forward pass of a float layer runs it
        return
    hint = " For token or class indices, put an nn.Embedding first." if is_integer(name) else ""
    raise InputDtypeError(
        f"{layer.describe()}: expected a floating {what} (float16/32/64 or bfloat16). Received dtype "
        f"{name}. Convert it first, e.g. x.astype('float32') (NumPy), x.float() (torch) or "
        f"tf.cast(x, tf.float32).{hint}"
    )


def require_nonempty(layer: Any, shape: Sequence[Any], axes: Sequence[int],
                     names: Sequence[str] | Callable[[int], str], fix: str) -> None:
    """Raise :class:`EmptyInputError`, naming ``layer`` (a block), if one of ``axes`` of
    ``shape`` has size 0; ``names`` gives each axis' name (a list, or a function of the axis)."""
    if 0 not in shape:
        return
    for i, axis in enumerate(axes):
        if shape[axis] == 0:
            name = names(axis) if callable(names) else names[i]
            at = "" if name[-1].isdigit() else f" (axis {axis % len(shape)})"
            raise EmptyInputError(f"{layer.describe()}: the input's {name}{at} is empty in shape {tuple(shape)}. {fix}")


#: Channel counts of images as stored (gray, gray + alpha, RGB, RGBA).
IMAGE_CHANNELS = (1, 2, 3, 4)


def channels_last_hint(where: str, shape: tuple[Any, ...], layout: str) -> None:
    """Raise :class:`ShapeMismatchError` for an input that looks like a channels-last image.

    The heuristic (for 2 or 3 spatial axes, when the layer infers its input channels): the
    last axis holds an image's channel count (1 to 4), the axis read as channels holds more
    than that, and it equals another spatial size. ``(N, 28, 28, 1)`` and ``(N, 224, 224, 3)``
    match (square images stored ``(N, H, W, C)``); ``(N, 3, 224, 224)`` does not, nor does
    any input whose channel axis is 1 to 4. Nobody chooses a channel count equal to the
    image height next to a width of 1 to 4, so the false positives are rare; for one, give
    the layer its ``in_channels``, which skips the check.
    """
    if len(shape) not in (4, 5) or None in shape:
        return
    channels, last = shape[1], shape[-1]
    if last in IMAGE_CHANNELS and channels not in IMAGE_CHANNELS and channels in shape[2:-1]:
        order = (0, len(shape) - 1, *range(1, len(shape) - 1))
        raise ShapeMismatchError(
            f"{where}: the input of shape {tuple(shape)} looks channels-last (an image "
            f"with {last} channel{'s' if last > 1 else ''} on the last axis); deferral's data is channels-first ({layout}), so this layer would take "
            f"{channels} as the input channels. Transpose it first, e.g. x.transpose{order} (NumPy), "
            f"x.permute{order} (torch) or tf.transpose(x, {list(order)}). If {channels} channels "
            f"are right, give the layer in_channels={channels}."
        )
