"""Sharded initialization: regions, the meta device, deferral.materialize, and spawned gloo ranks.

The multi-process checks run ``tests/sharded_worker.py`` once per world size (1 to 4), one
process per rank on 127.0.0.1 with gloo; each job checks every layout it can (FSDP2, tensor
parallelism, FSDP x TP on a 2 x 2 mesh), float32 and bfloat16, every initializer family and
BatchNorm buffers bit for bit against single-process ``initialize``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deferral
from deferral import init, nn
from deferral._regions import Layout, Region, region
from deferral.hookspec import MaterializeRequest
from deferral.random import derive_key

WORKER = Path(__file__).with_name("sharded_worker.py")
#: Each spawned job's bound: the slowest (4 ranks on 2 cores) takes about 40 s.
JOB_TIMEOUT = 240


# -- regions (core, no framework) -----------------------------------------------------------
def _offsets(r: Region, chunk: int) -> list[int]:
    out: list[int] = []
    for start, runs in r.batches(chunk):
        assert start == len(out)
        assert sum(n for _, n in runs) <= chunk
        for offset, length in runs:
            out.extend(range(offset, offset + length))
    return out


def _brute_force(shape: tuple[int, ...], index: tuple[tuple[tuple[int, int], ...], ...]) -> list[int]:
    full = np.arange(int(np.prod(shape))).reshape(shape)
    picks = [[i for off, n in segs for i in range(off, off + n)] for segs in index]
    return [int(v) for v in full[np.ix_(*picks)].reshape(-1)] if all(picks) else []


def test_a_column_shard_is_one_run_per_row_and_a_row_shard_one_run() -> None:
    cols = region((4, 6), (2,), (1,), (Layout("shard", 1),))
    assert cols.local_shape == (4, 3) and list(cols.runs()) == [(3, 3), (9, 3), (15, 3), (21, 3)]
    rows = region((5, 6), (2,), (1,), (Layout("shard", 0),))
    assert rows.local_shape == (2, 6) and list(rows.runs()) == [(18, 12)]
    assert list(Region.full((3, 4)).runs()) == [(0, 12)] and Region.full((3, 4)).is_full


def test_uneven_shards_follow_torch_chunk_and_trailing_ranks_may_be_empty() -> None:
    sizes = [region((5,), (4,), (r,), (Layout("shard", 0),)).local_shape for r in range(4)]
    assert sizes == [(2,), (2,), (1,), (0,)]
    assert list(region((5,), (4,), (3,), (Layout("shard", 0),)).runs()) == []


def test_strided_shard_holds_a_chunk_of_every_piece() -> None:
    r = region((8,), (2,), (1,), (Layout("strided", 0, 2),))
    assert r.index == (((2, 2), (6, 2)),) and _offsets(r, 3) == [2, 3, 6, 7]


def test_runs_and_batches_cover_exactly_the_region_for_random_layouts() -> None:
    rng = random.Random(3)
    for _ in range(400):
        shape = tuple(rng.randint(1, 7) for _ in range(rng.randint(1, 3)))
        mesh = tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 3)))
        layouts = [rng.choice([Layout("replicate"), Layout("shard", rng.randrange(len(shape))),
                               Layout("strided", rng.randrange(len(shape)), rng.randint(1, 3))])
                   for _ in mesh]
        for coord in itertools.product(*[range(m) for m in mesh]):
            r = region(shape, mesh, coord, layouts)
            assert _offsets(r, rng.randint(1, 9)) == _brute_force(shape, r.index)
            assert r.size == len(_brute_force(shape, r.index))


def test_bad_layouts_and_meshes_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown layout kind"):
        Layout("diagonal")
    with pytest.raises(ValueError, match="dimension 2"):
        region((3, 4), (2,), (0,), (Layout("shard", 2),))
    with pytest.raises(ValueError, match="one coordinate and one layout per mesh dimension"):
        region((3, 4), (2, 2), (0,), (Layout("shard", 0),))


def _request(recipe: init.Recipe, shape: tuple[int, ...], dtype: str = "float32",
             r: Region | None = None) -> MaterializeRequest:
    return MaterializeRequest(name="w", shape=shape, dtype=dtype, device="cpu", trainable=True,
                              key=derive_key(5, "w"), recipe=recipe, region=r)


@pytest.mark.parametrize("run_cost", [0, 4096])  # 0: every run alone; 4096: spans of short runs
@pytest.mark.parametrize("kind", ["uniform", "normal", "truncated_normal", "constant"])
def test_fill_local_on_the_host_is_the_slice_of_the_whole(kind: str, run_cost: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import deferral.hookspec

    monkeypatch.setattr(deferral.hookspec, "RUN_COST", run_cost)
    monkeypatch.setattr(deferral.hookspec, "SPAN_ELEMENTS", 40)  # several groups per batch
    shape = (7, 5, 3)
    recipe = init.Recipe(kind, -0.5 if kind == "uniform" else 0.25, 0.5)
    whole = _request(recipe, shape).host_values().reshape(shape)
    r = region(shape, (2, 2), (1, 0), (Layout("shard", 1), Layout("strided", 0, 2)))
    local = np.empty(r.local_shape, dtype=np.float32)
    _request(recipe, shape, r=r).fill_local(local)
    picks = [[i for off, n in segs for i in range(off, off + n)] for segs in r.index]
    assert np.array_equal(local, whole[np.ix_(*picks)])


def test_orthogonal_refuses_a_shard_but_fills_a_replica() -> None:
    recipe = init.Orthogonal().recipe((6, 4))
    shard = region((6, 4), (2,), (0,), (Layout("shard", 0),))
    with pytest.raises(deferral.InitializerError, match="needs the whole matrix") as err:
        _request(recipe, (6, 4), r=shard).fill_local(np.empty(shard.local_shape, dtype=np.float32))
    assert "'w'" in str(err.value) and "(3, 4)" in str(err.value)
    replica = region((6, 4), (2,), (1,), (Layout("replicate"),))
    out = np.empty((6, 4), dtype=np.float32)
    _request(recipe, (6, 4), r=replica).fill_local(out)
    assert np.array_equal(out, _request(recipe, (6, 4)).host_values().reshape(6, 4))


# -- deferral.materialize of a deferral model (any backend) ----------------------------------
def _model() -> nn.Sequential:
    return nn.Sequential([nn.Dense(6, in_units=4, weight_initializer="he_normal"), nn.BatchNorm(in_channels=6),
                          nn.Dense(3)])


def test_materialize_refuses_unknown_shapes_naming_them_and_changes_nothing() -> None:
    torch = pytest.importorskip("torch")
    net = _model()
    net.initialize(seed=0, backend="torch", device="meta")
    before = {k: (p.state, p._data) for k, p in net.collect_params().items()}
    with pytest.raises(deferral.DeferredInitializationError, match=r"2\.weight \(3, -1\)") as err:
        deferral.materialize(net, device="cpu")
    assert "infer_shape" in str(err.value) and "in_units" in str(err.value)
    assert {k: (p.state, p._data) for k, p in net.collect_params().items()} == before
    net.infer_shape((2, 4))  # completes the model; still nothing allocated
    deferral.materialize(net, device="cpu")
    ref = _model()
    ref.initialize(seed=0, backend="torch")
    ref.infer_shape((2, 4))
    ref.initialize(seed=0, backend="torch", force_reinit=True)
    for a, b in zip(ref.get_weights(), net.get_weights()):
        assert np.array_equal(a, b)
    assert all(p.data().device == torch.device("cpu") for p in net.collect_params().values())


def test_meta_parameters_have_shapes_and_no_storage_and_refuse_to_be_read() -> None:
    pytest.importorskip("torch")
    net = nn.Dense(5, in_units=3)
    net.initialize(seed=0, backend="torch", device="meta")
    assert net.weight.data().is_meta and tuple(net.weight.data().shape) == (5, 3) and net.weight.device == "meta"
    with pytest.raises(deferral.DeferredInitializationError, match="meta device"):
        net.get_weights()


def test_materialize_refuses_a_model_that_already_holds_values() -> None:
    net = nn.Dense(5, in_units=3)
    net.initialize(seed=0, backend="numpy")
    before = net.get_weights()
    with pytest.raises(deferral.MaterializeError, match="'weight' already holds values"):
        deferral.materialize(net)
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights()))


def test_materialize_of_a_framework_object_needs_its_model() -> None:
    with pytest.raises(deferral.MaterializeError, match="net=the_model"):
        deferral.materialize(object())
    net = nn.Dense(5, in_units=3)
    net.initialize(seed=0, backend="numpy")
    with pytest.raises(deferral.MaterializeError, match="cannot fill"):
        deferral.materialize(object(), net=net)


# -- the torch backend: one process --------------------------------------------------------
def _mirror(torch: object, net: nn.Block) -> object:
    sys.path.insert(0, str(WORKER.parent))
    try:
        from sharded_worker import Mirror
    finally:
        sys.path.remove(str(WORKER.parent))
    return Mirror(net)


@pytest.mark.parametrize("native", ["0", "1"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fill_tensor_of_a_region_is_the_slice_of_the_whole(native: str, dtype: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from deferral_torch import fill_tensor

    monkeypatch.setenv("DEFERRAL_TORCH_NATIVE", native)
    shape = (9, 70, 5)
    for kind in ("uniform", "normal", "truncated_normal", "constant"):
        recipe = init.Recipe(kind, -1.0 if kind == "uniform" else 0.5, 1.0)
        whole = torch.empty(shape, dtype=getattr(torch, dtype))
        fill_tensor(whole, _request(recipe, shape, dtype))
        for coord in itertools.product(range(2), range(3)):
            r = region(shape, (2, 3), coord, (Layout("strided", 1, 2), Layout("shard", 0)))
            local = torch.empty(r.local_shape, dtype=whole.dtype)
            fill_tensor(local, _request(recipe, shape, dtype, r))
            picks = [torch.tensor([i for off, n in segs for i in range(off, off + n)]) for segs in r.index]
            want = whole[picks[0][:, None, None], picks[1][None, :, None], picks[2][None, None, :]]
            assert torch.equal(local.view(torch.int16 if dtype == "bfloat16" else local.dtype),
                               want.view(torch.int16 if dtype == "bfloat16" else want.dtype)), (kind, coord)


def test_regions_agree_with_dtensor_placements() -> None:
    torch = pytest.importorskip("torch")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not built into this torch")
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset
    from torch.distributed.tensor.placement_types import _StridedShard

    from deferral_torch._distributed import layouts

    rng = random.Random(7)
    checked = 0
    for _ in range(300):
        shape = tuple(rng.randint(1, 9) for _ in range(rng.randint(1, 3)))
        mesh = tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3)))
        placements = [rng.choice([Replicate(), Shard(rng.randrange(len(shape))),
                                  _StridedShard(rng.randrange(len(shape)), split_factor=rng.randint(1, 3))])
                      for _ in mesh]
        for coord in itertools.product(*[range(m) for m in mesh]):
            r = region(shape, mesh, coord, layouts("p", placements))
            local = torch.arange(int(np.prod(shape))).view(shape)
            for parts, c, p in zip(mesh, coord, placements):  # DTensor's own split, mesh dim by mesh dim
                if not isinstance(p, Replicate):
                    local = p._split_tensor(local, parts, with_padding=False, contiguous=True)[0][c]
            assert tuple(local.shape) == r.local_shape
            assert local.reshape(-1).tolist() == _offsets(r, 4)
            local_shape, offset = _compute_local_shape_and_global_offset(shape, mesh, list(coord), placements)
            assert tuple(local_shape) == r.local_shape
            if r.size:
                assert all(o == segs[0][0] for o, segs in zip(offset, r.index) if segs)
            checked += 1
    assert checked > 1000


def test_materialize_fills_a_mirroring_module_with_the_models_bits() -> None:
    torch = pytest.importorskip("torch")
    ref = _model()
    ref.initialize(seed=3, backend="torch", dtype="bfloat16")
    ref.infer_shape((2, 4))
    ref.initialize(seed=3, backend="torch", dtype="bfloat16", force_reinit=True)
    net = _model()
    net.infer_shape((2, 4))
    net.initialize(seed=3, backend="torch", dtype="bfloat16", device="meta")
    module = _mirror(torch, net)
    assert deferral.materialize(module, device="cpu", net=net) is module
    state = module.state_dict()
    for name, param in ref.collect_params().items():
        assert torch.equal(state[name].view(torch.int16), param.data().detach().view(torch.int16)), name
    assert not any(t.is_meta for t in state.values())


def test_materialize_refuses_a_module_whose_names_are_not_the_models_paths() -> None:
    torch = pytest.importorskip("torch")
    net = nn.Dense(5, in_units=3)
    net.initialize(seed=0, backend="torch", device="meta")
    module = torch.nn.Linear(3, 5, device="meta")
    module.register_buffer("extra", torch.empty(2, device="meta"))
    with pytest.raises(deferral.MaterializeError, match="unexpected: extra"):
        deferral.materialize(module, device="cpu", net=net)
    assert module.weight.is_meta


# -- spawned ranks (gloo, CPU) -------------------------------------------------------------
def _gloo() -> None:
    torch = pytest.importorskip("torch")
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Jobs run so far (by world size) and the directory they share (the world-2 checkpoint)."""
    return {"store": tmp_path_factory.mktemp("sharded"), "done": set()}


