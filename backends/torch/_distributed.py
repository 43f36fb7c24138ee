"""Sharded materialization for the torch backend: DTensor placements as deferral regions.

A parameter of a module wrapped by FSDP2 (``fully_shard``) or tensor parallelism
(``parallelize_module``) is a ``DTensor``: each rank holds a local tensor, and its placements
(``Shard(d)``, ``Replicate()``, ``_StridedShard(d, split_factor)`` on each mesh dimension)
say which elements of the full parameter it holds. This module only translates those
placements into backend-neutral :class:`deferral._regions.Layout` values; the core computes
the region (:func:`deferral._regions.region`) and :func:`deferral_torch.fill_tensor`
generates exactly its elements, on the local tensor's device. Nothing is broadcast or gathered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from deferral._regions import Layout, Region, region
from deferral.errors import MaterializeError

if TYPE_CHECKING:
    from deferral.hookspec import MaterializeRequest

__all__ = ["fill_module", "fill_parameter", "layouts", "materialize_module", "region_of", "save_parameters"]


def _dtensor_type() -> Any:
    """``DTensor`` when torch.distributed is built in (importing it costs nothing then)."""
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def layouts(name: str, placements: Any) -> tuple[Layout, ...]:
    """DTensor placements as deferral layouts (one per mesh dimension).

    Raises:
        MaterializeError: for a placement that holds no plain slice of the values (``Partial``:
            each rank holds a summand) or one deferral does not know.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    out = []
    for placement in placements:
        if isinstance(placement, _StridedShard):
            out.append(Layout("strided", placement.dim, placement.split_factor))
        elif isinstance(placement, Shard):
            out.append(Layout("shard", placement.dim))
        elif isinstance(placement, Replicate):
            out.append(Layout("replicate"))
        else:
            raise MaterializeError(
                f"materialize: {name!r} has placement {placement!r}; deferral fills Shard(d), "
                "Replicate() and _StridedShard placements (a Partial tensor holds summands, not "
                "values). Initialize it replicated or sharded, then redistribute."
            )
    return tuple(out)


def region_of(name: str, tensor: torch.Tensor) -> Region | None:
    """The region of the full parameter that ``tensor``'s local storage holds on this rank.

    ``None`` for a plain tensor (the whole parameter). A rank outside the DTensor's mesh holds
    nothing (an empty region).
    """
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(tensor, dtensor):
        return None
    shape = tuple(tensor.shape)
    mesh = tensor.device_mesh
    coordinate = mesh.get_coordinate()
    if coordinate is None:
        return Region(shape, tuple(() for _ in shape))
    return region(shape, tuple(mesh.shape), tuple(coordinate), layouts(name, tensor.placements))


def _local(tensor: torch.Tensor) -> torch.Tensor:
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(tensor, dtensor):
        return tensor._local_tensor
    return tensor


def fill_parameter(tensor: torch.Tensor, request: MaterializeRequest) -> None:
    """Fill ``tensor`` (a plain tensor, or this rank's part of a DTensor) with its recipe's values.

    ``request`` describes the whole parameter; the region is read from ``tensor``'s
    placements. The local storage is written in place (FSDP2 keeps views of it), through a
    temporary of the local shape only when it is not contiguous.

    Raises:
        MaterializeError: when the tensor's global shape is not the request's, or for a
            placement deferral cannot fill.
    """
    from . import fill_tensor

    if tuple(tensor.shape) != tuple(request.shape):
        raise MaterializeError(
            f"materialize: {request.name!r} has shape {tuple(tensor.shape)} in the module but "
            f"{tuple(request.shape)} in the deferral model. Mirror the model with deferral.native(net)."
        )
    local = _local(tensor)
    wanted = dataclasses.replace(request, region=region_of(request.name, tensor))
    with torch.no_grad():
        if local.is_contiguous():
            fill_tensor(local, wanted)
        else:
            staged = torch.empty(local.shape, dtype=local.dtype, device=local.device)
            fill_tensor(staged, wanted)
            local.copy_(staged)


def _named_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return tensors


def _check_names(module: torch.nn.Module, requests: Mapping[str, MaterializeRequest]) -> None:
    tensors = _named_tensors(module)
    missing = sorted(set(requests) - set(tensors))
    extra = sorted(set(tensors) - set(requests))
    if missing or extra:
        raise MaterializeError(
            f"materialize: the {type(module).__name__}'s tensors are not the deferral model's "
            f"parameters. Missing: {', '.join(missing[:8]) or 'none'}; unexpected: "
            f"{', '.join(extra[:8]) or 'none'}. Its state_dict keys must be the model's paths "
            "(deferral.native(net) gives such a module)."
        )


def fill_module(module: torch.nn.Module, requests: Mapping[str, MaterializeRequest]) -> torch.nn.Module:
    """Fill every parameter and buffer of ``module`` that ``requests`` names, in place, where it lies.

    No allocation: this is what ``reset_parameters()`` does after ``module.to_empty(device=...)``
    (the FSDP2 recipe). Each rank writes only its local shards.

    Raises:
        MaterializeError: for a tensor that is not where its request says (shape, layout).
    """
    tensors = _named_tensors(module)
    for name, request in requests.items():
        if name in tensors:
            fill_parameter(tensors[name], request)
    return module


def materialize_module(module: torch.nn.Module, requests: Mapping[str, MaterializeRequest]) -> torch.nn.Module:
    """Allocate ``module``'s local storage on the requests' device and fill every tensor.

    ``module.to_empty`` allocates (FSDP2 and DTensor keep their own layouts through it); then
    :func:`fill_module` gives every parameter and buffer, named by its structural path, its values.

    Raises:
        MaterializeError: when the module's parameter and buffer names are not the model's
            paths (missing or unexpected names are listed); nothing is allocated then.
    """
    _check_names(module, requests)
    devices = {r.device for r in requests.values()}
    module.to_empty(device=devices.pop() if devices else "cpu")
    return fill_module(module, requests)


def _gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The whole parameter on every rank (a collective for a DTensor), on the CPU."""
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(tensor, dtensor):
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu")


def save_parameters(module: torch.nn.Module, path: str, *, net: Any) -> None:
    """Write a sharded module's parameters as one ordinary deferral file (``net.save_parameters``'s format).

    Every rank calls it (each parameter is gathered in turn, a collective); rank 0 writes.
    One parameter is whole at a time, so the extra memory is the largest parameter, never the
    model. The file loads with ``load_parameters`` into an unsharded model, bit for bit.
    """
    import json
    import os

    from deferral._checkpoint import _CODES, _host
    from deferral._dtypes import ITEMSIZE
    from deferral._version import __version__
    from deferral.random import SPEC_VERSION

    params = dict(net.collect_params())
    tensors = _named_tensors(module)
    writer = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    header: dict[str, Any] = {}
    offset = 0
    for name, p in params.items():
        size = (p.size or 0) * ITEMSIZE[p.dtype]
        header[name] = {"dtype": _CODES[p.dtype], "shape": list(p.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {
        "format": "deferral", "deferral_version": __version__, "spec_version": str(SPEC_VERSION),
        "seeds": json.dumps({n: p.seed for n, p in params.items()}),
        "backends": json.dumps({n: p.backend for n, p in params.items()}),
    }
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = f"{path}.tmp"
    with open(tmp if writer else os.devnull, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name, p in params.items():
            whole = _gathered(tensors[name])
            if whole.dtype == torch.bfloat16:
                whole = whole.float()
            f.write(_host(whole.numpy(), p.dtype).tobytes())
    if writer:
        os.replace(tmp, path)
