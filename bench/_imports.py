"""``import deferral`` time, in fresh interpreters, and which frameworks it imported.

Each run starts ``python -c ...`` that times ``import deferral`` with ``time.perf_counter``
inside the process (interpreter start-up excluded), then lists the framework modules found
in ``sys.modules``. Runs alternate with a bare interpreter (``python -c pass``) so the
whole-process cost (start-up included) can be reported as a difference too. One warm-up run
of each is discarded (it pays for cold file caches).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

__all__ = ["FRAMEWORKS", "measure_import"]

#: Modules ``import deferral`` must not import.
FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "jaxlib", "mxnet")

_CODE = f"""
import sys, time, json
t = time.perf_counter()
import deferral
dt = time.perf_counter() - t
heavy = {FRAMEWORKS!r}
after_import = sorted(m for m in heavy if m in sys.modules)
numpy = "numpy" in sys.modules
deferral.available_backends()
after_list = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({{"s": dt, "imported": after_import, "numpy": numpy, "after_available": after_list}}))
"""


def _run(code: str, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"`python -c` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def measure_import(runs: int = 11) -> dict[str, Any]:
    """Median in-process ``import deferral`` seconds over ``runs`` fresh interpreters, and more."""
    env = dict(os.environ)
    env.pop("DEFERRAL_BACKEND", None)
    inproc, walls, bare = [], [], []
    imported: set[str] = set()
    after_available: set[str] = set()
    numpy = False
    for i in range(runs + 1):
        b, _ = _run("pass", env)
        w, out = _run(_CODE, env)
        if i == 0:
            continue
        result = json.loads(out.strip().splitlines()[-1])
        bare.append(b)
        walls.append(w)
        inproc.append(result["s"])
        imported.update(result["imported"])
        after_available.update(result["after_available"])
        numpy = numpy or result["numpy"]
    return {
        "runs": runs,
        "median_s": statistics.median(inproc),
        "min_s": min(inproc),
        "max_s": max(inproc),
        "process_extra_s": statistics.median(walls) - statistics.median(bare),
        "installed": [m for m in FRAMEWORKS if importlib.util.find_spec(m) is not None],
        "imported": sorted(imported),
        "imported_by_available_backends": sorted(after_available),
        "numpy_imported": numpy,
    }
