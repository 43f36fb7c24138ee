"""Smoke test of the benchmark harness (bench/run.py) at its tiny scale, NumPy backend only.

It checks the shape of what the harness reports (every table, row and column, numeric
ratios, a verdict next to each target, the docs page and the re-rendering from saved
results); it never uses a measured time as a pass/fail criterion.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "bench" / "run.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEFERRAL_PROGRESS="0", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("DEFERRAL_BACKEND", None)
    return subprocess.run([sys.executable, str(RUN), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = _run("--scale", "tiny", "--backends", "numpy", "--json", str(out / "r.json"),
                "--markdown", str(out / "performance.md"), "--plot", str(out / "img" / "m.png"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "r.json").read_text()), out


def _positive(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def _ratio(stats: dict, a: str = "deferral", b: str = "native") -> float:
    r = stats[a]["median_s"] / stats[b]["median_s"]
    assert _positive(r), stats
    return r


def test_materialize_rows(tiny: tuple) -> None:
    _, results, _ = tiny
    rows = results["materialize"]
    keys = [r["model"]["key"] for r in rows]
    assert keys[:2] == ["a", "b"]
    # (c) is measured once deferral has convolutions; until then it is reported as pending.
    assert ("c" in keys) != bool(results["pending"]), (keys, results["pending"])
    for row in rows:
        assert row["backend"] == "numpy"
        assert {"deferral", "native", "deferred"} <= set(row["stats"])
        for stats in row["stats"].values():
            assert all(_positive(s) for s in stats["samples_s"]) and len(stats["samples_s"]) == 2
        _ratio(row["stats"])
        _ratio(row["stats"], "deferred")
    assert [r["model"]["params"] for r in results["sweep"]] == [2 * (16 * 16 + 16), 2 * (32 * 32 + 32)]


def test_memory_forward_import_rows(tiny: tuple) -> None:
    _, results, _ = tiny
    memory = results["memory"]
    assert [m["variant"] for m in memory] == ["deferral", "native"]
    for m in memory:
        r = m["result"]
        assert r["param_bytes"] == m["model"]["param_bytes"] == 4 * m["model"]["params"]
        assert r["extra_bytes"] == r["peak_bytes"] - r["baseline_bytes"] - r["param_bytes"]
        assert r["peak_bytes"] > r["baseline_bytes"] > 0
    forward = results["forward"]
    assert [(f["model"]["key"], f["batch"]) for f in forward] == [("a", 1), ("a", 256), ("b", 1), ("b", 256)]
    for f in forward:
        _ratio(f["stats"])
        assert f["max_abs_diff"] < 1e-3
    imp = results["import"]
    assert _positive(imp["median_s"]) and imp["imported"] == []
    rates = {r["label"]: r["ns_per_value"] for r in results["rates"]["rows"]}
    assert {"Philox floor (numpy random_raw)", "memory write (preallocated float32)",
            "deferral uniform (XavierUniform)", "deferral normal (Normal 0.02)"} <= set(rates)
    assert all(_positive(v) for v in rates.values())
    assert results["gpt2"]["skipped"]
    assert results["cuda"]["skipped"]


def test_printed_tables(tiny: tuple) -> None:
    proc, results, _ = tiny
    out = proc.stdout
    for title in ("Machine", "0. Generator rates", "0b. Generator targets", "1. Materialization time", "1c. Materialization sweep",
                  "1d. Small tensors", "2. Peak memory",
                  "3. Forward pass", "4. `import deferral`", "Targets:"):
        assert title in out, title
    for column in ("deferral", "native default init", "ratio", "target", "verdict", "deferred path",
                   "extra / params", "batch"):
        assert column in out, column
    targets = out[out.index("Targets:"):].splitlines()
    verdicts = [line for line in targets if " PASS " in line or " MISS " in line]
    # generator rates, import (+ no framework), one per materialized model, one per backend of
    # the small-tensor row, one memory case, four forward cases
    rates = 1 + 4 + (1 if "flax" in results["rates"] else 0)  # NumPy only: no ratios to torch
    small = len(results["small"])
    assert small == len(results["meta"]["backends"]) and all(r["generation_ns"] > 0 for r in results["small"])
    assert len(verdicts) == rates + 2 + len(results["materialize"]) + small + 1 + 4, verdicts


def test_docs_page_and_rerender(tiny: tuple, tmp_path: Path) -> None:
    _, _, out = tiny
    page = (out / "performance.md").read_text()
    assert page.startswith("# Performance")
    assert "| model | params | backend | deferral | native default init | ratio | target |" in page
    assert "```python" not in page and "{{" not in page
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "img" / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "](img/m.png)" in page
    again = _run("--from-json", str(out / "r.json"), "--markdown", str(tmp_path / "p.md"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Targets:" in again.stdout
    assert (tmp_path / "p.md").read_text().count("\n### ") == page.count("\n### ")


def test_paired_ratio_cancels_a_slow_stretch_that_medians_keep() -> None:
    """Rounds 3-5 ran on a machine twice as slow for both sides: the ratio of each round is
    still 1.1, while the ratio of the two medians is not."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench._timing import paired_ratio
    finally:
        sys.path.remove(str(ROOT))
    theirs = [1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0]
    ours = [1.1 * t for t in theirs]
    ours[0] = 5.0  # one burst in one sample of one side
    a, b = {"samples_s": ours}, {"samples_s": theirs}
    assert paired_ratio(a, b) == pytest.approx(1.1)
    assert statistics.median(ours) / statistics.median(theirs) == pytest.approx(2.2)
    with pytest.raises(ValueError):
        paired_ratio({"samples_s": ours[:-1]}, b)
