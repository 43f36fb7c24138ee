"""The NumPy backend passes the conformance suite; the suite stays out of ``import deferral``."""

from __future__ import annotations

import subprocess
import sys

from deferral.testing import BackendConformance


class TestNumpyConformance(BackendConformance):
    backend = "numpy"


def test_import_deferral_does_not_import_the_suite() -> None:
    """``import deferral`` imports neither deferral.testing nor pytest (run in a fresh process)."""
    code = (
        "import sys, deferral\n"
        "loaded = sorted(m for m in ('deferral.testing', 'pytest', '_pytest') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
