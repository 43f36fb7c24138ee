"""What the numbers were measured on: CPU, cores, threads, library versions."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

__all__ = ["describe"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _numpy_blas() -> str:
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except (AttributeError, KeyError, TypeError):  # show_config's layout differs between versions
        return "unknown"


def describe(backends: list[str]) -> dict[str, Any]:
    """A flat mapping of what matters for reading the numbers (imports the given frameworks)."""
    import numpy as np

    import deferral

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical cores": os.cpu_count(),
        "cores usable by this process": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory (GiB)": round(_memory_gib() or 0.0, 1) or None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "deferral": deferral.__version__,
        "deferral fill threads": getattr(deferral, "get_num_threads", lambda: "n/a")(),
        "numpy": f"{np.__version__} ({_numpy_blas()})",
    }
    if "torch" in backends:
        import torch

        info["torch"] = torch.__version__
        info["torch.get_num_threads()"] = torch.get_num_threads()
        info["torch.get_num_interop_threads()"] = torch.get_num_interop_threads()
        info["torch.cuda.is_available()"] = torch.cuda.is_available()
    if "tensorflow" in backends:
        import keras
        import tensorflow as tf

        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        info["tensorflow"] = tf.__version__
        info["keras"] = f"{keras.__version__} (backend {keras.backend.backend()})"
        info["TF intra-op threads"] = f"{intra} (0 = TensorFlow's default: one per core)" if intra == 0 else intra
        info["TF inter-op threads"] = f"{inter} (0 = TensorFlow's default)" if inter == 0 else inter
    return info
