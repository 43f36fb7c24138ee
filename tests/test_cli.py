"""The ``deferral`` console command."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import deferral
from deferral import cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"deferral {deferral.__version__}"


def test_demo_prints_the_three_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    stage2 = out.split("== 2.")[1].split("== 3.")[0]
    stage4 = out.split("== 4.")[1].split("== 5.")[0]
    stage5 = out.split("== 5.")[1]
    assert re.search(r"0\.weight\s+shape=\(256, -1\)", stage2)
    assert "DeferredInitializationError" in out.split("== 3.")[1]
    assert not re.search(r"dtype=\S+\s+materialized", stage4) and re.search(r"1\.weight\s+shape=\(10, -1\)", stage4)
    assert re.search(r"0\.weight\s+shape=\(256, 20\).*materialized", stage5)
    assert re.search(r"1\.weight\s+shape=\(10, 256\).*materialized", stage5)
    assert "Y.shape == (2, 10)" in stage5


def test_demo_is_repeatable(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["demo", "--seed", "5"])
    first = re.sub(r"\(\d+\.\d ms\)", "", capsys.readouterr().out)
    cli.main(["demo", "--seed", "5"])
    assert re.sub(r"\(\d+\.\d ms\)", "", capsys.readouterr().out) == first


def test_unknown_backend_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--backend", "mxnet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deferral: error: unknown backend 'mxnet'")


def test_backends_lists_numpy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backends"]) == 0
    assert "numpy" in capsys.readouterr().out.split()


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_console_script_and_module_entry() -> None:
    out = subprocess.run([sys.executable, "-m", "deferral", "demo"], capture_output=True, text=True, check=True)
    assert "Y.shape == (2, 10)" in out.stdout


def test_compare_reports_matches_and_differences(capsys: pytest.CaptureFixture[str]) -> None:
    from typing import Any

    from deferral import registry
    from tests.test_registry import _plugin

    @deferral.hookimpl
    def deferral_materialize(request: Any) -> Any:
        values = request.host_values().reshape(request.shape).copy()
        if request.name == "1.weight":
            values.view("uint32")[0, 0] ^= 1  # flip the lowest bit of one element
        return values

    registry.register_backend(_plugin("twin"))
    registry.register_backend(_plugin("liar", deferral_materialize=deferral_materialize))
    try:
        assert cli.main(["compare", "--backends", "numpy", "twin"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"0\.weight\s+\(256, 20\)\s+match\s+match", out)
        assert "all parameter bits match" in out
        assert cli.main(["compare", "--backends", "numpy", "twin", "liar", "--init", "he_normal"]) == 1
        out = capsys.readouterr().out
        assert re.search(r"1\.weight\s+\(10, 256\)\s+match\s+match\s+DIFFER", out)
        assert re.search(r"0\.weight\s+\(256, 20\)\s+match\s+match\s+match", out)
        assert "SOME PARAMETERS DIFFER" in out
        assert cli.main(["compare", "--dtype", "bfloat16", "--backends", "numpy", "twin"]) == 1
        out = capsys.readouterr().out
        assert "numpy: skipped (no bfloat16)" in out and "no backend supports this dtype" in out
    finally:
        registry.unregister_backend("twin")
        registry.unregister_backend("liar")


def make_small() -> object:
    from deferral import nn

    return nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(4)])


def test_summary_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["summary", "tests.test_cli:make_small", "--input-shape", "N,10"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 244" in out and "(N, 4)" in out
    assert cli.main(["summary", "tests.test_cli:make_small", "--input-shape", "2x10", "--markdown",
                     "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| Layer (path) |") and "| `1` | Dense | `(2, 4)` | 68 | 136 B |" in out


def test_summary_command_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["summary", "no_such_module:f", "--input-shape", "N,3"]) == 1
    assert "No module named" in capsys.readouterr().err
    assert cli.main(["summary", "tests.test_cli", "--input-shape", "N,3"]) == 1
    assert "MODULE:FACTORY" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["summary", "tests.test_cli:make_small", "--input-shape", "N,abc"])
    assert "expected a shape" in capsys.readouterr().err


def test_summary_command_with_integer_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["summary", "deferral.models:gpt_decoder", "--input-shape", "N,16:int64", "--input-shape", "N,16:int64"]
    assert cli.main(args) == 1  # gpt_decoder needs arguments: reported, not a traceback
    assert "deferral: error:" in capsys.readouterr().err
    assert cli.main(["summary", "tests.test_cli:tiny_gpt", "--input-shape", "N,16:int64",
                     "--input-shape", "N,16:int64"]) == 0
    # 50*16 + 16*16 embeddings; attention 4*(16*16+16); FFN 16*64+64 + 64*16+16; 3 LayerNorms 3*32
    assert "Total params: 4,368" in capsys.readouterr().out
    assert cli.main(["summary", "tests.test_cli:tiny_gpt", "--input-shape", "N,16", "--input-shape", "N,16"]) == 1
    assert "integer" in capsys.readouterr().err


def tiny_gpt() -> object:
    from deferral import models

    return models.gpt_decoder(1, 16, 2, 50, 16)
