"""Each op is declared once (deferral.ops); the op lists, ``__all__``, the shape-only namespace,
the load-time check and the typed protocol are derived from the declarations."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from deferral import ShapeMismatchError, _opdef, ops
from deferral.testing._opchecks import infer

ROOT = Path(__file__).resolve().parents[1]


def test_lists_all_and_shape_namespace_come_from_the_declarations() -> None:
    assert ops.OP_NAMES == tuple(_opdef.DEFS) and len(ops.OP_NAMES) == 43
    assert ops.CORE_OPS + ops.CONV_OPS + ops.NORM_OPS + ops.SEQ_OPS == ops.OP_NAMES
    assert ops.CONV_OPS == ("conv", "conv_transpose", "max_pool", "avg_pool")
    assert set(ops.__all__) == {*ops.OP_NAMES, "OP_NAMES", "CORE_OPS", "CONV_OPS", "NORM_OPS", "SEQ_OPS",
                                "OpNamespace", "check_namespace"}
    for name, d in _opdef.DEFS.items():
        assert getattr(ops, name) is d.function  # the public function itself: no wrapper around it
        assert getattr(ops.SHAPE_OPS, name) is d.shape
        assert d.summary, f"ops.{name} has no docstring"


def test_protocol_file_is_rendered_from_the_declarations() -> None:
    """Regenerate with: python -c "from deferral._opdef import write_protocol; write_protocol()"."""
    assert _opdef.PROTOCOL_PATH.read_text(encoding="utf-8") == _opdef.render_protocol()


def test_a_missing_core_op_is_reported_at_load_time_by_name() -> None:
    lacking = types.SimpleNamespace(**{n: (lambda *a: None) for n in ops.CORE_OPS if n not in ("relu", "concat")})
    with pytest.raises(TypeError, match=r"backend 'mini': its op namespace .* lacks relu, concat"):
        ops.check_namespace("mini", lacking)


def test_declaring_an_op_twice_or_in_an_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        _opdef.op("core", ops.SHAPE_OPS.relu)(ops.relu)
    with pytest.raises(ValueError, match="not one of core, conv, norm, seq"):
        _opdef.op("vision", ops.SHAPE_OPS.relu)


_REJECTED = {
    "conv with a channel mismatch": ("conv", (np.ones((1, 3, 8)), np.ones((4, 2, 3)), None, (1,), ((0, 0),), (1,), 1)),
    "concat of mismatched shapes": ("concat", ([np.ones((2, 3)), np.ones((4, 5))], 0)),
    "stack of mismatched shapes": ("stack", ([np.ones((2, 3)), np.ones((3, 2))], 0)),
    "bad transpose axes": ("transpose", (np.ones((2, 3, 4)), (0, 1, 1))),
    "reshape with an indivisible -1": ("reshape", (np.ones((2, 3, 4)), (5, -1))),
    "float take indices": ("take", (np.ones((10, 4)), np.array([1.0, 2.0]))),
}


@pytest.mark.parametrize("what", list(_REJECTED))
def test_shape_inference_rejects_what_numpy_rejects(what: str) -> None:
    """The six calls the issue lists: NumPy refuses them, and so does shape inference, with an
    error of the same built-in class (ShapeMismatchError is a ValueError)."""
    name, args = _REJECTED[what]
    with pytest.raises(Exception) as real:
        getattr(ops, name)(*args)
    expected = TypeError if name == "take" else ValueError
    assert isinstance(real.value, expected)
    with pytest.raises(expected) as inferred:
        infer(name, args)
    assert expected is TypeError or isinstance(inferred.value, ShapeMismatchError)


def test_a_namespace_lacking_ops_is_refused_by_mypy(tmp_path: Path) -> None:
    """mypy refuses, against the OpNamespace protocol, a namespace lacking ops.

    (The first-party op modules do not type-check against the protocol yet: NumPy ufunc
    attributes such as ``add = np.add`` and torch's own types do not match its positional
    signatures. This was hidden while mypy could not resolve editable-installed backends.)
    """
    pytest.importorskip("mypy")
    check = tmp_path / "check_ops.py"
    check.write_text(
        "from deferral.ops import OpNamespace\n\n\n"
        "class Lacking:\n    def relu(self, x: object) -> object:\n        return x\n\n\n"
        "d: OpNamespace = Lacking()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent", "--no-incremental",
         str(check)], capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "check_ops.py:9" in errors[0] and '"Lacking"' in errors[0], result.stdout
