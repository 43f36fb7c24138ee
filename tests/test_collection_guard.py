"""The suite's own guard: a parametrized test with zero cases fails collection (pyproject's
``empty_parameter_set_mark``), so it can never pass as a skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _run(tmp_path: Path, cases: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_tiny.py"
    test.write_text(f"import pytest\n\n@pytest.mark.parametrize('x', {cases})\ndef test_each(x):\n    assert x\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(CONFIG), "--rootdir", str(tmp_path), "-p", "no:cacheprovider",
         str(test)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )


@pytest.mark.parametrize(("cases", "code", "says"), [
    ("[]", pytest.ExitCode.INTERRUPTED, "Empty parameter set in 'test_each'"),
    ("[1, 2]", pytest.ExitCode.OK, "2 passed"),
])
def test_zero_cases_fail_the_suite(tmp_path: Path, cases: str, code: int, says: str) -> None:
    result = _run(tmp_path, cases)
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout, result.stdout
