"""Sharded initialization against world size: deferral.materialize vs torch's meta + to_empty + reset_parameters.

Run ``python bench/sharded.py`` (standalone; not part of ``bench/run.py``). For each world size
(default 1 to 4) it starts one process per rank (gloo, CPU, 127.0.0.1). Every rank builds a
GPT-2-small-sized decoder (12 layers, width 768, vocabulary 50,257, 1,024 positions: 124 M
parameters; ``--layers`` makes it shallower) on the meta device, shards it with FSDP2
(``fully_shard`` per decoder block, then the root), and then:

- **deferral**: ``deferral.materialize(module, device="cpu")`` (each rank generates its shard);
- **torch**: the FSDP2 documentation's recipe on an equivalent ``torch.nn`` decoder
  (``nn.Embedding``, ``nn.LayerNorm``, ``nn.Linear``), ``torch.manual_seed(0)`` on every rank,
  ``module.to_empty(device="cpu")`` then ``reset_parameters()`` on every submodule that has it.

Per rank it measures the time and the peak resident memory beyond what the rank held before
(the kernel's high-water mark, reset first, as in ``bench/_memory.py``), next to the rank's
local shard bytes. Then each parameter is gathered in turn (``full_tensor()``) and rank 0 compares
it with the same parameter at world size 1 (saved by the world-1 run): the largest absolute
difference, for torch and for deferral (which must be 0). The table goes to stdout (markdown).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._memory import _hwm, _reset_hwm, _rss, _trim  # noqa: E402

SEED = 0
UNITS, HEADS, VOCAB, POSITIONS = 768, 12, 50257, 1024


# -- the two models --------------------------------------------------------------------------
def deferral_module(layers: int, units: int = UNITS, vocab: int = VOCAB) -> tuple[Any, Any]:
    """The deferral GPT decoder on the meta device and a torch module mirroring its paths."""
    import torch

    import deferral.models
    from deferral import TensorSpec

    net = deferral.models.gpt_decoder(layers, units, HEADS, vocab, POSITIONS)
    spec = TensorSpec((1, 8), "int64")
    net.infer_shape(spec, spec)
    net.initialize(seed=SEED, backend="torch", device="meta")
    root = torch.nn.Module()
    for path, param in net.collect_params().items():
        module = root
        *parents, leaf = path.split(".")
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        tensor = torch.empty(param.shape, device="meta")
        if param.trainable:
            module.register_parameter(leaf, torch.nn.Parameter(tensor))
        else:
            module.register_buffer(leaf, tensor)
    return net, root


def torch_module(layers: int) -> Any:
    """An equivalent decoder in torch.nn on the meta device (the same parameter shapes)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(UNITS), nn.LayerNorm(UNITS)
            self.q, self.k, self.v, self.o = (nn.Linear(UNITS, UNITS) for _ in range(4))
            self.ffn1, self.ffn2 = nn.Linear(UNITS, 4 * UNITS), nn.Linear(4 * UNITS, UNITS)

    with torch.device("meta"):
        root = nn.Module()
        root.token_embedding = nn.Embedding(VOCAB, UNITS)
        root.position_embedding = nn.Embedding(POSITIONS, UNITS)
        root.blocks = nn.Sequential(*(Block() for _ in range(layers)))
        root.norm = nn.LayerNorm(UNITS)
    return root


def shard(root: Any) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (int(os.environ["WORLD"]),))
    for block in root.blocks.children():
        fully_shard(block, mesh=mesh)
    fully_shard(root, mesh=mesh)


# -- measuring one rank ------------------------------------------------------------------------
def measured(fill: Any) -> tuple[float, int]:
    """Seconds and peak RSS beyond the starting RSS while ``fill()`` runs."""
    gc.collect()
    _trim()
    before = _rss()
    _reset_hwm()
    start = time.perf_counter()
    fill()
    seconds = time.perf_counter() - start
    return seconds, max(0, (_hwm() or _rss()) - before)


def local_bytes(root: Any) -> int:
    from torch.distributed.tensor import DTensor

    total = 0
    for tensor in [*root.parameters(), *root.buffers()]:
        local = tensor._local_tensor if isinstance(tensor, DTensor) else tensor
        total += local.untyped_storage().nbytes() if local.numel() else 0
    return total


