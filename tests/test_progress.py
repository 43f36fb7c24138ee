"""Progress bars: shown for long materializations on request, silent otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import deferral
from deferral import _progress, nn


class _Err:
    """Reads what was written to standard error so far (pytest's capsys)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[_Err]:
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress, "_INTERVAL", 0.0)
    yield _Err(capsys)
    deferral.set_progress(None)


def test_bar_with_a_known_total_at_initialize(stderr: _Err) -> None:
    deferral.set_progress(True)
    net = nn.Sequential([nn.Dense(512, in_units=600), nn.Dense(8, in_units=512)])
    net.initialize(seed=0)
    out = stderr.getvalue()
    total = (512 * 600 + 512 + 8 * 512 + 8) * 4
    assert out.startswith("\rdeferral: materializing: [") and out.endswith("\n")
    assert f"{total / 2**20:,.1f} MiB / {total / 2**20:,.1f} MiB" in out.splitlines()[-1]
    assert "100%" in out


def test_bar_without_a_total_on_the_first_call(stderr: _Err) -> None:
    deferral.set_progress(True)
    net = nn.Sequential([nn.Dense(300), nn.Dense(4)])
    net.initialize(seed=0)
    assert stderr.getvalue() == ""  # nothing known yet, nothing materialized
    net(np.ones((1, 500), dtype="float32"))
    last = stderr.getvalue().strip().split("\r")[-1]
    assert last.startswith("deferral: materializing: ") and "MiB" in last and "[" not in last


def test_silent_when_switched_off_or_not_a_terminal(stderr: _Err, monkeypatch: pytest.MonkeyPatch) -> None:
    deferral.set_progress(False)
    nn.Dense(256, in_units=256).initialize(seed=0)
    deferral.set_progress(None)
    assert not _progress.get_progress()  # a StringIO is not a terminal
    nn.Dense(256, in_units=256).initialize(seed=0)
    monkeypatch.setenv("DEFERRAL_PROGRESS", "1")
    assert _progress.get_progress()
    monkeypatch.setenv("DEFERRAL_PROGRESS", "0")
    assert not _progress.get_progress()
    assert stderr.getvalue() == ""


def test_short_operations_print_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    deferral.set_progress(True)
    try:
        nn.Dense(8, in_units=8).initialize(seed=0)
    finally:
        deferral.set_progress(None)
    assert capsys.readouterr().err == ""


def test_set_progress_validates() -> None:
    with pytest.raises(TypeError, match="True, False or None"):
        deferral.set_progress("yes")  # type: ignore[arg-type]