def _run(jobs: dict[str, object], world: int, job: str = "layouts") -> None:
    done: set[tuple[str, int]] = jobs["done"]  # type: ignore[assignment]
    if (job, world) in done:
        return
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               DEFERRAL_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(WORKER), job, str(rank), str(world), str(jobs["store"])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for rank in range(world)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=JOB_TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"the world-{world} {job} job did not finish within {JOB_TIMEOUT} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [(rank, out) for rank, (proc, out) in enumerate(zip(procs, outputs)) if proc.returncode]
    assert not failed, "\n".join(f"rank {rank}:\n{out[-4000:]}" for rank, out in failed)
    assert all("tensors identical" in out for out in outputs), outputs
    done.add((job, world))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_sharded_full_tensors_equal_single_process_initialize(world: int, jobs: dict[str, object]) -> None:
    """World 1-4: FSDP2, TP (and FSDP x TP at 4), both dtypes, every initializer, buffers; DDP
    identity; at 2 a DCP save and an address-space limit below the model's size; at 3 loading that
    checkpoint (resharded 2 -> 3) and one gathered deferral file."""
    _gloo()
    if world == 3:
        _run(jobs, 2)  # its checkpoint is loaded at world 3
    _run(jobs, world)


def test_nccl_shards_generated_on_each_gpu_equal_single_process_initialize(jobs: dict[str, object]) -> None:
    """The layout checks with NCCL, one GPU per rank (as many ranks as GPUs, at most 4)."""
    torch = pytest.importorskip("torch")
    if not (torch.cuda.is_available() and torch.distributed.is_available() and torch.distributed.is_nccl_available()):
        pytest.skip("needs CUDA and NCCL")
    _run(jobs, min(4, torch.cuda.device_count()), "cuda")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_shard_generated_on_cuda_has_the_cpu_bits(dtype: str) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from deferral_torch import fill_tensor

    shape = (33, 70)
    for kind in ("uniform", "normal", "truncated_normal"):
        recipe = init.Recipe(kind, -1.0 if kind == "uniform" else 0.5, 1.0)
        for coord in range(3):
            r = region(shape, (3,), (coord,), (Layout("shard", 1),))
            cpu = torch.empty(r.local_shape, dtype=getattr(torch, dtype))
            fill_tensor(cpu, _request(recipe, shape, dtype, r))
            gpu = torch.empty(r.local_shape, dtype=cpu.dtype, device="cuda")
            fill_tensor(gpu, dataclasses.replace(_request(recipe, shape, dtype, r), device="cuda:0"))
            view = torch.int16 if dtype == "bfloat16" else cpu.dtype
            assert torch.equal(gpu.cpu().view(view), cpu.view(view)), (kind, coord)