def max_difference(root: Any, reference: str | None, rank: int) -> float:
    """Gather each parameter in turn; rank 0 compares it with the world-1 values (or saves them)."""
    import torch
    from torch.distributed.tensor import DTensor

    worst = 0.0
    saved = torch.load(reference) if reference and os.path.exists(reference) and rank == 0 else None
    keep: dict[str, Any] = {}
    for name, tensor in [*root.named_parameters(), *root.named_buffers()]:
        whole = (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach()
        if rank:
            continue
        if saved is None:
            keep[name] = whole.clone()
        else:
            worst = max(worst, float((whole - saved[name]).abs().max()))
    if saved is None and rank == 0 and reference:
        torch.save(keep, reference)
    return worst


def worker(rank: int, world: int, layers: int, store: str) -> None:
    import torch
    import torch.distributed as dist

    import deferral

    os.environ["WORLD"] = str(world)
    dist.init_process_group("gloo", init_method=f"file://{store}/rendezvous-{world}", rank=rank, world_size=world)
    warm_net, warm = deferral_module(1, 48, 64)  # code paths and pools exist before the clock starts
    shard(warm)
    deferral.materialize(warm, device="cpu", net=warm_net)
    del warm, warm_net

    net, ours = deferral_module(layers)
    shard(ours)
    ours_time, ours_peak = measured(lambda: deferral.materialize(ours, device="cpu", net=net))
    ours_local = local_bytes(ours)
    ours_diff = max_difference(ours, f"{store}/deferral-{layers}.pt", rank)

    torch.manual_seed(SEED)
    theirs = torch_module(layers)
    shard(theirs)

    def torch_fill() -> None:
        theirs.to_empty(device="cpu")
        for module in theirs.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    torch.manual_seed(SEED)
    theirs_time, theirs_peak = measured(torch_fill)
    theirs_diff = max_difference(theirs, f"{store}/torch-{layers}.pt", rank)
    row = {"rank": rank, "deferral_s": ours_time, "deferral_peak": ours_peak, "local": ours_local,
           "torch_s": theirs_time, "torch_peak": theirs_peak, "torch_local": local_bytes(theirs),
           "deferral_diff": ours_diff, "torch_diff": theirs_diff}
    rows: list[Any] = [None] * world
    dist.all_gather_object(rows, row)
    if rank == 0:
        print("RESULT " + json.dumps(rows), flush=True)
    dist.destroy_process_group()


# -- the driver ------------------------------------------------------------------------------
def run_world(world: int, layers: int, store: str, timeout: float) -> list[dict[str, Any]]:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, __file__, "--worker"]
    procs = [subprocess.Popen([*cmd, str(r), str(world), str(layers), store], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for r in range(world)]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"world {world} failed:\n" + "\n".join(o[-3000:] for o in outs))
    line = next(x for x in outs[0].splitlines() if x.startswith("RESULT "))
    return list(json.loads(line[len("RESULT "):]))


def table(results: dict[int, list[dict[str, Any]]], chunk_bytes: int) -> str:
    mib = 1 << 20
    lines = [
        "| ranks | deferral time (s) | deferral peak extra / rank (MiB) | local shard / rank (MiB) "
        "| bound: shard + chunk + 10% (MiB) | torch time (s) | torch peak extra / rank (MiB) "
        "| torch max abs diff vs 1 rank | deferral max abs diff vs 1 rank |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for world, rows in sorted(results.items()):
        local = max(r["local"] for r in rows)
        bound = (local + chunk_bytes) * 1.1
        lines.append(
            f"| {world} | {max(r['deferral_s'] for r in rows):.2f} | {max(r['deferral_peak'] for r in rows) / mib:.0f} "
            f"| {local / mib:.0f} | {bound / mib:.0f} | {max(r['torch_s'] for r in rows):.2f} "
            f"| {max(r['torch_peak'] for r in rows) / mib:.0f} | {max(r['torch_diff'] for r in rows):.3g} "
            f"| {max(r['deferral_diff'] for r in rows):.3g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--layers", type=int, default=12, help="decoder layers (12: GPT-2 small)")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        rank, world, layers, store = args.worker
        worker(int(rank), int(world), int(layers), store)
        return 0
    from deferral_torch._native import CPU_CHUNK_ELEMENTS

    worlds = sorted(set(args.worlds) | {1})  # world 1 gives the reference values
    with tempfile.TemporaryDirectory() as store:
        results = {w: run_world(w, args.layers, store, args.timeout) for w in worlds}
    # One chunk: the float64 temporaries of one generation step (a few live at once).
    print(f"GPT decoder, {args.layers} layers, width {UNITS}, vocabulary {VOCAB}: float32, gloo on CPU\n")
    print(table(results, CPU_CHUNK_ELEMENTS * 8 * 8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
