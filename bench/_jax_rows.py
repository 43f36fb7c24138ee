"""The JAX rows of the benchmark: materialization and the jitted forward pass against JAX's own ways.

* Materialization of the same MLPs as the other backends' rows ((a) the chapter MLP, (b) the
  wide one), every array ready on the device (``block_until_ready``): deferral with the input
  sizes given, against ``flax.nnx.Linear`` layers (LeCun-normal kernels, zero biases: Flax's
  defaults) and against plain ``jax.random.normal`` weights with zero biases.
* The forward pass under ``jax.jit``: ``jax.jit(apply)`` of ``deferral.functional(net)`` against
  a hand-written ``jax.numpy`` MLP holding the same weights (also jitted), batch 1 and 256; and,
  for information, the stateful ``net(x)`` (eager, op by op).

Targets are the other frameworks' (materialization ratio at most 1.0, forward 1.3 at batch 1 and
1.05 at batch 256). ``run.py`` runs these rows in its ``jax`` section when ``--backends`` names
``jax``; the results go under ``"jax"`` in the JSON file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import _models
from bench._report import TARGETS, Table, fmt_count, fmt_ratio, fmt_time, verdict
from bench._timing import measure

__all__ = ["available", "run", "tables"]

BATCHES = (1, 256)


def available() -> bool:
    """Whether JAX and Flax are installed (imports nothing)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("jax", "flax"))


def _ready(tree: Any) -> Any:
    import jax

    return jax.block_until_ready(tree)


def _deferral_net(spec: _models.MLP) -> Any:
    from deferral import nn

    ins = (spec.in_features, *spec.units[:-1])
    layers = [nn.Dense(u, activation="relu" if i < len(spec.units) - 1 else None, in_units=n)
              for i, (u, n) in enumerate(zip(spec.units, ins))]
    return nn.Sequential(layers)


def _materialize_variants(spec: _models.MLP) -> dict[str, Callable[[], Any]]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def ours() -> Any:
        net = _deferral_net(spec)
        net.initialize(seed=0, backend="jax")
        return net, _ready([p.data().value for p in net.collect_params().values()])

    def flax_linear() -> Any:
        rngs = nnx.Rngs(0)
        layers = [nnx.Linear(n, u, rngs=rngs) for u, n in spec.shapes]
        return layers, _ready([(layer.kernel[...], layer.bias[...]) for layer in layers])

    def jax_random() -> Any:
        keys = jax.random.split(jax.random.key(0), len(spec.shapes))
        return _ready([(jax.random.normal(k, (n, u)) * (1.0 / n) ** 0.5, jnp.zeros(u))
                       for k, (u, n) in zip(keys, spec.shapes)])

    return {"deferral": ours, "flax.nnx.Linear": flax_linear, "jax.random": jax_random}


def _forward_variants(spec: _models.MLP, batch: int) -> tuple[dict[str, Callable[[], Any]], float]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import deferral

    net = _deferral_net(spec)
    net.initialize(seed=0, backend="jax")
    apply, params = deferral.functional(net)
    ours = jax.jit(apply)
    layers = [(params[f"{i}.weight"].T, params[f"{i}.bias"]) for i in range(len(spec.units))]

    @jax.jit
    def hand(layers: Any, x: Any) -> Any:
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            if i < len(layers) - 1:
                x = jnp.maximum(x, 0)
        return x

    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, spec.in_features)).astype("float32"))
    diff = float(jnp.abs(ours(params, x) - hand(layers, x)).max())
    if not diff <= 1e-3 * max(1.0, float(jnp.abs(hand(layers, x)).max())):
        raise AssertionError(f"jax forward {spec.label}: deferral and the hand-written model disagree ({diff:g})")
    variants = {"deferral": lambda: ours(params, x).block_until_ready(),
                "jax.numpy": lambda: hand(layers, x).block_until_ready(),
                "stateful net(x)": lambda: net(x).block_until_ready()}
    return variants, diff


def _stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {name: s.as_dict() for name, s in stats.items()}


def run(cfg: dict[str, Any], repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Measure the JAX rows at the scale ``cfg`` gives (``run.SCALES``)."""
    import jax

    specs = [_models.chapter_mlp(), _models.wide_mlp(cfg["b"], 8)]
    out: dict[str, Any] = {"versions": {"jax": jax.__version__, "device": str(jax.devices()[0])},
                           "materialize": [], "forward": []}
    for spec in specs:
        say(f"  materialize {spec.label} [jax] ...")
        stats = measure(_materialize_variants(spec), repeats=repeats, min_time=cfg["min_time"])
        out["materialize"].append({"model": spec.to_dict(), "stats": _stats(stats)})
    for spec in specs:
        for batch in BATCHES:
            say(f"  forward {spec.label} batch {batch} [jax, jit] ...")
            variants, diff = _forward_variants(spec, batch)
            stats = measure(variants, repeats=repeats, min_time=cfg["min_time"], keep_results=False)
            out["forward"].append({"model": spec.to_dict(), "batch": batch, "max_abs_diff": diff,
                                   "stats": _stats(stats)})
    return out


def _ratio(stats: dict[str, Any], a: str, b: str) -> float:
    return float(stats[a]["median_s"] / stats[b]["median_s"])


def tables(r: dict[str, Any]) -> list[Table]:
    """The JAX rows as report tables."""
    target = TARGETS["materialize"]["torch"]
    mat = Table("6a. JAX materialization (arrays ready on the device)",
                ["model", "params", "deferral", "flax.nnx.Linear", "ratio", "jax.random", "ratio", "target",
                 "verdict"])
    for row in r["materialize"]:
        s = row["stats"]
        worst = max(_ratio(s, "deferral", "flax.nnx.Linear"), _ratio(s, "deferral", "jax.random"))
        v, margin = verdict(_ratio(s, "deferral", "flax.nnx.Linear"), target)
        mat.rows.append([row["model"]["label"], fmt_count(row["model"]["params"]),
                         fmt_time(s["deferral"]["median_s"]), fmt_time(s["flax.nnx.Linear"]["median_s"]),
                         fmt_ratio(_ratio(s, "deferral", "flax.nnx.Linear")),
                         fmt_time(s["jax.random"]["median_s"]), fmt_ratio(_ratio(s, "deferral", "jax.random")),
                         f"<= {target}", f"{v} ({margin}; worst ratio {worst:.2f})"])
    mat.notes.append(f"JAX {r['versions']['jax']} on {r['versions']['device']}; medians; a shared machine is noisy.")
    fwd = Table("6b. JAX forward pass under jax.jit (same weights)",
                ["model", "batch", "deferral (jit)", "jax.numpy (jit)", "ratio", "target", "verdict",
                 "stateful net(x), eager"])
    for row in r["forward"]:
        s, batch = row["stats"], row["batch"]
        ratio, goal = _ratio(s, "deferral", "jax.numpy"), TARGETS["forward"][batch]
        v, margin = verdict(ratio, goal)
        fwd.rows.append([row["model"]["label"], str(batch), fmt_time(s["deferral"]["median_s"]),
                         fmt_time(s["jax.numpy"]["median_s"]), fmt_ratio(ratio), f"<= {goal}",
                         f"{v} ({margin})", fmt_time(s["stateful net(x)"]["median_s"])])
    return [mat, fwd]
