"""Forward-pass rows for ``deferral.native(net)`` on TensorFlow: the ``keras.Model`` deferral
returns against the equivalent hand-written ``keras.Sequential`` holding the same weights.

Two ways of calling, the same on both sides: ``model.predict_on_batch(x)`` (Keras' own
compiled predict step) and a ``tf.function`` calling ``model(x)``; batch 1 and 256, on the
MLPs of the forward section. The targets are the forward section's (<= 1.3 at batch 1,
<= 1.05 at batch 256). The ``tf.function`` rows also time the deferral block itself in a
``tf.function`` (``net(x)``, no Keras), which separates what the Keras wrapping costs from
what deferral's ops cost against Keras' layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import _models
from bench._report import TARGETS, Table, fmt_ratio, fmt_time, verdict
from bench._timing import PAIRED_REPEATS, measure, paired_ratio

__all__ = ["run", "table", "verdicts"]

BATCHES = (1, 256)


def _ways(model: Any) -> dict[str, Callable[[Any], Any]]:
    import tensorflow as tf

    return {
        "predict_on_batch": model.predict_on_batch,
        "tf.function(model(x))": tf.function(lambda x: model(x), autograph=False),
    }


def _check_same(label: str, ours: Any, theirs: Any) -> float:
    import numpy as np

    a, b = np.asarray(ours), np.asarray(theirs)
    diff = float(np.abs(a - b).max())
    if not diff <= 1e-3 * max(1.0, float(np.abs(b).max())):
        raise AssertionError(f"keras native {label}: the two Keras models disagree (max |diff| {diff:g})")
    return diff


def run(specs: list[_models.MLP], cfg: dict[str, Any], repeats: int,
        say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure every (model, batch, way); returns the rows :func:`table` renders."""
    import numpy as np
    import tensorflow as tf

    import deferral

    be = _models.TensorflowBackend()
    rng = np.random.default_rng(0)
    rows = []
    for spec in specs:
        net = be.deferral_given(spec)()
        ours, theirs = deferral.native(net), be._keras_model(spec, net.get_weights())
        block = tf.function(lambda x: net(x), autograph=False)  # noqa: B023
        for batch in BATCHES:
            x = be.tensor(rng.standard_normal((batch, spec.in_features)).astype(np.float32))
            for (way, a), b in zip(_ways(ours).items(), _ways(theirs).values()):
                say(f"  keras native {spec.label} batch {batch} [{way}] ...")
                diff = _check_same(f"{spec.label} {way}", a(x), b(x))
                variants = {"deferral": lambda: a(x), "native": lambda: b(x)}  # noqa: B023
                if way.startswith("tf.function"):
                    variants["block"] = lambda: block(x)  # noqa: B023
                stats = measure(variants, repeats=max(repeats, PAIRED_REPEATS), min_time=cfg["min_time"],
                                keep_results=False)
                rows.append({"model": spec.to_dict(), "batch": batch, "way": way, "max_abs_diff": diff,
                             "stats": {name: s.as_dict() for name, s in stats.items()}})
    return rows


def _judged(row: dict[str, Any]) -> tuple[float, float, str, str]:
    """The row's ratio, its target, the verdict and how far from the target."""
    stats = row["stats"]
    ratio = paired_ratio(stats["deferral"], stats["native"])
    target = TARGETS["forward"][row["batch"]]
    return (ratio, target, *verdict(ratio, target))


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table("3d. deferral.native(net) as a keras.Model against a hand-written keras.Sequential "
              "(same weights)", ["model", "batch", "way", "deferral", "native", "ratio", "target",
                                 "verdict", "vs target", "block alone", "keras/block"])
    for row in rows:
        stats = row["stats"]
        d, n = stats["deferral"]["median_s"], stats["native"]["median_s"]
        alone = stats["block"]["median_s"] if "block" in stats else None
        ratio, target, v, margin = _judged(row)
        t.rows.append([row["model"]["label"], str(row["batch"]), row["way"], fmt_time(d), fmt_time(n),
                       fmt_ratio(ratio), f"<= {target}", v, margin, fmt_time(alone),
                       fmt_ratio(d / alone if alone else None)])
    t.notes.append(
        "Both sides are keras.Model objects called the same way: predict_on_batch (Keras' compiled "
        "predict step) or one tf.function calling model(x), traced once. The hand-written model is "
        "keras.Sequential([Input, Dense, ...]) given deferral's weights (kernels transposed); outputs "
        "are checked to agree. 'block alone' is the deferral block in a tf.function without Keras, so "
        "'keras/block' is what the Keras wrapping costs. Times are medians of 21 or more alternating "
        "samples on a shared, noisy machine; the ratio is the median of the per-round ratios."
    )
    return t


def verdicts(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """One summary line per row, as the other sections give."""
    out = []
    for row in rows:
        ratio, target, v, margin = _judged(row)
        out.append((f"keras model {row['model']['label']} {row['way']} batch {row['batch']} [tensorflow]", v,
                    f"{ratio:.3f} vs <= {target} ({margin})"))
    return out
