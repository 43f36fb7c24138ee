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
import sys
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import torch

from deferral._regions import Layout, Region, region
from deferral.errors import MaterializeError
from deferral.hookspec import Collective

if TYPE_CHECKING:
    from deferral.hookspec import MaterializeRequest

__all__ = ["assign_shard", "collective", "fill_module", "fill_parameter", "layouts", "materialize_module", "region_of",
           "reset_module", "save_parameters"]


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


def assign_shard(target: torch.Tensor, value: Any) -> bool:
    """Write this rank's elements of the whole parameter ``value`` (a plain tensor) into the
    DTensor ``target``'s local storage; False (nothing done) when ``target`` is no DTensor or
    ``value`` is one too (``copy_`` then does the right thing)."""
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(target, dtensor) or isinstance(value, dtensor):
        return False
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"assign: a sharded parameter of shape {tuple(target.shape)} cannot take values of "
                         f"shape {tuple(value.shape)}")
    where = region_of("the parameter", target) or Region.full(tuple(target.shape))
    local = _local(target)
    flat = value.detach().reshape(-1).to(device=local.device, dtype=local.dtype)
    pieces = [flat[start:start + length] for start, length in where.runs()]
    mine = torch.cat(pieces) if pieces else flat[:0]
    local.copy_(mine.reshape(local.shape))
    return True


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


def _check_names(module: torch.nn.Module, names: Collection[str]) -> None:
    tensors = _named_tensors(module)
    missing = sorted(set(names) - set(tensors))
    extra = sorted(set(tensors) - set(names))
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


def reset_module(module: torch.nn.Module) -> None:
    """Fill every tensor of a ``deferral.native`` module tree from its parameter's recipe, in place.

    Each tensor keeps its device and layout; the request is the parameter's intent on that
    device (what ``reset_parameters()`` after ``to_empty`` needs).
    """
    import deferral
    from deferral import _lifecycle

    from ._module import named_deferral_params

    tensors = _named_tensors(module)
    requests = {}
    for key, _, _, param in named_deferral_params(module):
        intent = param._intent
        if intent is None or not param.shape_known:
            raise deferral.DeferredInitializationError(
                f"reset_parameters: parameter {key!r} (shape {param.shape}) "
                f"{'was never initialized' if intent is None else 'has an unknown shape'}: initialize the "
                "model and give its input sizes (or call net.infer_shape(...)) first. Nothing was reset."
            )
        device = str(_local(tensors[key]).device)
        requests[key] = _lifecycle.request_for(param, dataclasses.replace(intent, device=device))
    for key, request in requests.items():
        fill_parameter(tensors[key], request)


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


def collective(values: list[Any]) -> Collective | None:
    """How the ranks cooperate over ``values`` when one is a DTensor (see ``deferral_collective``).

    Every rank of the default process group takes part: rank 0 writes, each parameter is made
    whole with ``full_tensor()`` in turn, and errors are shared with ``all_gather_object``.
    Nothing is communicated here.
    """
    tensor_module = sys.modules.get("torch.distributed.tensor")  # no DTensor exists before it is imported
    if tensor_module is None or not any(isinstance(v, tensor_module.DTensor) for v in values):
        return None
    import torch.distributed as dist

    world = dist.get_world_size()
    return Collective(
        writer=dist.get_rank() == 0, whole=_whole, agree=_agree, processes=world,
        describe=f"sharded over {world} processes (torch DTensors: FSDP2 or tensor parallelism)",
        sharded_checkpoints="torch.distributed.checkpoint (dcp.save / dcp.load of "
                            "deferral.native(net).state_dict(), which reshards to any world size)",
    )


def _whole(value: torch.Tensor) -> Any:
    """The whole tensor as a host NumPy copy (``full_tensor()`` of a DTensor: a collective)."""
    from . import deferral_to_numpy

    return deferral_to_numpy(value)


def _agree(message: str | None) -> str | None:
    """The first error message any rank has (a collective), or ``None``."""
    import torch.distributed as dist

    messages: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    return next((m for m in messages if m is not None), None)


def save_parameters(module: torch.nn.Module, path: str, *, net: Any) -> None:
    """Write the parameters a (sharded) module holds as one ordinary deferral file.

    For a module that mirrors ``net`` without sharing its tensors (not ``deferral.native``'s
    own: for that one, ``net.save_parameters(path)`` does the same). Every rank calls it;
    each parameter is gathered in turn (a collective) and rank 0 writes it with the library's
    own writer (atomic, streamed): one parameter is whole at a time, never the model. The
    file loads with ``load_parameters`` into an unsharded model, bit for bit.

    Raises:
        MaterializeError: when the module's names are not the model's paths.
        deferral.CheckpointError: on every rank, when the file cannot be written.
    """
    import deferral
    from deferral._checkpoint import save_values

    params = dict(net.collect_params())
    _check_names(module, params)
    tensors = _named_tensors(module)
    save_values(path, params, {name: tensors[name] for name in params}, deferral.load_backend("torch"))
