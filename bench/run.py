"""deferral's benchmark suite: one command, one process, ratios against the frameworks.

    python bench/run.py [--quick] [--backends numpy torch tensorflow] [--repeats N]
                        [--markdown docs/performance.md] [--plot docs/img/materialize.png]

Sections (``--sections`` picks some): ``import`` (``import deferral`` time in fresh
interpreters), ``rates`` (the generator's rates per recipe family against the machine's
limits, memory write bandwidth and the Philox floor, and against torch's ``nn.init`` and Flax),
``materialize`` (the chapter MLP (a) and an 8x4096 MLP (b) against each
framework's own default initialization), ``sweep`` (square MLPs from ~1e5 to ~1e8
parameters, for the plot), ``memory`` (peak memory while materializing, a fresh process per
case), ``forward`` (a forward pass against the equivalent native model, batch 1 and 256),
``native`` (``deferral.native(net)`` as a torch.nn.Module, eager and compiled, against torch.nn;
``--sections native --backends torch`` runs it alone), ``gpt2`` (GPT-2-small on torch against
torch.nn), ``cuda`` (GB/s on a GPU; skipped without one) and ``jax`` (the JAX rows,
bench/_jax_rows.py, when ``--backends`` names jax). Variants of a case alternate in one process
(A B A B ...) after one warm-up each; medians are reported with the issue's targets.

Results go to ``bench/results/latest.json``; ``--from-json`` re-renders the tables, the docs
page and the plot from such a file without measuring again.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("DEFERRAL_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench import _gpt2, _imports, _jax_rows, _keras_rows, _machine, _memory, _models, _rates, _report  # noqa: E402
from bench._timing import measure  # noqa: E402

__all__ = ["SCALES", "main", "run"]

SECTIONS = ("import", "rates", "materialize", "sweep", "memory", "forward", "native", "gpt2", "cuda", "jax")
TEMPLATE = Path(__file__).resolve().parent / "performance_template.md"

#: What each scale measures. ``full`` is the reference run (a few minutes on 2 cores),
#: ``quick`` scales model (b) and the sweep down, ``tiny`` exists for the harness's own test.
SCALES: dict[str, dict[str, Any]] = {
    "full": {"b": 4096, "sweep": (128, 256, 512, 1024, 2048, 4096), "depth": 6, "repeats": 5,
             "sweep_repeats": 3, "import_runs": 11, "min_time": 0.05,
             "memory_variants": ("deferral", "deferred", "native"), "resnet_width": 64, "rates_side": 4096,
             "gpt2": True},
    "quick": {"b": 1024, "sweep": (128, 256, 512, 1024), "depth": 6, "repeats": 3,
              "sweep_repeats": 3, "import_runs": 5, "min_time": 0.02,
              "memory_variants": ("deferral", "native"), "resnet_width": 64, "rates_side": 2048,
              "gpt2": True},
    "tiny": {"b": 64, "sweep": (16, 32), "depth": 2, "repeats": 2, "sweep_repeats": 2,
             "import_runs": 1, "min_time": 0.002, "memory_variants": ("deferral", "native"),
             "resnet_width": 8, "rates_side": 256, "gpt2": False},
}
BATCHES = (1, 256)


def _load() -> float | None:
    """The 1-minute load average (other work on the machine disturbs the numbers)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _say(text: str) -> None:
    print(text, flush=True)


def _stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {name: s.as_dict() for name, s in stats.items()}


def _pending() -> list[str]:
    """What the suite cannot measure yet, said rather than faked."""
    missing = _models.convolutions_available()
    if missing is None:
        return []
    return [f"(c) ResNet-style stack: pending - deferral does not export {missing} yet; "
            "nothing is measured for it (the case is in bench/_models.py and runs once they exist)."]


def _check_params(spec: _models.Spec) -> None:
    """The deferral model declares exactly the parameters the native side builds."""
    declared = sum(p.size or 0 for p in spec.deferral_net(True).collect_params().values())
    if declared != spec.params:
        raise AssertionError(f"{spec.label}: the deferral model declares {declared} parameters, the "
                             f"native side builds {spec.params}; the comparison would be unequal")


