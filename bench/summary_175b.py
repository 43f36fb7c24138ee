"""Summarize the GPT-3 175B configuration without allocating it; report time and memory.

Run: ``python bench/summary_175b.py`` (a fresh process, so the resident-memory figure is the
whole interpreter's). Targets (issue "Know a model before allocating it"): under 1 second,
under 200 MB of resident memory, total within 0.5% of the published 175B parameters.
"""

from __future__ import annotations

import resource
import statistics
import time


def main() -> int:
    start = time.perf_counter()
    import deferral
    from deferral import TensorSpec, models

    imported = time.perf_counter() - start
    tokens = TensorSpec((1, 2048), "int64")
    times = []
    summary = None
    for _ in range(5):
        t0 = time.perf_counter()
        net = models.gpt3_175b()
        summary = deferral.summary(net, tokens, tokens)
        times.append(time.perf_counter() - t0)
    assert summary is not None
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    error = summary.total_params / 175e9 - 1
    median = statistics.median(times)
    print("GPT-3 175B configuration: 96 layers, width 12288, 96 heads, vocabulary 50257, 2048 positions")
    print(f"total parameters: {summary.total_params:,} ({error:+.2%} vs 175B)  "
          f"{'PASS' if abs(error) <= 0.005 else 'MISS'} (<= 0.5%)")
    print(f"build + summary, median of {len(times)}: {median * 1e3:.1f} ms  "
          f"{'PASS' if median < 1.0 else 'MISS'} (< 1 s); import deferral: {imported * 1e3:.0f} ms")
    print(f"peak resident memory of this process: {rss_mb:.1f} MB  {'PASS' if rss_mb < 200 else 'MISS'} (< 200 MB)")
    print(f"bytes if materialized: float32 {summary.total_bytes / 2**30:,.1f} GiB")
    return 0 if abs(error) <= 0.005 and median < 1.0 and rss_mb < 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
