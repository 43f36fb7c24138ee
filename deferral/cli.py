"""The ``deferral`` command: a walk-through, a cross-backend check, model summaries, backends.

Each subcommand is a function here that prints its report (``demo``, ``compare``,
``summary_command``, ``backends_command``); :func:`main` parses the arguments and turns
deferral's errors into one ``deferral: error: ...`` line with exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from ._version import __version__

__all__ = ["backends_command", "compare", "demo", "main", "summary_command"]

_DTYPES = ["float16", "bfloat16", "float32", "float64"]
_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def framework_logs_silenced() -> Iterator[None]:
    """Keep what the frameworks' native code writes to standard error out of the output.

    TensorFlow's C++ code logs notices while it loads (oneDNN, CPU features). Setting
    ``TF_CPP_MIN_LOG_LEVEL=2`` before the import filters most of them but not those abseil
    writes before its logging is initialized, so for the duration file descriptor 2 points at
    the null device, while Python's ``sys.stderr`` (warnings, deferral's messages) keeps writing
    where it did. When the user has set ``TF_CPP_MIN_LOG_LEVEL``, nothing is changed: they
    chose what to see.
    """
    if _TF_LOG_LEVEL in os.environ:
        yield
        return
    os.environ[_TF_LOG_LEVEL] = "2"
    python_stderr = sys.stderr
    python_stderr.flush()
    saved = os.dup(2)
    try:
        writes_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a replaced stream (pytest's, a StringIO)
        writes_fd2 = False
    if writes_fd2:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding,
                               errors="backslashreplace")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        if writes_fd2:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
        del os.environ[_TF_LOG_LEVEL]


def _section(title: str) -> None:
    print(f"\n== {title}")


def _ms(seconds: float) -> str:
    return f"({seconds * 1e3:.1f} ms)"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(f"{cell!s:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _recorded(net: Any) -> str:
    """What ``initialize()`` recorded for each parameter of ``net``, as a table."""
    rows = [(name, str(p.shape), p.state, repr(p.init), str(p.seed), p.dtype, str(p.backend))
            for name, p in net.collect_params().items()]
    return _table(("parameter", "shape", "state", "initializer", "seed", "dtype", "backend"), rows)


def _chapter_net(weight_init: str | None = None) -> Any:
    from . import nn

    return nn.Sequential(
        [nn.Dense(256, activation="relu", weight_initializer=weight_init), nn.Dense(10, weight_initializer=weight_init)]
    )


def demo(backend: str | None = None, seed: int = 0) -> None:
    """Run the tutorial's walk-through and print each step.

    Defines the tutorial's MLP without input sizes, shows its parameters as declared (``-1``
    for unknown dimensions) and that their values cannot be read yet, calls ``initialize()``
    and shows what it recorded per parameter (initializer, seed; nothing is materialized),
    then imports the backend's framework and runs two forward passes on a (2, 20) input,
    timing each step apart: the import (once per process), the first call (which materializes
    every parameter) and the second (compute only).

    Raises:
        BackendNotFoundError: if ``backend`` is unknown or its framework is not installed.
    """
    import importlib

    import numpy as np

    from . import DeferredInitializationError, registry

    name = backend or registry.get_backend()
    loaded = registry.load_backend(name)
    net = _chapter_net()
    print(f"deferral {__version__} demo on backend {name!r} (seed {seed})")
    _section("1. The network, defined without input sizes")
    print(net)
    _section("2. Its parameters exist, but input dimensions are unknown (-1)")
    print(net.collect_params())
    _section("3. Their values cannot be read yet")
    try:
        net[0].weight.data()
    except DeferredInitializationError as exc:
        print(f"DeferredInitializationError: {exc}")
    _section("4. net.initialize() records an initializer and a seed per parameter; nothing is materialized")
    net.initialize(seed=seed, backend=name)
    print(_recorded(net))
    _section("5. The first forward pass infers 20 input features and materializes everything")
    start = time.perf_counter()
    for module in loaded.info.requires:
        importlib.import_module(module)
    loaded.ops  # noqa: B018 - the backend's op namespace, imported with its framework
    imported = time.perf_counter()
    x = np.random.default_rng(seed).uniform(size=(2, 20)).astype("float32")
    y = net(x)
    first = time.perf_counter()
    net(x)
    second = time.perf_counter()
    print(f"import {', '.join(loaded.info.requires) or 'the backend'} and the backend's ops, once per process "
          f"{_ms(imported - start)}")
    print(f"net(X) with X.shape == {x.shape} -> Y.shape == {tuple(y.shape)}: materializes, then computes "
          f"{_ms(first - imported)}")
    print(f"net(X) again: computes only {_ms(second - first)}")
    print(net.collect_params())
    w = net.get_weights()[0]
    print(f"0.weight[0, :4] = {np.array2string(w[0, :4], precision=6)}")


def _install_hints(names: Sequence[str]) -> list[str]:
    """``name: install command`` for the known backends not in ``names`` that say how."""
    from ._install import install_command

    return [f"{row.name}: {install_command(row.install)}" for row in backend_rows()
            if row.name not in names and not row.available and row.install]


def compare(seed: int = 0, dtype: str = "float32", weight_init: str | None = None,
            backends: Sequence[str] | None = None) -> bool:
    """Initialize the demo model on every installed backend and compare parameter bits.

    The reference is the NumPy backend in ``dtype`` (for bfloat16, which NumPy lacks, its
    float32 values rounded once, as the value spec defines). Prints which backends are
    compared, one row per parameter with ``match``/``DIFFER`` per backend, and the largest
    forward-output difference; warns on standard error when fewer than two backends are
    compared (with the install commands of the missing ones). Returns True when every bit
    matches.
    """
    import numpy as np

    from . import registry
    from ._dtypes import float32_to_bfloat16_bits

    names = list(backends) if backends else registry.available_backends()
    x = np.random.default_rng(seed).uniform(size=(2, 20)).astype("float32")

    def run(name: str, run_dtype: str) -> tuple[list[np.ndarray], np.ndarray]:
        backend = registry.load_backend(name)
        net = _chapter_net(weight_init)
        net.initialize(seed=seed, dtype=run_dtype, backend=name)
        y = np.asarray(backend.to_numpy(net(x)), dtype=np.float64)
        return net.get_weights(), y

    def bits(a: np.ndarray) -> np.ndarray:
        if dtype == "bfloat16":
            return float32_to_bfloat16_bits(a.astype(np.float32))
        return a.astype(dtype).view(np.dtype(f"u{np.dtype(dtype).itemsize}"))

    ref_dtype = "float32" if dtype == "bfloat16" else dtype
    ref_w, ref_y = run("numpy", ref_dtype)
    results: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if dtype not in registry.load_backend(name).info.dtypes:
            skipped[name] = f"no {dtype}"
        else:
            results[name] = (ref_w, ref_y) if name == "numpy" else run(name, dtype)

    params = list(_chapter_net().collect_params())
    rounded = " rounded to bfloat16" if dtype == "bfloat16" else ""
    cols = list(results)
    print(f"seed {seed}, dtype {dtype}, weight initializer {weight_init or 'default (xavier_uniform)'}; "
          f"reference: the numpy backend in {ref_dtype}{rounded}")
    print(f"backends compared: {', '.join(cols) or '(none)'}")
    rows, all_match = [], True
    for i, pname in enumerate(params):
        same = [bool(np.array_equal(bits(results[c][0][i]), bits(ref_w[i]))) for c in cols]
        all_match &= all(same)
        rows.append((pname, str(ref_w[i].shape), *("match" if s else "DIFFER" for s in same)))
    print(_table(("parameter", "shape", *cols), rows))
    for c in cols:
        diff = float(np.max(np.abs(results[c][1] - ref_y)))
        print(f"forward output, {c} vs reference: max |difference| = {diff:.3g}")
    for c, why in skipped.items():
        print(f"{c}: skipped ({why})")
    if not cols:
        print("no backend supports this dtype")
        return False
    if len(cols) < 2:
        hints = _install_hints(names)
        more = f" Install another to compare frameworks: {'; '.join(hints)}" if hints else ""
        sys.stdout.flush()
        print(f"deferral: warning: only {cols[0]} was compared, against the NumPy reference: no two "
              f"frameworks were compared.{more}", file=sys.stderr)
    print("all parameter bits match" if all_match else "SOME PARAMETERS DIFFER")
    return all_match


class BackendRow(NamedTuple):
    """One line of ``deferral backends``: what a known backend is and whether it can be used."""

    name: str
    available: bool
    framework: str  # distribution names and versions, or what is missing
    devices: str
    dtypes: str
    install: str  # the command that installs what is missing ('' when nothing is)
    problem: str = ""  # why the plugin itself does not load


def _framework(modules: Sequence[str], missing: Sequence[str]) -> str:
    """``torch 2.13.0`` for each module, from the installed distributions (imports nothing)."""
    import importlib.metadata

    owners = importlib.metadata.packages_distributions()
    parts = []
    for module in modules:
        if module in missing:
            parts.append(f"{module} (not installed)")
            continue
        dists = owners.get(module, [])
        if not dists:
            parts.append(f"{module} (version unknown)")
            continue
        dist = importlib.metadata.distribution(dists[0])
        parts.append(f"{dist.metadata['Name']} {dist.version}")
    return ", ".join(parts) or "-"


def backend_rows() -> list[BackendRow]:
    """Every backend deferral knows of (entry points and registered plugins), sorted by name.

    Loads plugin modules, never a framework.
    """
    import pluggy

    from . import registry
    from .errors import DeferralError

    rows = []
    for name in registry._names():
        try:
            plugin = registry._plugin(name)
            info = registry._info(name, plugin, registry._manager(plugin))
        except (ImportError, DeferralError, pluggy.PluginValidationError) as exc:
            rows.append(BackendRow(name, False, "?", "?", "?", "", f"its plugin does not load: {exc}"))
            continue
        missing = registry._missing(info)
        devices = info.default_device + (", CUDA GPUs" if info.supports_cuda else "")
        rows.append(BackendRow(name, not missing, _framework(info.requires, missing), devices,
                               ", ".join(info.dtypes), info.install if missing else ""))
    return rows


def backends_command(names_only: bool = False) -> None:
    """Print the known backends: availability, framework version, devices, dtypes, install hint.

    With ``names_only``, print just the names of the available backends, one per line (the
    list ``deferral.available_backends()`` returns).
    """
    from . import registry
    from ._install import install_command

    if names_only:
        for name in registry.available_backends():
            print(name)
        return
    rows = backend_rows()
    print(_table(("backend", "available", "framework", "devices", "dtypes"),
                 [(r.name, "yes" if r.available else "no", r.framework, r.devices, r.dtypes) for r in rows]))
    for r in rows:
        if r.problem:
            print(f"{r.name}: {r.problem}")
        elif not r.available:
            fix = f"install it with: {install_command(r.install)}" if r.install else "its framework is missing"
            print(f"{r.name}: {fix}")


def _parse_shape(text: str) -> object:
    from ._shapes import TensorSpec

    text, _, dtype = text.partition(":")
    dims: list[int | None] = []
    for part in text.replace("x", ",").split(","):
        part = part.strip()
        if part.lower() in ("n", "none", "?", "-1"):
            dims.append(None)
        elif part.isdigit():
            dims.append(int(part))
        else:
            raise argparse.ArgumentTypeError(
                f"expected a shape like 'N,3,224,224' (N or None for an unknown batch size), optionally "
                f"with a dtype ('N,2048:int64'); received {text!r}"
            )
    return TensorSpec(tuple(dims), dtype.strip() or "float32")


def _load_factory(spec: str) -> object:
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected MODULE:FACTORY (e.g. deferral.models:resnet18); received {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules next to you are found
    target: object = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target() if callable(target) else target


def summary_command(spec: str, shapes: Sequence[object], dtype: str | None, markdown: bool) -> None:
    """Build the model ``MODULE:FACTORY`` and print its summary for the given input shapes."""
    from ._summary import summary

    net = _load_factory(spec)
    result = summary(net, *shapes, dtype=dtype)
    print(result.to_markdown() if markdown else result)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deferral",
        description="Deferred initialization on every framework: walk through it, check that backends "
                    "agree bit for bit, summarize a model without allocating it, list the backends.",
    )
    parser.add_argument("--version", action="version", version=f"deferral {__version__}",
                        help="print deferral's version and exit")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="{demo,compare,summary,backends}",
                                help="`deferral COMMAND --help` describes a command and its options")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description)

    p_demo = command("demo", "walk through deferred initialization (the tutorial's example)",
                     "Define an MLP without input sizes, show its parameters before and after "
                     "initialize() (what it recorded: initializer and seed per parameter), then run "
                     "the first forward pass, which infers the input size and materializes every "
                     "parameter; the framework's import is timed apart from materialization.")
    p_demo.add_argument("--backend", default=None, metavar="NAME",
                        help="backend to run on (default: the default backend: DEFERRAL_BACKEND, else numpy)")
    p_demo.add_argument("--seed", type=int, default=0, metavar="N", help="seed for the parameters (default: 0)")
    p_cmp = command("compare", "initialize the demo model on every installed backend and compare the bits",
                    "Initialize the demo MLP with one seed on each backend and compare every parameter "
                    "with the NumPy reference bit for bit; also report the largest difference of the "
                    "forward outputs. Exit status 0 when every bit matches, 1 otherwise.")
    p_cmp.add_argument("--seed", type=int, default=0, metavar="N", help="seed for the parameters (default: 0)")
    p_cmp.add_argument("--dtype", default="float32", choices=_DTYPES,
                       help="parameter dtype to compare in (default: float32); bfloat16 is compared "
                            "with NumPy's float32 values rounded once")
    p_cmp.add_argument("--init", default=None, metavar="NAME",
                       help="weight initializer name, e.g. he_normal (default: xavier_uniform)")
    p_cmp.add_argument("--backends", nargs="*", default=None, metavar="NAME",
                       help="backends to compare (default: every installed one)")
    p_sum = command("summary", "print a model's layers, output shapes, parameter counts and bytes",
                    "Build the model MODULE:FACTORY returns and print its layers, output shapes, "
                    "parameter counts and bytes for the given input shapes, allocating no parameter.")
    p_sum.add_argument("factory", metavar="MODULE:FACTORY",
                       help="a function (or object) returning a model, e.g. deferral.models:resnet18")
    p_sum.add_argument("--input-shape", type=_parse_shape, action="append", required=True, metavar="SHAPE",
                       help="one per forward argument, e.g. N,3,224,224 (add :int64 for token ids)")
    p_sum.add_argument("--dtype", default=None, choices=_DTYPES,
                       help="price every parameter in this dtype (default: each parameter's own)")
    p_sum.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p_back = command("backends", "list the backends: framework versions, devices, dtypes, how to install",
                     "List every backend deferral knows of: whether it can be used, its framework's "
                     "installed version, its devices and dtypes, and the command that installs what "
                     "is missing. Imports no framework.")
    p_back.add_argument("--names", action="store_true",
                        help="print only the names of the available backends, one per line")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        demo(args.backend, args.seed)
    elif args.command == "compare":
        return 0 if compare(args.seed, args.dtype, args.init, args.backends) else 1
    elif args.command == "summary":
        summary_command(args.factory, args.input_shape, args.dtype, args.markdown)
    else:
        backends_command(args.names)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deferral`` console command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .errors import DeferralError

    errors: tuple[type[Exception], ...] = (DeferralError,)
    if args.command == "summary":  # the user's module may fail to import or build
        errors = (DeferralError, ImportError, AttributeError, ValueError, TypeError)
    try:
        with framework_logs_silenced():
            return _run(args)
    except errors as exc:
        print(f"deferral: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
