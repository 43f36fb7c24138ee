"""Small tensors: what materializing a parameter costs beyond generating its values.

``200 x Dense(64, in_units=64)`` (400 tensors: 64x64 Xavier-uniform weights and 64 zero
biases) is initialized on each backend, the model built outside the clock. The time per
tensor is split into **generation** (the same recipes, keys and dtype filled into preallocated
arrays of the same shapes by ``deferral._fill.fill``: the value generator alone, its stream
setup included) and **the rest** (total minus generation: recording the intents, the
transaction, allocating and first touching new memory, the framework's tensor object). Page
faults per tensor are counted too: on a VM one costs about 2 µs, and a 64x64 float32 weight
touches four new pages, which the rest includes as the native frameworks' own inits do.
Samples of both alternate; medians are reported.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench._report import Table, verdict

__all__ = ["LAYERS", "TARGET_REST_NS", "UNITS", "run", "table", "verdicts"]

LAYERS, UNITS = 200, 64
#: The issue's target: the non-generation cost per parameter, at most (ns).
TARGET_REST_NS = 10_000.0


def _net() -> Any:
    from deferral import nn

    net = nn.Sequential()
    for _ in range(LAYERS):
        net.add(nn.Dense(UNITS, in_units=UNITS))
    return net


def _generation(net: Any) -> Callable[[], None]:
    """Fill preallocated arrays with the recipes ``net``'s parameters were materialized from."""
    import numpy as np

    from deferral import _fill
    from deferral.random import derive_key

    jobs = []
    for param in net.collect_params().values():
        out = np.empty(param.size, dtype=param.dtype)
        jobs.append((param.init.recipe(param.shape), derive_key(param.seed, param.path), param.shape, out))

    def fill_all() -> None:
        for recipe, key, shape, out in jobs:
            _fill.fill(recipe, key, shape, 0, out, out.dtype.name)

    return fill_all


def _faults() -> int:
    try:
        import resource
    except ImportError:  # not on POSIX: not counted
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _sample(backend: str) -> tuple[float, int, Any]:
    """Seconds to initialize one freshly built model, the page faults meanwhile, and the model."""
    net = _net()
    gc.collect()
    gc.disable()
    try:
        faults = _faults()
        start = time.perf_counter()
        net.initialize(seed=0, backend=backend, dtype="float32")
        elapsed = time.perf_counter() - start
        faults = _faults() - faults
    finally:
        gc.enable()
    return elapsed, faults, net


def _time(fn: Callable[[], None]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def run(backends: list[str], repeats: int) -> list[dict[str, Any]]:
    """One row per backend: ns per tensor in total, for generation and for the rest."""
    rows = []
    samples = max(repeats, 5) * 3  # a sample lasts milliseconds: take more of them
    for backend in backends:
        _, _, net = _sample(backend)  # warm-up, and the recipes
        generate = _generation(net)
        tensors = len(net.collect_params())
        generate()
        totals, gens, faults = [], [], []
        for _ in range(samples):
            elapsed, count, net = _sample(backend)
            totals.append(elapsed)
            faults.append(count)
            del net
            gens.append(_time(generate))
        total, gen = statistics.median(totals) / tensors * 1e9, statistics.median(gens) / tensors * 1e9
        rows.append({"backend": backend, "tensors": tensors, "total_ns": total, "generation_ns": gen,
                     "rest_ns": total - gen, "faults_per_tensor": statistics.median(faults) / tensors,
                     "samples": samples})
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(f"1d. Small tensors: {LAYERS} x Dense({UNITS}, in_units={UNITS}), per tensor",
              ["backend", "total", "generation", "rest", "page faults", "target (rest)", "verdict", "vs target"])
    for row in rows:
        v, margin = verdict(row["rest_ns"], TARGET_REST_NS)
        t.rows.append([row["backend"], f"{row['total_ns']:,.0f} ns", f"{row['generation_ns']:,.0f} ns",
                       f"{row['rest_ns']:,.0f} ns", f"{row['faults_per_tensor']:.2f}",
                       f"<= {TARGET_REST_NS:,.0f} ns", v, margin])
    t.notes.append(
        "initialize(seed=0) of a model built outside the clock (Xavier-uniform 64x64 weights, zero biases); "
        "generation = the same recipes filled into preallocated arrays; rest = total - generation, first "
        "touch of the new memory included (page faults: minor faults per tensor, getrusage)."
    )
    return t


def verdicts(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    out = []
    for row in rows:
        v, margin = verdict(row["rest_ns"], TARGET_REST_NS)
        out.append((f"small tensors: non-generation cost per tensor [{row['backend']}]", v,
                    f"{row['rest_ns']:,.0f} ns vs <= {TARGET_REST_NS:,.0f} ns ({margin})"))
    return out
