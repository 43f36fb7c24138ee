"""One rank of the sharded-initialization checks (tests/test_sharded.py starts one process per rank).

Usage: ``python tests/sharded_worker.py JOB RANK WORLD STORE_DIR`` with ``JOB`` one of
:data:`JOBS` (``layouts``: gloo on the CPU; ``cuda``: NCCL, one GPU per rank, the same layout checks
with each shard generated on its GPU). Every check compares real bits: the ``full_tensor()`` of each parameter and buffer of
a module sharded with FSDP2 and/or tensor parallelism, materialized by ``deferral.materialize``,
against single-process ``initialize(seed)`` of the same deferral model. A failing check raises,
so the process exits non-zero and the test prints its traceback.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import deferral
from deferral import init, nn

SEED = 1234
#: Sizes that 2, 3 and 4 do not all divide, so shards are uneven (and some empty at 4 ranks).
WIDTHS = (13, 10, 7)


def model(dtype: str) -> nn.Sequential:
    """A small model with every initializer family and BatchNorm statistics (buffers)."""
    return nn.Sequential([
        nn.Dense(WIDTHS[0], in_units=9, weight_initializer=init.Uniform(0.3), bias_initializer=init.Normal(0.5)),
        nn.Dense(WIDTHS[1], in_units=WIDTHS[0], weight_initializer=init.TruncatedNormal(0.2),
                 bias_initializer=init.Constant(0.25)),
        nn.BatchNorm(in_channels=WIDTHS[1], running_mean_initializer=init.Normal(1.0),
                     running_variance_initializer=init.Uniform(2.0)),
        nn.Dense(WIDTHS[2], in_units=WIDTHS[1], weight_initializer=init.KaimingNormal(),
                 bias_initializer=init.XavierUniform()),
        nn.Dense(5, in_units=WIDTHS[2], weight_initializer=init.XavierNormal(),
                 bias_initializer=init.KaimingUniform()),
    ])


class Mirror(torch.nn.Module):
    """A hand-built torch module whose state_dict keys are the deferral model's paths.

    ``Dense`` layers become ``torch.nn.Linear`` (the same ``(units, in_units)`` layout), so
    ``ColwiseParallel`` and ``RowwiseParallel`` apply; other layers a plain module.
    """

    def __init__(self, net: nn.Block) -> None:
        super().__init__()
        for name, block in net.children():
            params = dict(block.collect_params())
            if isinstance(block, nn.Dense):
                child: torch.nn.Module = torch.nn.Linear(*reversed(params["weight"].shape), device="meta")
            else:
                child = torch.nn.Module()
                for pname, p in params.items():
                    tensor = torch.empty(p.shape, device="meta")
                    if p.trainable:
                        child.register_parameter(pname, torch.nn.Parameter(tensor))
                    else:
                        child.register_buffer(pname, tensor)
            self.add_module(name, child.to(getattr(torch, params[next(iter(params))].dtype)))


def reference(dtype: str) -> dict[str, torch.Tensor]:
    net = model(dtype)
    net.initialize(seed=SEED, backend="torch", dtype=dtype)
    return {k: p.data().detach().clone() for k, p in net.collect_params().items()}


def meta_pair(dtype: str) -> tuple[nn.Sequential, Mirror]:
    net = model(dtype)
    net.initialize(seed=SEED, backend="torch", dtype=dtype, device="meta")
    return net, Mirror(net)


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def check_identical(module: torch.nn.Module, ref: dict[str, torch.Tensor], where: str) -> int:
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    assert set(state) == set(ref), (where, sorted(state), sorted(ref))
    for name, tensor in state.items():
        got = full(tensor).detach().cpu()
        want = ref[name]
        assert got.dtype == want.dtype and got.shape == want.shape, (where, name, got.dtype, got.shape)
        assert torch.equal(got.view(-1).view(torch.int16 if got.dtype == torch.bfloat16 else got.dtype),
                           want.view(-1).view(torch.int16 if want.dtype == torch.bfloat16 else want.dtype)), \
            f"{where}: {name} differs from single-process initialize"
    return len(state)


def tp_plan() -> dict[str, object]:
    return {"0": ColwiseParallel(), "1": RowwiseParallel(), "3": ColwiseParallel(), "4": RowwiseParallel()}


def sharded(layout: str, dtype: str, world: int, kind: str = "cpu") -> tuple[nn.Sequential, Mirror]:
    """A meta module laid out as ``layout`` ("fsdp", "tp" or "fsdp_tp" on a 2 x world/2 mesh)."""
    net, module = meta_pair(dtype)
    if layout == "fsdp":
        mesh = init_device_mesh(kind, (world,))
        for name in ("0", "1", "3", "4"):
            fully_shard(getattr(module, name), mesh=mesh)
        fully_shard(module, mesh=mesh)
    elif layout == "tp":
        parallelize_module(module, init_device_mesh(kind, (world,)), tp_plan())
    else:
        mesh = init_device_mesh(kind, (2, world // 2), mesh_dim_names=("dp", "tp"))
        parallelize_module(module, mesh["tp"], tp_plan())
        for name in ("0", "1", "3", "4"):
            fully_shard(getattr(module, name), mesh=mesh["dp"])
        fully_shard(module, mesh=mesh["dp"])
    return net, module


def check_reset_idiom(world: int, kind: str, device: str) -> int:
    """``module.to_empty(device=...)`` then filling in place (what the native modules'
    ``reset_parameters`` does) gives the same bits as ``deferral.materialize``."""
    from deferral._materialize import _requests
    from deferral_torch._distributed import fill_module

    net, module = sharded("fsdp_tp" if world == 4 else "fsdp", "float32", world, kind)
    module.to_empty(device=device)
    fill_module(module, _requests(net, deferral.load_backend("torch"), device))
    return check_identical(module, reference("float32"), f"to_empty + fill in place, world {world}")


def check_native(world: int, kind: str, device: str, dtype: str, ref: dict[str, torch.Tensor]) -> int:
    """``deferral.native(net)`` under FSDP2: ``deferral.materialize(module)``, then the FSDP2 recipe
    ``to_empty`` + ``reset_parameters()`` after the values were changed, both give the bits; the
    deferral model sees the sharded parameters."""
    net = model(dtype)
    net.initialize(seed=SEED, backend="torch", dtype=dtype, device="meta")
    module = deferral.native(net)
    mesh = init_device_mesh(kind, (world,))
    for child in module.children():
        if any(True for _ in child.parameters()):
            fully_shard(child, mesh=mesh)
    fully_shard(module, mesh=mesh)
    deferral.materialize(module, device=device)
    checked = check_identical(module, ref, f"native/{dtype}/world {world}")
    assert net[0].weight.data() is module.get_parameter("0.weight")
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.zero_()
    module.to_empty(device=device)
    module.reset_parameters()
    return checked + check_identical(module, ref, f"native to_empty + reset_parameters/{dtype}/world {world}")


def check_native_tp(world: int, kind: str, device: str, dtype: str, ref: dict[str, torch.Tensor]) -> int:
    """``parallelize_module`` on ``deferral.native(net)`` itself (its Dense modules are
    ``torch.nn.Linear`` modules): ``deferral.materialize`` and ``to_empty`` + ``reset_parameters()``
    give the bits, uneven shards included; the deferral model holds the DTensors."""
    net = model(dtype)
    net.initialize(seed=SEED, backend="torch", dtype=dtype, device="meta")
    module = deferral.native(net)
    parallelize_module(module, init_device_mesh(kind, (world,)), tp_plan())
    assert [p.placements for p in (module[0].weight, module[4].weight, module[4].bias)] == [
        (Shard(0),), (Shard(1),), (Replicate(),)]
    deferral.materialize(module, device=device)
    checked = check_identical(module, ref, f"native TP/{dtype}/world {world}")
    assert net[3].weight.data() is module.get_parameter("3.weight")
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.zero_()
    module.to_empty(device=device)
    module.reset_parameters()
    return checked + check_identical(module, ref, f"native TP to_empty + reset_parameters/{dtype}/world {world}")


def check_layouts(world: int, kind: str, device: str) -> int:
    """FSDP-only, TP-only and (at 4 ranks) FSDP x TP, float32 and bfloat16; returns the tensors checked."""
    layouts = ["fsdp", "tp"] + (["fsdp_tp"] if world == 4 else [])
    checked = 0
    for dtype in ("float32", "bfloat16"):
        ref = reference(dtype)
        for layout in layouts:
            net, module = sharded(layout, dtype, world, kind)
            assert all(p.is_meta for p in module.parameters())
            if layout == "fsdp_tp":
                placements = {type(p).__name__ for p in module.get_parameter("0.weight").placements}
                assert "_StridedShard" in placements, placements
            deferral.materialize(module, device=device, net=net)
            checked += check_identical(module, ref, f"{layout}/{dtype}/world {world} on {device}")
        checked += check_native(world, kind, device, dtype, ref)
        checked += check_native_tp(world, kind, device, dtype, ref)
    return checked + check_reset_idiom(world, kind, device)


def cuda_job(rank: int, world: int, store: str) -> None:
    """The layout checks with NCCL, each shard generated on its own GPU (the reference is the CPU's)."""
    checked = check_layouts(world, "cuda", f"cuda:{rank}")
    print(f"rank {rank}: {checked} tensors identical", flush=True)


def layouts_job(rank: int, world: int, store: str) -> None:
    """The layout checks on the CPU, DDP identity, and the checkpoint and memory checks."""
    checked = check_layouts(world, "cpu", "cpu")
    ddp_identity(world)
    if world == 2:
        save_for_resharding(store)
        memory_check(rank, world)
        tp_forward_and_checkpoint(rank, world, store)
    if world == 3:
        load_resharded(store)
        save_gathered(rank, store)
    print(f"rank {rank}: {checked} tensors identical", flush=True)


def ddp_identity(world: int) -> None:
    """Every rank initializing from the seed holds the same bits: DDP needs no broadcast."""
    net = model("float32")
    net.initialize(seed=SEED, backend="torch")
    flat = torch.cat([p.data().detach().reshape(-1) for p in net.collect_params().values()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(g, flat) for g in gathered)


def save_for_resharding(store: str) -> None:
    import torch.distributed.checkpoint as dcp

    net, module = sharded("fsdp", "float32", 2)
    deferral.materialize(module, device="cpu", net=net)
    dcp.save(module.state_dict(), checkpoint_id=os.path.join(store, "dcp"))


def load_resharded(store: str) -> None:
    """The world-2 checkpoint loads at world 3 with identical bits (into other initial values)."""
    import torch.distributed.checkpoint as dcp

    path = os.path.join(store, "dcp")
    assert os.path.isdir(path), f"no world-2 checkpoint at {path}: run the world-2 job first"
    net = model("float32")
    net.initialize(seed=SEED + 1, backend="torch", device="meta")
    module = Mirror(net)
    mesh = init_device_mesh("cpu", (3,))
    fully_shard(module, mesh=mesh)
    deferral.materialize(module, device="cpu", net=net)
    state = module.state_dict()
    dcp.load(state, checkpoint_id=path)
    check_identical(module, reference("float32"), "dcp world 2 -> 3")


def save_gathered(rank: int, store: str) -> None:
    """A sharded model saved as one ordinary deferral file loads unsharded bit for bit."""
    from deferral_torch._distributed import save_parameters

    net, module = sharded("fsdp", "float32", 3)
    deferral.materialize(module, device="cpu", net=net)
    path = os.path.join(store, "gathered.safetensors")
    save_parameters(module, path, net=net)
    dist.barrier()
    loaded = model("float32")
    loaded.load_parameters(path)
    ref = reference("float32")
    for name, values in zip(loaded.collect_params(), loaded.get_weights()):
        assert np.array_equal(values, ref[name].numpy()), name


def tp_model() -> nn.Sequential:
    """Embedding, Dense with an activation, Dense: even sizes, so torch's local outputs reassemble."""
    return nn.Sequential([
        nn.Embedding(12, 8, weight_initializer=init.Normal(1.0)),
        nn.Dense(8, activation="relu", in_units=8, weight_initializer=init.Uniform(0.5),
                 bias_initializer=init.Normal(0.1)),
        nn.Dense(6, in_units=8, bias_initializer=init.Normal(0.3)),
    ])


def tp_forward_and_checkpoint(rank: int, world: int, store: str) -> None:
    """TP on the native modules (the embedding row-wise, then column-wise, then row-wise Dense):
    the forward pass computes the unsharded model's output, ``get_weights()`` and
    ``net.save_parameters`` see the whole values (the file is byte for byte the unsharded
    model's), ``load_parameters`` refuses the sharded model, and errors reach every rank."""
    ref = tp_model()
    ref.initialize(seed=SEED, backend="torch")
    x = torch.tensor([[0, 3, 11], [7, 7, 1]])
    want = ref(x).detach()
    plan = {"0": RowwiseParallel(input_layouts=Replicate()), "1": ColwiseParallel(), "2": RowwiseParallel()}
    for device in ("cpu", "meta"):
        net = tp_model()
        net.initialize(seed=SEED, backend="torch", device=device)
        module = parallelize_module(deferral.native(net), init_device_mesh("cpu", (world,)), plan)
        if device == "meta":
            deferral.materialize(module, device="cpu")
        assert isinstance(module[1], torch.nn.Linear) and isinstance(module[0], torch.nn.Embedding)
        assert [p.placements for p in (module[0].weight, module[1].weight, module[2].weight)] == [
            (Shard(0),), (Shard(0),), (Shard(1),)]
        assert tuple(module[1].weight.to_local().shape) == (8 // world, 8)
        got = module(x)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-6, atol=1e-6), (got - want).abs().max()
        assert all(torch.equal(torch.from_numpy(a), torch.from_numpy(b))
                   for a, b in zip(net.get_weights(), ref.get_weights())), "get_weights differs"
    sharded_path, whole_path = os.path.join(store, "tp.safetensors"), os.path.join(store, "whole.safetensors")
    net.save_parameters(sharded_path)
    if rank == 0:
        ref.save_parameters(whole_path)
    dist.barrier()
    with open(sharded_path, "rb") as a, open(whole_path, "rb") as b:
        assert a.read() == b.read(), "the sharded model's file differs from the unsharded model's"
    before = [p.to_local().clone() for p in module.parameters()]
    try:
        net.load_parameters(sharded_path)
    except deferral.CheckpointError as exc:
        assert "sharded over 2 processes" in str(exc) and "dcp.load" in str(exc), exc
    else:
        raise AssertionError("load_parameters into a sharded model did not refuse")
    assert all(torch.equal(a, p.to_local()) for a, p in zip(before, module.parameters()))
    bad = os.path.join(store, "missing-directory", "x.safetensors")
    try:
        net.save_parameters(bad)
    except deferral.CheckpointError as exc:
        assert "missing-directory" in str(exc), exc  # every rank hears of rank 0's failure
    else:
        raise AssertionError("saving into a missing directory did not raise")
    # force_reinit and set_data write each rank's shard in place: the layout stays, the values
    # are the unsharded model's
    shards = [p.to_local() for p in module.parameters()]
    net.initialize(seed=SEED + 1, backend="torch", force_reinit=True)
    other = tp_model()
    other.initialize(seed=SEED + 1, backend="torch")
    other(x)
    assert all(torch.equal(torch.from_numpy(a), torch.from_numpy(b))
               for a, b in zip(net.get_weights(), other.get_weights())), "force_reinit differs"
    assert all(p.to_local().data_ptr() == s.data_ptr() for p, s in zip(module.parameters(), shards)), "a shard was replaced"
    assert torch.allclose(module(x), other(x).detach(), rtol=1e-6, atol=1e-6)
    values = np.arange(8 * 8, dtype=np.float32).reshape(8, 8)
    net[1].weight.set_data(values)
    assert module[1].weight.placements == (Shard(0),) and module[1].weight.to_local().data_ptr() == shards[1].data_ptr()
    assert np.array_equal(dict(zip(net.collect_params(), net.get_weights()))["1.weight"], values)
    try:  # another dtype cannot go into the shards: refused, nothing changed
        net.initialize(seed=SEED, backend="torch", dtype="float64", force_reinit=True)
    except deferral.MaterializeError as exc:
        assert "'0.weight' is sharded over 2 processes" in str(exc) and "float64" in str(exc), exc
    else:
        raise AssertionError("force_reinit to float64 of a sharded model did not refuse")
    assert module[1].weight.dtype == torch.float32 and module[1].weight.to_local().data_ptr() == shards[1].data_ptr()


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def memory_check(rank: int, world: int) -> None:
    """A model larger than one process's address-space headroom materializes across ranks."""
    side, layers = 2048, 8
    big = nn.Sequential([nn.Dense(side, in_units=side, weight_initializer=init.Normal(0.02))
                         for _ in range(layers)])
    big.initialize(seed=SEED, backend="torch", device="meta")
    module = Mirror(big)
    mesh = init_device_mesh("cpu", (world,))
    for child in module.children():
        fully_shard(child, mesh=mesh)
    fully_shard(module, mesh=mesh)
    warm, warm_module = meta_pair("float32")  # threads and allocator pools exist before the limit
    deferral.materialize(warm_module, device="cpu", net=warm)
    full_bytes = sum(p.nbytes or 0 for p in big.collect_params().values())
    headroom = full_bytes // world + (48 << 20)  # this rank's shard and the temporaries fit
    assert full_bytes > headroom, "the model must not fit under the limit"
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + headroom, hard))
    try:
        deferral.materialize(module, device="cpu", net=big)
        try:
            torch.empty(full_bytes // 4, dtype=torch.float32)
        except RuntimeError:
            pass  # the limit bites: the whole model could not have been allocated here
        else:
            raise AssertionError("the address-space limit did not stop a full-model allocation")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    weight = module.get_parameter("2.weight")
    local = weight.to_local()
    expected = deferral.init.Normal(0.02).recipe((side, side))
    key = deferral.random.derive_key(SEED, "2.weight")
    start = rank * (side // world) * side
    want = expected.values(key, (side, side), start, start + local.numel()).astype(np.float32)
    assert np.array_equal(local.detach().numpy().reshape(-1), want), "memory job: shard values differ"
    print(f"rank {rank}: {full_bytes >> 20} MiB model under a {headroom >> 20} MiB limit", flush=True)


JOBS: dict[str, Callable[[int, int, str], None]] = {"layouts": layouts_job, "cuda": cuda_job}


def main() -> None:
    job, rank, world, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    if job == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if job == "cuda" else "gloo", init_method=f"file://{os.path.join(store, f'rendezvous-{job}-{world}')}",
                            rank=rank, world_size=world)
    try:
        JOBS[job](rank, world, store)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
