"""Turning results into tables (console text and Markdown), the docs page and the plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TARGETS",
    "Table",
    "cuda_table",
    "gpt2_table",
    "rate_verdicts",
    "rates_tables",
    "forward_table",
    "import_table",
    "machine_table",
    "materialize_tables",
    "memory_table",
    "plot",
    "render_markdown",
    "render_text",
    "summary_table",
    "sweep_table",
    "tables",
    "verdicts",
    "write_markdown",
]

#: The issue's targets: largest acceptable ratio (or seconds, for the import).
TARGETS = {
    "materialize": {"numpy": 1.5, "torch": 1.0, "tensorflow": 1.0},
    "memory": 0.10,
    "forward": {1: 1.3, 256: 1.05},
    "import_s": 0.100,
    # generator rates (section "rates"): fractions of a reference rate (at least) or ratios (at most)
    "uniform_of_floor": 0.80,
    "normal_of_uniform": 0.50,
    "normal_vs_torch": 1.0,
    "vs_flax": 1.0,
    # GPT-2-small on torch (section "gpt2"): deferral / torch.nn
    "gpt2_init": 0.8,
    "gpt2_first_call": 1.0,
}


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- formatting -----------------------------------------------------------------------------
def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def fmt_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def fmt_mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f} MiB"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


def verdict(value: float, target: float, points: bool = False) -> tuple[str, str]:
    """('PASS'|'MISS', how far from the target): a signed percentage of the target, or, for a
    target that is itself a fraction (``points``), the difference in percentage points."""
    margin = f"{(value - target) * 100:+.1f} pts" if points else f"{(value / target - 1) * 100:+.0f}%"
    return ("PASS" if value <= target else "MISS"), margin


def verdict_at_least(value: float, target: float) -> tuple[str, str]:
    """('PASS'|'MISS', margin in percentage points) for a fraction that must reach ``target``."""
    return ("PASS" if value >= target else "MISS"), f"{(value - target) * 100:+.1f} pts"


# -- tables -------------------------------------------------------------------------------
def machine_table(results: dict[str, Any]) -> Table:
    meta = results["meta"]
    t = Table("Machine", ["item", "value"])
    for k, v in results["machine"].items():
        t.rows.append([k, str(v)])
    t.rows.append(["command", meta["command"]])
    t.rows.append(["scale / repeats", f"{meta['scale']} / {meta['repeats']} (medians; variants alternate)"])
    t.rows.append(["date (UTC)", meta["date"]])
    load = f"{meta.get('load_start')} at start"
    if meta.get("load_end") is not None:
        load += f", {meta['load_end']} at end"
    t.rows.append(["load average (1 min)", load + " (other work on the machine disturbs the numbers)"])
    if meta.get("section_s"):
        t.rows.append(["seconds per section", ", ".join(f"{k} {v}" for k, v in meta["section_s"].items())])
    return t


def import_table(r: dict[str, Any]) -> Table:
    target = TARGETS["import_s"]
    v, margin = verdict(r["median_s"], target)
    t = Table("4. `import deferral` (fresh interpreters)",
              ["median", "min..max", "runs", "target", "verdict", "vs target", "process cost"])
    t.rows.append([fmt_time(r["median_s"]), f"{fmt_time(r['min_s'])}..{fmt_time(r['max_s'])}", str(r["runs"]),
                   f"<= {fmt_time(target)}", v, margin, fmt_time(r["process_extra_s"])])
    installed = ", ".join(r["installed"]) or "none"
    imported = ", ".join(r["imported"]) or "none"
    t.notes.append(f"frameworks installed: {installed}; imported by `import deferral`: {imported} "
                   f"({'OK' if not r['imported'] else 'VIOLATION'}); imported by "
                   f"`deferral.available_backends()`: {', '.join(r['imported_by_available_backends']) or 'none'}; "
                   f"NumPy imported: {'yes' if r['numpy_imported'] else 'no'}.")
    t.notes.append("median = `import deferral` timed inside the interpreter; process cost = median wall "
                   "time of `python -c <import deferral>` minus that of `python -c pass` (start-up and "
                   "the JSON report included).")
    return t


def materialize_tables(results: dict[str, Any]) -> list[Table]:
    main = Table(
        "1. Materialization time (build + materialize every parameter, float32)",
        ["model", "params", "backend", "deferral", "native default init", "ratio", "target",
         "verdict", "vs target", "deferred path", "deferred / native"],
    )
    extra = Table("1b. Other native ways (information, no target)",
                  ["model", "backend", "native way", "time", "deferral / this"])
    for row in results.get("materialize", []):
        be, spec, s = row["backend"], row["model"], row["stats"]
        d, n, dd = s["deferral"]["median_s"], s["native"]["median_s"], s["deferred"]["median_s"]
        target = TARGETS["materialize"][be]
        v, margin = verdict(d / n, target)
        main.rows.append([spec["label"], fmt_count(spec["params"]), be, fmt_time(d),
                          f"{fmt_time(n)} ({row['native_label']})", fmt_ratio(d / n), f"<= {target}",
                          v, margin, fmt_time(dd), fmt_ratio(dd / n)])
        for name, st in s.items():
            if name not in ("deferral", "native", "deferred"):
                extra.rows.append([spec["label"], be, name, fmt_time(st["median_s"]),
                                   fmt_ratio(d / st["median_s"])])
    for line in results.get("pending", []):
        main.notes.append(line)
    main.notes.append(
        "deferral = construct the model with every input size given (in_units, in_channels) + "
        "initialize(seed=0, backend=..., dtype='float32'), which materializes; deferred path = "
        "construct without input sizes + initialize() + the first forward pass on one example "
        "(a row; a 32x32 image for (c)), its compute included. Native = the framework's own "
        "layers with their default initializers, the same parameter shapes (BatchNorm running "
        "statistics included), float32. The target applies to the deferral column."
    )
    tables = [main]
    if extra.rows:
        tables.append(extra)
    return tables


def memory_table(results: dict[str, Any]) -> Table:
    t = Table(
        "2. Peak memory while materializing (fresh process per case)",
        ["model", "backend", "way", "param bytes", "peak extra", "extra / params", "target",
         "verdict", "retained", "NumPy temporaries", "method"],
    )
    target = TARGETS["memory"]
    for row in results.get("memory", []):
        r, spec = row["result"], row["model"]
        ratio = r["extra_bytes"] / r["param_bytes"]
        if row["variant"] == "deferral":
            v, _ = verdict(ratio, target, points=True)
            tgt = f"<= {target:.0%}"
        else:
            v, tgt = "(info)", "-"
        t.rows.append([spec["label"], row["backend"], row["way"], fmt_mib(r["param_bytes"]),
                       fmt_mib(r["extra_bytes"]), f"{ratio:.1%}", tgt, v, fmt_mib(r["retained_bytes"]),
                       fmt_mib(r["numpy_temp_bytes"]), r["method"]])
    t.notes.append(
        "Each case runs in a fresh interpreter: imports and a warm-up materialization of a small "
        "model the same way first, then gc + malloc_trim and the baseline RSS; the kernel's RSS high-water mark is reset "
        "(/proc/self/clear_refs = 5) and the model is materialized; peak extra = VmHWM - baseline "
        "- parameter bytes (RSS sees every allocator: NumPy, torch, TensorFlow). retained = RSS "
        "after - baseline (about the parameter bytes). NumPy temporaries = tracemalloc peak minus "
        "what is still held at the end, from a second materialization under tracemalloc (sees "
        "NumPy's buffers only, not torch's or TensorFlow's). The target applies to 'deferral'."
    )
    return t


def forward_table(results: dict[str, Any]) -> list[Table]:
    t = Table("3. Forward pass after materialization (same weights on both sides)",
              ["model", "batch", "backend", "deferral", "native", "ratio", "target", "verdict",
               "vs target", "native model"])
    info = Table("3b. Forward pass, other ways of calling (information, no target)",
                 ["model", "batch", "backend", "way", "deferral", "native", "ratio"])
    for row in results.get("forward", []):
        d, n = row["stats"]["deferral"]["median_s"], row["stats"]["native"]["median_s"]
        target = TARGETS["forward"].get(row["batch"])
        if target is None:
            v, margin, tgt = "(info)", "-", "-"
        else:
            v, margin = verdict(d / n, target)
            tgt = f"<= {target}"
        t.rows.append([row["model"]["label"], str(row["batch"]), row["backend"], fmt_time(d), fmt_time(n),
                       fmt_ratio(d / n), tgt, v, margin, row["native_label"]])
        for name, pair in row.get("extra", {}).items():
            ed, en = pair["deferral"]["median_s"], pair["native"]["median_s"]
            info.rows.append([row["model"]["label"], str(row["batch"]), row["backend"], name,
                              fmt_time(ed), fmt_time(en), fmt_ratio(ed / en)])
    t.notes.append(
        "Inputs are native arrays (NumPy array, torch tensor, tf constant) made once; the native "
        "model holds deferral's own weights (outputs are checked to agree), so both sides compute "
        "the same numbers. torch runs in its default (grad-enabled) mode on both sides; Keras is "
        "called eagerly, model(x), as a user would. Each call's result is dropped at once. The "
        "ResNet-style (c) is measured for materialization only."
    )
    return [t] + ([info] if info.rows else [])


def sweep_table(results: dict[str, Any]) -> Table:
    t = Table("1c. Materialization sweep (square MLPs; the plot)",
              ["model", "params", "backend", "deferral", "native", "ratio"])
    for row in results.get("sweep", []):
        d, n = row["stats"]["deferral"]["median_s"], row["stats"]["native"]["median_s"]
        t.rows.append([row["model"]["label"], fmt_count(row["model"]["params"]), row["backend"],
                       fmt_time(d), fmt_time(n), fmt_ratio(d / n)])
    return t


def cuda_table(r: dict[str, Any]) -> Table:
    if "skipped" in r:
        return Table("5. CUDA materialization bandwidth", [""], [[f"skipped: {r['skipped']}"]])
    theo = r.get("theoretical_GBps")
    t = Table(
        f"5. CUDA materialization bandwidth ({r['device']}, {r['total_memory_gib']:.0f} GiB)",
        ["model", "way", "time", "GB/s", "of theoretical", "of D2D copy", "of pinned H2D", "peak extra"],
    )
    for row in r["rows"]:
        for way in ("deferral", "native"):
            s = row[way]
            t.rows.append([row["model"]["label"], way, fmt_time(s["median_s"]), f"{s['GB/s']:.1f}",
                           "-" if s["of_theoretical"] is None else f"{s['of_theoretical']:.1%}",
                           f"{s['of_d2d_copy']:.1%}", f"{s['of_h2d_copy']:.1%}",
                           fmt_mib(s["peak_extra_bytes"])])
    for row in r.get("kinds", []):
        v, m = verdict_at_least(row["of_bandwidth"], row["target"])
        t.rows.append([f"{row['kind']} float32, one parameter", row["way"], fmt_time(row["median_s"]),
                       f"{row['GB/s']:.1f}", f"{row['of_bandwidth']:.1%} (target >= {row['target']:.0%}: {v} {m})",
                       "-", "-", "bits identical" if row["bits_identical"] else "BITS DIFFER"])
    t.notes.append(
        f"theoretical bandwidth {'-' if theo is None else f'{theo:.0f} GB/s'} (driver: memory clock x bus "
        f"width x 2); measured device-to-device copy {r['d2d_copy_GBps']:.0f} GB/s (read + write); "
        f"pinned host-to-device {r['h2d_pinned_GBps']:.1f} GB/s. GB/s = parameter bytes / time."
    )
    return t


_NORMALS = ("normal (Normal 0.02)", "truncated normal (TruncatedNormal 0.02)", "Kaiming normal", "Xavier normal")


def _ns(rows: list[dict[str, Any]], label: str) -> float | None:
    return next((r["ns_per_value"] for r in rows if r["label"] == label), None)


def rate_verdicts(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, PASS|MISS, detail) for the generator-rate targets of the ``rates`` section."""
    rows = r["rows"]
    out = []
    floor, uniform = _ns(rows, "Philox floor (numpy random_raw)"), _ns(rows, "deferral uniform (XavierUniform)")
    if floor and uniform:
        v, m = verdict_at_least(floor / uniform, TARGETS["uniform_of_floor"])
        out.append(("uniform rate >= 80% of the Philox floor", v, f"{floor / uniform:.1%} ({m})"))
    for label in _NORMALS:
        ns = _ns(rows, f"deferral {label}")
        if ns is None or uniform is None:
            continue
        v, m = verdict_at_least(uniform / ns, TARGETS["normal_of_uniform"])
        out.append((f"{label} rate >= 50% of uniform's", v, f"{uniform / ns:.1%} ({m})"))
        native = "trunc_normal_" if label.startswith("truncated") else "normal_"
        theirs = _ns(rows, f"torch nn.init.{native}")
        if theirs:
            v, m = verdict(ns / theirs, TARGETS["normal_vs_torch"])
            out.append((f"{label} vs torch nn.init.{native}", v, f"{ns / theirs:.3f} vs <= 1.0 ({m})"))
    flax = r.get("flax", [])
    ours, nnx = _ns(flax, "deferral Dense (TruncatedNormal), numpy backend"), _ns(flax, "Flax NNX nnx.Linear (default init)")
    if ours and nnx:
        v, m = verdict(ours / nnx, TARGETS["vs_flax"])
        out.append(("truncated-normal Dense vs Flax NNX default init", v, f"{ours / nnx:.3f} vs <= 1.0 ({m})"))
    return out