def test_native_module_on_meta_materializes_and_resets_to_the_models_bits() -> None:
    torch = pytest.importorskip("torch")
    ref = _model()
    ref.infer_shape((2, 4))
    ref.initialize(seed=3, backend="torch")
    net = _model()
    net.infer_shape((2, 4))
    net.initialize(seed=3, backend="torch", device="meta")
    module = deferral.native(net)
    assert all(t.is_meta for t in module.state_dict().values())
    deferral.materialize(net, device="cpu")  # through the native module, which the model has
    assert net[0].weight.data() is module.get_parameter("0.weight")
    want = ref.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(want, net.get_weights()))
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tensor.fill_(7.0)
    module.to_empty(device="cpu")
    module.reset_parameters()  # the FSDP2 documentation's recipe, unsharded
    assert all(np.array_equal(a, b) for a, b in zip(want, net.get_weights()))
    with pytest.raises(deferral.MaterializeError, match="already holds values"):
        deferral.materialize(module, device="cpu")


def test_reset_parameters_refuses_a_parameter_of_unknown_shape() -> None:
    torch = pytest.importorskip("torch")
    net = _model()
    net.initialize(seed=0, backend="torch")
    module = deferral.native(net)
    with torch.no_grad():
        module.get_parameter("0.weight").fill_(2.0)
    with pytest.raises(deferral.DeferredInitializationError, match=r"'2\.weight' \(shape \(3, -1\)\).*infer_shape"):
        module.reset_parameters()
    assert bool((module.get_parameter("0.weight") == 2.0).all())  # nothing was reset
