"""The ``deferral`` console command."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deferral
from deferral import _install, cli, nn, registry
from deferral.hookspec import BackendInfo

ROOT = Path(__file__).resolve().parents[1]


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
    assert re.findall(r"^\d\.\w+\s+\(.*?\)\s+(\w+)\s", stage4, re.M) == ["declared", "shaped"] * 2
    assert re.search(r"1\.weight\s+shape=\(10, 256\).*materialized", stage5)
    assert re.search(r"0\.weight\s+shape=\(256, 20\).*materialized", stage5)
    assert "Y.shape == (2, 10)" in stage5


def test_demo_shows_what_initialize_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    stage2 = out.split("== 2.")[1].split("== 3.")[0]
    stage4 = out.split("== 4.")[1].split("== 5.")[0]
    assert stage4 != stage2
    assert re.search(r"parameter\s+shape\s+state\s+initializer\s+seed\s+dtype\s+backend", stage4)
    assert re.search(r"0\.weight\s+\(256, -1\)\s+declared\s+XavierUniform\(gain=1\.0, mode='fan_avg'\)\s+7\s+float32\s+numpy",
                     stage4)
    assert re.search(r"1\.bias\s+\(10,\)\s+shaped\s+Zeros\(\)\s+7\s+float32\s+numpy", stage4)


def test_demo_times_the_import_apart_from_materialization(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == 0
    stage5 = capsys.readouterr().out.split("== 5.")[1]
    lines = stage5.splitlines()
    ms = r"\((\d+\.\d) ms\)$"
    assert re.match(r"import numpy and the backend's ops, once per process " + ms, lines[1])
    assert re.match(r"net\(X\) with X\.shape == \(2, 20\) -> Y\.shape == \(2, 10\): materializes, then computes " + ms,
                    lines[2])
    assert re.match(r"net\(X\) again: computes only " + ms, lines[3])


def test_demo_is_repeatable(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["demo", "--seed", "5"])
    first = re.sub(r"\(\d+\.\d ms\)", "", capsys.readouterr().out)
    cli.main(["demo", "--seed", "5"])
    assert re.sub(r"\(\d+\.\d ms\)", "", capsys.readouterr().out) == first


def test_unknown_backend_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--backend", "mxnet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deferral: error: unknown backend 'mxnet'")


def test_backends_names_lists_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backends", "--names"]) == 0
    assert capsys.readouterr().out.split() == deferral.available_backends()


GHOST_INSTALL = 'pip install "deferral[ghost]"'


def _ghost_backend(install: str) -> Any:
    from tests.test_registry import _plugin

    info = BackendInfo(name="ghost", requires=("no_such_framework_xyz",), install=install,
                       dtypes=("float32",), default_device="cpu", supports_cuda=True)
    return _plugin("ghost", deferral_backend_info=deferral.hookimpl(lambda: info))


@pytest.fixture
def ghost() -> Iterator[str]:
    registry.register_backend(_ghost_backend(GHOST_INSTALL))
    yield "ghost"
    registry.unregister_backend("ghost")


def test_backends_table(capsys: pytest.CaptureFixture[str], ghost: str) -> None:
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.match(r"backend\s+available\s+framework\s+devices\s+dtypes$", out[0])
    numpy_row = next(line for line in out if line.startswith("numpy "))
    assert re.match(rf"numpy\s+yes\s+numpy {re.escape(np.__version__)}\s+cpu\s+float16, float32, float64$", numpy_row)
    ghost_row = next(line for line in out if line.startswith("ghost "))
    assert re.match(r"ghost\s+no\s+no_such_framework_xyz \(not installed\)\s+cpu, CUDA GPUs\s+float32$", ghost_row)
    fix = _install.install_command(GHOST_INSTALL)
    assert f"ghost: install it with: {fix}" in out
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_row = next(line for line in out if line.startswith("torch "))
        assert re.match(rf"torch\s+yes\s+torch {re.escape(torch.__version__)}\s+cpu, CUDA GPUs\s+float16, bfloat16", torch_row)


def test_install_command_follows_how_deferral_was_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    root = _install.source_checkout()
    assert root == (ROOT if (ROOT / "deferral" / "__init__.py").samefile(deferral.__file__) else None)
    monkeypatch.setattr(_install, "source_checkout", lambda: Path("/src/deferral"))
    assert _install.install_command('pip install "deferral[torch]"') == 'pip install -e "/src/deferral[torch]"'
    assert _install.install_command("pip install 'deferral[a, b]'") == 'pip install -e "/src/deferral[a,b]"'
    assert _install.install_command('pip install "deferral"') == 'pip install -e "/src/deferral"'
    for other in ("pip install deferral-jax", 'pip install "tensorflow[and-cuda]"', "conda install deferral"):
        assert _install.install_command(other) == other
    monkeypatch.setattr(_install, "source_checkout", lambda: None)
    monkeypatch.setattr(_install, "installed_from", lambda: None)
    assert _install.install_command('pip install "deferral[torch]"') == 'pip install "deferral[torch]"'
    monkeypatch.setattr(_install, "installed_from", lambda: (Path("/src/deferral"), False))
    assert _install.install_command('pip install "deferral[torch]"') == 'pip install "/src/deferral[torch]"'


def test_installed_from_reads_what_pip_recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.metadata

    records = {
        '{"url": "file:///src/deferral", "dir_info": {"editable": true}}': (Path("/src/deferral"), True),
        '{"url": "file:///src/deferral", "dir_info": {}}': (Path("/src/deferral"), False),
        '{"url": "file:///tmp/deferral-0.1.0.tar.gz", "archive_info": {}}': None,
        '{"url": "https://example.org/x", "vcs_info": {"vcs": "git"}}': None,
        "not json": None,
        "[1, 2]": None,
    }
    for record, expected in records.items():
        class Dist:
            def read_text(self, name: str, record: str = record) -> str:
                assert name == "direct_url.json"
                return record

        monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
        assert _install.installed_from() == expected, record


def test_missing_framework_error_gives_the_fitting_install_command(ghost: str) -> None:
    with pytest.raises(deferral.BackendNotFoundError) as info:
        deferral.set_backend("ghost")
    root = _install.source_checkout()
    if root is not None:  # running from this checkout
        assert f'Install it with: pip install -e "{root}[ghost]" ' in str(info.value)
    assert f"Install it with: {_install.install_command(GHOST_INSTALL)} " in str(info.value)
    assert "DEFERRAL_BACKEND" not in str(info.value)


def test_the_environment_variable_is_named_when_it_chose_a_missing_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ghost: str
) -> None:
    monkeypatch.setenv("DEFERRAL_BACKEND", "garbage")
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deferral: error: unknown backend 'garbage'. Choose one of: ")
    assert "chosen by the environment variable DEFERRAL_BACKEND='garbage'" in err and "unset it" in err
    monkeypatch.setenv("DEFERRAL_BACKEND", "ghost")
    with pytest.raises(deferral.BackendNotFoundError) as info:
        nn.Dense(3).initialize()
    assert "no_such_framework_xyz" in str(info.value) and "DEFERRAL_BACKEND='ghost'" in str(info.value)
    with pytest.raises(deferral.BackendNotFoundError) as info:
        nn.Dense(3).initialize(backend="jax")  # chosen in code, not by the variable
    assert "DEFERRAL_BACKEND" not in str(info.value)


def test_every_command_and_option_has_help_text() -> None:
    parser = cli._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"demo", "compare", "summary", "backends"}
    helped = {a.dest: a.help for a in commands._choices_actions}
    for name, sub in commands.choices.items():
        assert helped[name] and len(sub.description or "") > 40, name
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings or action.dest}"
    assert all(a.help for a in parser._actions)


def test_compare_help_describes_seed_and_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--seed N seed for the parameters (default: 0)" in out
    assert "parameter dtype to compare in (default: float32)" in out
    assert out.count("compare every parameter with the NumPy reference bit for bit") == 1


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_console_script_and_module_entry() -> None:
    out = subprocess.run([sys.executable, "-m", "deferral", "demo"], capture_output=True, text=True, check=True)
    assert "Y.shape == (2, 10)" in out.stdout


def test_compare_reports_matches_and_differences(capsys: pytest.CaptureFixture[str]) -> None:
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
        out, err = capsys.readouterr()
        assert "backends compared: numpy, twin\n" in out and err == ""
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


def test_compare_warns_when_fewer_than_two_backends_are_compared(
    capsys: pytest.CaptureFixture[str], ghost: str
) -> None:
    assert cli.main(["compare", "--backends", "numpy"]) == 0
    out, err = capsys.readouterr()
    assert "backends compared: numpy\n" in out
    assert err.startswith("deferral: warning: only numpy was compared, against the NumPy reference: "
                          "no two frameworks were compared. Install another to compare frameworks: ")
    assert f"ghost: {_install.install_command(GHOST_INSTALL)}" in err


def test_native_stderr_is_silenced_unless_the_user_chose_a_log_level(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with cli.framework_logs_silenced():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
        os.write(2, b"I0000 port.cc:153] native noise\n")
        print("python's own message", file=sys.stderr)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "native noise" not in err and "python's own message" in err and "after" in err
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with cli.framework_logs_silenced():
        os.write(2, b"native noise the user asked for\n")
    assert "native noise the user asked for" in capfd.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow")
def test_compare_output_has_no_tensorflow_log_lines() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "deferral", "compare", "--backends", "numpy", "tensorflow"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "backends compared: numpy, tensorflow" in done.stdout
    assert done.stderr == ""


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


def _cli_page_blocks() -> list[str]:
    from tests.test_docs import DOCS, parse

    return [b.code for b in parse(DOCS / "cli.md") if b.info == "text"]


def test_cli_page_shows_what_a_numpy_only_checkout_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/cli.md's listings for NumPy alone, from a checkout in /home/me/deferral, are real output."""
    monkeypatch.setattr(registry, "_missing", lambda info: [m for m in info.requires if m in ("torch", "tensorflow")])
    monkeypatch.setattr(_install, "source_checkout", lambda: Path("/home/me/deferral"))
    blocks = _cli_page_blocks()

    def shown(start: str) -> str:
        found = [b for b in blocks if b.startswith(start)]
        assert len(found) == 1, start
        return re.sub(r"numpy \d\S*", f"numpy {np.__version__}", found[0]).strip()

    assert cli.main(["backends"]) == 0
    assert capsys.readouterr().out.strip() == shown("backend     available")
    assert cli.main(["compare"]) == 0
    assert capsys.readouterr().err.strip() == shown("deferral: warning:")
    monkeypatch.setenv("DEFERRAL_BACKEND", "garbage")
    assert cli.main(["demo"]) == 1
    assert capsys.readouterr().err.strip() == shown("deferral: error: unknown backend 'garbage'")
