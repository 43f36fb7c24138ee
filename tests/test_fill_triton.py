"""The fused Triton kernel gives the reference bits: run in Triton's interpreter on the CPU.

``TRITON_INTERPRET=1`` executes the kernel with one NumPy operation per Triton operation, so
this checks the kernel's algorithm (Philox rounds, every step of the recipe, the rounding to
each dtype, the counter and offset arithmetic) bit for bit; no fused multiply-add can occur
there. On a GPU the same source is compiled with ``enable_fp_fusion=False``; that build is
checked by ``bench/cuda.py`` where a GPU exists. Runs in a fresh interpreter: the variable must
be set before Triton is imported, and Triton must not be imported next to TensorFlow (that can
abort the process).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and Triton (pip install triton; the torch tox environment installs it); "
           "without Triton the torch-ops path is used on CUDA and tested in test_torch_native.py",
)

SCRIPT = '''
import numpy as np
import torch
import triton
import triton.language as tl

import deferral_torch._triton as K
from deferral import _fill, init, random as drandom


@triton.jit
def transform_words(w_ptr, out_ptr, n, a, b, KIND: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    w = tl.load(w_ptr + i, mask=i < n).to(tl.uint64, bitcast=True)
    tl.store(out_ptr + i, K.transform(w, a, b, KIND), mask=i < n)


DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
CASES = [("uniform", init.Uniform(0.07)), ("normal", init.Normal(0.02)),
         ("truncated_normal", init.TruncatedNormal(0.5))]
checked = 0
for kind, initializer in CASES:
    recipe = initializer.recipe((3000,))
    key = drandom.derive_key(11, kind)
    for dtype, torch_dtype in DTYPES.items():
        for start, n in ((0, 2048), (7, 3001), (2**40 + 3, 999)):
            out = torch.empty(n, dtype=torch_dtype)
            K.fill(out, kind, recipe.a, recipe.b, key, start)
            want = np.empty(n, dtype=_fill.host_dtype(dtype))
            _fill.fill(recipe, key, (2**41,), start, want, dtype)
            got = out.view(torch.int16) if dtype == "bfloat16" else out
            assert got.numpy().tobytes() == want.tobytes(), (kind, dtype, start)
            checked += 1

# the transform alone on crafted words: extremes and the far tails (r > 5)
rng = np.random.default_rng(3)
tiny = rng.integers(0, 1 << 16, 200, dtype=np.uint64) << np.uint64(12)
words = np.concatenate([drandom.raw_words((5, 6), 0, 500), tiny, ~tiny,
                        np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)])
for kind, a, b in (("uniform", -1.0, 1.0), ("normal", 0.5, 2.0), ("truncated_normal", 0.0, 1.0)):
    out = torch.empty(words.size, dtype=torch.float64)
    transform_words[(triton.cdiv(words.size, 256),)](torch.from_numpy(words.view(np.int64)), out, words.size,
                                                     a, b, KIND=K.KINDS[kind], BLOCK=256)
    want = getattr(drandom, kind)(words, a, b)
    assert out.numpy().tobytes() == want.tobytes(), kind
    checked += 1
print("checked", checked)
'''


def test_fused_kernel_matches_the_reference_bit_for_bit(tmp_path: Path) -> None:
    script = tmp_path / "check_triton.py"  # triton.jit reads the kernels' source from a file
    script.write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, TRITON_INTERPRET="1", DEFERRAL_PROGRESS="0")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.split()[-1] == str(3 * 4 * 3 + 3)