# -- sections -------------------------------------------------------------------------------
def run_materialize(backends: dict[str, _models.Backend], specs: list[_models.Spec], cfg: dict[str, Any],
                    repeats: int) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        _check_params(spec)
    for name, be in backends.items():
        for spec in specs:
            _say(f"  materialize {spec.label} [{name}] ...")
            variants = {"deferral": be.deferral_given(spec), "native": be.native_materialize(spec),
                        "deferred": be.deferral_deferred(spec), **be.extra_materialize(spec)}
            stats = measure(variants, repeats=repeats, min_time=cfg["min_time"])
            rows.append({"backend": name, "model": spec.to_dict(), "native_label": be.native_label(spec),
                         "stats": _stats(stats)})
            del variants
            gc.collect()
    return rows


def run_sweep(backends: dict[str, _models.Backend], cfg: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, be in backends.items():
        for width in cfg["sweep"]:
            spec = _models.square_mlp(width, cfg["depth"])
            _say(f"  sweep {spec.label} [{name}] ...")
            stats = measure({"deferral": be.deferral_given(spec), "native": be.native_materialize(spec)},
                            repeats=min(repeats, cfg["sweep_repeats"]), min_time=cfg["min_time"])
            rows.append({"backend": name, "model": spec.to_dict(), "stats": _stats(stats)})
    return rows


def run_memory(names: list[str], spec: _models.MLP, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    # The warm-up goes down the same code paths (1100 x 1024 is above every backend's block
    # and threading thresholds) but stays small: memory an allocator keeps from it and hands
    # to the measured model would otherwise hide part of the measured peak.
    out, inp = spec.shapes[0]
    warm = (_models.MLP("warm", "warm-up", 1024, (1100,)) if out * inp > 1100 * 1024
            else _models.MLP("warm", "warm-up", inp, (out,)))
    ways = {"deferral": "deferral (shapes given)", "deferred": "deferral (deferred, 1st call)", "native": ""}
    rows = []
    for name in names:
        native = _models.native_init_label(name)
        for variant in cfg["memory_variants"]:
            _say(f"  memory {spec.label} [{name}] {variant} (fresh process) ...")
            case = {"backend": name, "variant": variant, "spec": spec.to_dict(), "warm": warm.to_dict()}
            rows.append({"backend": name, "variant": variant, "way": ways[variant] or f"native: {native}",
                         "model": spec.to_dict(), "result": _memory.measure_in_child(case)})
    return rows


def _host(y: Any) -> Any:
    import numpy as np

    if hasattr(y, "detach"):
        return y.detach().cpu().numpy()
    return np.asarray(y)


def _forward_pair(ours: Any, theirs: Any, x: Any, cfg: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Alternate ``ours(x)`` and ``theirs(x)``; each result is dropped as the call returns."""
    stats = measure({"deferral": lambda: ours(x), "native": lambda: theirs(x)},
                    repeats=repeats, min_time=cfg["min_time"], keep_results=False)
    return _stats(stats)


def _check_same(label: str, ours: Any, theirs: Any) -> float:
    """Max |difference| of two outputs; raises when the models are not the same model."""
    import numpy as np

    a, b = _host(ours), _host(theirs)
    diff = float(np.abs(a - b).max())
    if not diff <= 1e-3 * max(1.0, float(np.abs(b).max())):
        raise AssertionError(f"forward {label}: deferral and the native model disagree (max |diff| "
                             f"{diff:g}); the comparison would not be of equal models")
    return diff


def run_forward(backends: dict[str, _models.Backend], specs: list[_models.MLP], cfg: dict[str, Any],
                repeats: int) -> list[dict[str, Any]]:
    import numpy as np

    rows = []
    rng = np.random.default_rng(0)
    for name, be in backends.items():
        for spec in specs:
            net = be.deferral_given(spec)()
            weights = net.get_weights()
            native = be.native_model(spec, weights)
            extra = be.extra_forward(spec, net, weights)
            for batch in BATCHES:
                _say(f"  forward {spec.label} batch {batch} [{name}] ...")
                x = be.tensor(rng.standard_normal((batch, spec.in_features)).astype(np.float32))
                diff = _check_same(f"{spec.label} [{name}]", net(x), native(x))
                row = {"backend": name, "model": spec.to_dict(), "batch": batch,
                       "native_label": be.native_forward, "max_abs_diff": diff,
                       "stats": _forward_pair(net, native, x, cfg, repeats),
                       "extra": {label: _forward_pair(ours, theirs, x, cfg, repeats)
                                 for label, (ours, theirs) in extra.items()}}
                rows.append(row)
            del net, native, extra, weights
            gc.collect()
    return rows


# -- driver ---------------------------------------------------------------------------------
def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Measure what ``args`` asks for, printing each table as it is done; return the results."""
    cfg = SCALES[args.scale]
    repeats = args.repeats or cfg["repeats"]
    names = [n for n in args.backends if n in _models.BACKENDS and _models.available(n)]
    for missing in sorted(set(args.backends) - set(names)):
        _say(f"backend {missing!r} skipped: its framework is not installed")
    sections = args.sections
    results: dict[str, Any] = {
        "meta": {"command": command, "scale": args.scale, "repeats": repeats, "backends": names,
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                 "load_start": _load(), "section_s": {}},
    }
    clock = time.perf_counter()

    def done(section: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        results["meta"]["section_s"][section] = round(now - clock, 1)
        clock = now

    if "import" in sections:  # before this process imports anything heavy (it does not matter to
        # the children, but keeps the order obvious)
        _say(f"import deferral x{cfg['import_runs']} (fresh interpreters) ...")
        results["import"] = _imports.measure_import(cfg["import_runs"])
        done("import")
    backends = {n: _models.load(n) for n in names}
    results["machine"] = _machine.describe(names)
    # The frameworks' ~500k module-level objects would make every gc.collect() between samples
    # take ~0.4 s; move them out of the collector's sight (new objects are still collected).
    gc.collect()
    gc.freeze()
    done("load")
    _say(_report.render_text([_report.machine_table(results)]))
    if "import" in results:
        _say(_report.render_text([_report.import_table(results["import"])]))
    specs = [_models.chapter_mlp(), _models.wide_mlp(cfg["b"], 8)]
    if "rates" in sections:
        _say(f"  generator rates ({cfg['rates_side']}x{cfg['rates_side']}) ...")
        results["rates"] = _rates.run(cfg["rates_side"], repeats, cfg["min_time"], torch="torch" in names)
        done("rates")
        _say(_report.render_text(_report.rates_tables(results["rates"])))
    if "materialize" in sections:
        results["pending"] = _pending()
        width = cfg["resnet_width"]
        label = "(c) ResNet-18-style" + ("" if width == 64 else f" (base width {width})")
        conv = [] if results["pending"] else [_models.ResNet(label=label, width=width)]
        results["materialize"] = run_materialize(backends, specs + conv, cfg, repeats)
        from bench import _small

        _say(f"  small tensors: {_small.LAYERS} x Dense({_small.UNITS}) ...")
        results["small"] = _small.run(list(backends), repeats)
        done("materialize")
        _say(_report.render_text([*_report.materialize_tables(results), _small.table(results["small"])]))
    if "sweep" in sections:
        results["sweep"] = run_sweep(backends, cfg, repeats)
        done("sweep")
        _say(_report.render_text([_report.sweep_table(results)]))
    if "memory" in sections:
        results["memory"] = run_memory(names, specs[1], cfg)
        done("memory")
        _say(_report.render_text([_report.memory_table(results)]))
    if "forward" in sections:
        results["forward"] = run_forward(backends, specs, cfg, repeats)
        if "tensorflow" in backends:
            results["keras_native"] = _keras_rows.run(specs, cfg, repeats, _say)
        done("forward")
        _say(_report.render_text(_report.forward_table(results)))
        if "keras_native" in results:
            _say(_report.render_text([_keras_rows.table(results["keras_native"])]))
    if "gpt2" in sections:
        if "torch" in names and cfg["gpt2"]:
            _say("  GPT-2-small on torch ...")
            results["gpt2"] = _gpt2.run(repeats)
        else:
            results["gpt2"] = {"skipped": "the torch backend is not selected or not installed" if "torch" not in names
                               else f"not measured at scale {args.scale}"}
        done("gpt2")
        _say(_report.render_text([_report.gpt2_table(results["gpt2"])]))
    if "native" in sections and "torch" in names:
        from bench import _native_rows

        results["native"] = _native_rows.run(specs, cfg, repeats, _say)
        done("native")
        _say(_report.render_text([_native_rows.table(results)]))
    if "cuda" in sections:
        if "torch" in names:
            from bench import cuda

            results["cuda"] = cuda.run(repeats=repeats, quick=args.scale != "full")
        else:
            reason = "the torch backend is not selected or not installed"
            _say(f"CUDA benchmark skipped: {reason}.")
            results["cuda"] = {"skipped": reason}
        done("cuda")
    if "jax" in sections and "jax" in args.backends:
        results["jax"] = _jax_rows.run(cfg, repeats, _say) if _jax_rows.available() else {
            "skipped": "jax or flax is not installed"}
        done("jax")
        if "skipped" not in results["jax"]:
            _say(_report.render_text(_jax_rows.tables(results["jax"])))
    results["meta"]["load_end"] = _load()
    _say(_report.render_text([_report.summary_table(results)]))
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="deferral's benchmarks: materialization, memory, forward pass and import time, "
                    "as ratios against each framework's own way, with the project's targets.",
    )
    p.add_argument("--quick", action="store_true",
                   help="smaller model (b) and sweep, fewer repeats (under a minute); same as --scale quick")
    p.add_argument("--scale", choices=tuple(SCALES), default=None,
                   help="full (default), quick, or tiny (the harness's own smoke test)")
    p.add_argument("--backends", nargs="+", choices=(*_models.BACKENDS, "jax"), default=[*_models.BACKENDS, "jax"],
                   help="backends to measure (default: every installed one; jax: bench/_jax_rows.py)")
    p.add_argument("--repeats", type=int, default=None, help="samples per variant (default: 5, quick: 3; the sweep takes at most 3)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="what to measure (default: everything)")
    p.add_argument("--markdown", type=Path, default=None, metavar="PATH",
                   help="write the docs page (e.g. docs/performance.md)")
    p.add_argument("--plot", type=Path, default=None, metavar="PATH",
                   help="write the plot PNG (e.g. docs/img/materialize.png); needs matplotlib")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json", metavar="PATH",
                   help="where to save the raw results (default: bench/results/latest.json)")
    p.add_argument("--from-json", type=Path, default=None, metavar="PATH",
                   help="measure nothing: render tables, --markdown and --plot from saved results")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.quick and args.scale not in (None, "quick"):
        _parser().error("--quick and --scale disagree; give one")
    args.scale = "quick" if args.quick else (args.scale or "full")
    if args.repeats is not None and args.repeats < 1:
        _parser().error("--repeats must be at least 1")
    command = " ".join(["python bench/run.py", *argv])
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        _say(_report.render_text(_report.tables(results)))
        if "materialize" in results.get("jax", {}):
            _say(_report.render_text(_jax_rows.tables(results["jax"])))
    else:
        results = run(args, command)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        _say(f"raw results: {args.json}")
    if args.plot is not None:
        why = _report.plot(results, args.plot)
        _say(f"plot skipped: {why}" if why else f"plot: {args.plot}")
    if args.markdown is not None:
        _report.write_markdown(results, args.markdown, args.plot, TEMPLATE)
        _say(f"docs page: {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