def rates_tables(r: dict[str, Any]) -> list[Table]:
    side, threads = r["side"], r["threads"]
    t = Table(f"0. Generator rates and the machine's limits ({side}x{side} float32, {threads} threads on every side)",
              ["what", "ns / value", "GB/s written", "rate / Philox floor", "kind"])
    floor = _ns(r["rows"], "Philox floor (numpy random_raw)")
    for row in [*r["rows"], *r.get("flax", [])]:
        ns = row["ns_per_value"]
        kind = "limit" if row["label"].startswith(("memory", "Philox")) else (
            "deferral" if row["label"].startswith("deferral") else "native")
        t.rows.append([row["label"], f"{ns:.2f}", f"{4 / ns:.2f}", "-" if not floor else f"{floor / ns:.1%}", kind])
    t.notes.append(
        "Medians, alternating. Limits: NumPy filling a float32 buffer (already touched, and freshly "
        "allocated: the page faults a new parameter pays); the Philox floor is NumPy's C Philox4x64-10 "
        "(random_raw, in the fill's blocks, one generator per thread) producing one word per value. "
        "deferral = the reference path (deferral._fill.fill) into a preallocated buffer; torch = "
        "nn.init on a preallocated tensor; Flax rows are per value of a Dense layer (weight + bias).")
    if "flax_skipped" in r:
        t.notes.append(f"Flax NNX and flax.linen skipped: {r['flax_skipped']}.")
    v = Table("0b. Generator targets", ["target", "verdict", "value"])
    v.rows = [list(x) for x in rate_verdicts(r)]
    return [t, v]


