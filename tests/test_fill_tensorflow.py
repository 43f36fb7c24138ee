"""TensorFlow adopts the host buffer a parameter is generated into: no copy, no abort, no dangling memory.

Each check runs in a fresh interpreter: a TensorFlow that aborted on a misaligned buffer
would take the test process with it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="needs TensorFlow (the tensorflow or all tox environment)")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", DEFERRAL_PROGRESS="0")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=240, check=False)


def test_materialized_variable_is_the_host_buffer_and_survives_updates() -> None:
    proc = _run("""
        import gc, weakref
        import numpy as np
        import tensorflow as tf
        import deferral
        from deferral import _fill, init, nn
        from deferral_tensorflow import _adopted

        # adoption: the variable uses the aligned buffer itself (a write to it shows through)
        host = _fill.aligned_empty((1024, 1024), "float32")
        assert host.ctypes.data % _fill.ALIGN == 0
        host[...] = 1.0
        var = tf.Variable(_adopted(host))
        host[0, 0] = 42.0
        assert float(var[0, 0]) == 42.0, "the variable holds a copy"
        # the buffer outlives every Python reference: TensorFlow holds it through DLPack
        base = host.base
        while base.base is not None:
            base = base.base
        alive = weakref.ref(base)
        del host, base
        gc.collect()
        assert alive() is not None
        var.assign_add(tf.ones((1024, 1024)))
        assert float(var[0, 0]) == 43.0 and float(tf.reduce_sum(var)) == 43.0 + 2.0 * (1024 * 1024 - 1)
        del var
        gc.collect()
        assert alive() is None, "the buffer was not released with the variable"

        # a materialized layer: the reference bits, trainable, updatable, no abort
        from deferral.random import derive_key
        for dtype in ("float32", "float16", "bfloat16", "float64"):
            net = nn.Dense(1000, in_units=999, weight_initializer=init.TruncatedNormal(0.1))
            net.initialize(seed=3, backend="tensorflow", dtype=dtype)
            var = net.weight.data()
            want = np.empty(999_000, dtype=_fill.host_dtype(dtype))
            recipe = init.TruncatedNormal(0.1).recipe((1000, 999))
            _fill.fill(recipe, derive_key(3, net.weight.name), (1000, 999), 0, want, dtype)
            got = tf.bitcast(var, tf.uint16).numpy() if dtype == "bfloat16" else var.numpy()
            assert got.tobytes() == want.tobytes(), dtype
            gc.collect()
            var.assign_add(tf.ones_like(var))
            assert float(tf.reduce_max(tf.abs(tf.cast(var, tf.float32) - 1.0))) <= 0.21
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]


def test_a_misaligned_buffer_is_copied_not_adopted() -> None:
    proc = _run("""
        import numpy as np
        import tensorflow as tf
        from deferral import _fill
        from deferral_tensorflow import _adopted

        raw = _fill.aligned_empty((4 * 1000 + 4,), "uint8")
        host = raw[4:].view(np.float32)  # 4 bytes past a 64-byte boundary
        assert host.ctypes.data % _fill.ALIGN == 4
        host[...] = 2.0
        var = tf.Variable(_adopted(host))
        host[0] = 5.0
        assert float(var[0]) == 2.0 and float(tf.reduce_sum(var)) == 2000.0
        var.assign_add(tf.ones(1000))
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