def gpt2_table(r: dict[str, Any]) -> Table:
    if "skipped" in r:
        return Table("6. GPT-2-small (124M) on torch", [""], [[f"skipped: {r['skipped']}"]])
    t = Table(f"6. GPT-2-small ({fmt_count(r['params'])} parameters) on torch, {r['threads']} threads",
              ["what", "deferral", "torch.nn", "ratio", "target", "verdict", "vs target"])
    for key, label, target in (("init", "init (materialize every parameter)", TARGETS["gpt2_init"]),
                               ("first_call", "init + first call", TARGETS["gpt2_first_call"])):
        d, n = r[key]["deferral"]["median_s"], r[key]["native"]["median_s"]
        v, m = verdict(d / n, target)
        t.rows.append([label, fmt_time(d), fmt_time(n), fmt_ratio(d / n), f"<= {target}", v, m])
    t.notes.append(r["note"])
    return t


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, PASS|MISS, detail) for every targeted ratio."""
    out = []
    if "rates" in results:
        out.extend(rate_verdicts(results["rates"]))
    for row in results.get("cuda", {}).get("kinds", []):
        v, m = verdict_at_least(row["of_bandwidth"], row["target"])
        out.append((f"CUDA {row['kind']} float32 [{row['way']}] of memory bandwidth", v, f"{row['of_bandwidth']:.1%} ({m})"))
        if not row["bits_identical"]:
            out.append((f"CUDA {row['kind']} [{row['way']}] bits", "MISS", "differ from the host reference"))
    if "gpt2" in results and "skipped" not in results["gpt2"]:
        t = gpt2_table(results["gpt2"])
        out.extend((f"GPT-2-small {row[0]} [torch]", row[5], f"{row[3]} vs {row[4]} ({row[6]})") for row in t.rows)
    if "import" in results:
        r = results["import"]
        v, m = verdict(r["median_s"], TARGETS["import_s"])
        out.append(("import deferral", v, f"{fmt_time(r['median_s'])} vs <= 100 ms ({m})"))
        if r["imported"]:
            out.append(("import deferral imports no framework", "MISS", ", ".join(r["imported"])))
        else:
            out.append(("import deferral imports no framework", "PASS", "none imported"))
    for row in results.get("materialize", []):
        s, be = row["stats"], row["backend"]
        ratio = s["deferral"]["median_s"] / s["native"]["median_s"]
        target = TARGETS["materialize"][be]
        v, m = verdict(ratio, target)
        out.append((f"materialize {row['model']['label']} [{be}]", v, f"{ratio:.3f} vs <= {target} ({m})"))
    if results.get("small"):
        from bench import _small

        out.extend(_small.verdicts(results["small"]))
    for row in results.get("memory", []):
        if row["variant"] != "deferral":
            continue
        r = row["result"]
        ratio = r["extra_bytes"] / r["param_bytes"]
        v, m = verdict(ratio, TARGETS["memory"], points=True)
        out.append((f"peak memory {row['model']['label']} [{row['backend']}]", v, f"{ratio:.1%} vs <= 10% ({m})"))
    for row in results.get("forward", []):
        target = TARGETS["forward"].get(row["batch"])
        if target is None:
            continue
        ratio = row["stats"]["deferral"]["median_s"] / row["stats"]["native"]["median_s"]
        v, m = verdict(ratio, target)
        out.append((f"forward {row['model']['label']} batch {row['batch']} [{row['backend']}]", v,
                    f"{ratio:.3f} vs <= {target} ({m})"))
    if results.get("native"):
        from bench import _native_rows

        out.extend(_native_rows.verdicts(results))
    if results.get("keras_native"):
        from bench import _keras_rows

        out.extend(_keras_rows.verdicts(results["keras_native"]))
    return out


def summary_table(results: dict[str, Any]) -> Table:
    vs = verdicts(results)
    passed = sum(1 for _, v, _ in vs if v == "PASS")
    t = Table(f"Targets: {passed} PASS, {len(vs) - passed} MISS", ["target", "verdict", "value"])
    t.rows = [list(x) for x in vs]
    return t


def tables(results: dict[str, Any]) -> list[Table]:
    """Every table, in the order of the report."""
    out = [machine_table(results)]
    if "rates" in results:
        out.extend(rates_tables(results["rates"]))
    if results.get("materialize") or results.get("pending"):
        out.extend(materialize_tables(results))
    if results.get("small"):
        from bench import _small

        out.append(_small.table(results["small"]))
    if results.get("sweep"):
        out.append(sweep_table(results))
    if results.get("memory"):
        out.append(memory_table(results))
    if results.get("forward"):
        out.extend(forward_table(results))
    if results.get("native"):
        from bench import _native_rows

        out.append(_native_rows.table(results))
    if results.get("keras_native"):
        from bench import _keras_rows

        out.append(_keras_rows.table(results["keras_native"]))
    if "import" in results:
        out.append(import_table(results["import"]))
    if "gpt2" in results:
        out.append(gpt2_table(results["gpt2"]))
    if "cuda" in results:
        out.append(cuda_table(results["cuda"]))
    out.append(summary_table(results))
    return out


# -- rendering ------------------------------------------------------------------------------
def render_text(ts: list[Table]) -> str:
    parts = []
    for t in ts:
        widths = [len(c) for c in t.columns]
        for row in t.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
        lines = [t.title, "=" * len(t.title)]
        if any(t.columns):
            lines.append("  ".join(c.ljust(w) for c, w in zip(t.columns, widths)).rstrip())
            lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in t.rows]
        lines += [f"  * {n}" for n in t.notes]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(ts: list[Table]) -> str:
    parts = []
    for t in ts:
        lines = [f"### {t.title}", ""]
        header = [c or " " for c in t.columns]
        lines.append("| " + " | ".join(_md_cell(c) for c in header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
        if t.notes:
            lines.append("")
            lines += [f"- {n}" for n in t.notes]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def write_markdown(results: dict[str, Any], path: Path, plot_path: Path | None, template: Path) -> None:
    """Write the docs page: the hand-written intro from ``template`` plus the generated tables."""
    import os

    text = template.read_text(encoding="utf-8")
    if plot_path is not None and plot_path.exists():
        rel = Path(os.path.relpath(plot_path.resolve(), path.resolve().parent)).as_posix()
        figure = (f"![Materialization time against parameter count, per backend: deferral (solid) "
                  f"and the framework's own initialization (dashed)]({rel})")
    else:
        figure = "*(no plot: matplotlib is not installed, or --plot was not given)*"
    replacements = {
        "{{command}}": results["meta"]["command"],
        "{{date}}": results["meta"]["date"],
        "{{plot}}": figure,
        "{{tables}}": render_markdown(tables(results)).rstrip("\n"),
    }
    for key, value in replacements.items():
        text = text.replace(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _plot_points(results: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    points: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in results.get("sweep", []):
        per = points.setdefault(row["backend"], {"deferral": [], "native": []})
        for way in ("deferral", "native"):
            per[way].append((row["model"]["params"], row["stats"][way]["median_s"]))
    for per in points.values():
        for way in per:
            per[way].sort()
    return points


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Draw time against parameter count per backend; return why not when it cannot."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _plot_points(results)
    if not points:
        return "no sweep results to plot"
    colors = {"numpy": "tab:blue", "torch": "tab:red", "tensorflow": "tab:orange"}
    native_names = {"numpy": "Generator.uniform", "torch": "nn.Linear", "tensorflow": "Keras Dense.build"}
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    for be, per in points.items():
        color = colors.get(be)
        xs, ys = zip(*per["deferral"])
        ax.plot(xs, ys, "o-", color=color, label=f"deferral [{be}]")
        xs, ys = zip(*per["native"])
        ax.plot(xs, ys, "s--", color=color, alpha=0.8, label=f"native {native_names.get(be, be)} [{be}]")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (float32)")
    ax.set_ylabel("materialization time, median (s)")
    machine = results["machine"]
    ax.set_title(f"Materialization time vs parameter count\n{machine.get('cpu', '')}, "
                 f"{machine.get('logical cores', '?')} cores", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None
