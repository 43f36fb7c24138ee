"""The ``deferral`` command: ``deferral demo`` walks through deferred initialization."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from ._version import __version__

__all__ = ["compare", "demo", "main"]


def _section(title: str) -> None:
    print(f"\n== {title}")


def demo(backend: str | None = None, seed: int = 0) -> None:
    """Run the seed chapter's walk-through and print each step.

    Defines the chapter's MLP without input sizes, shows its parameters as declared
    (``-1`` for unknown dimensions), shows that their values cannot be read yet, calls
    ``initialize()`` (nothing is materialized), runs one forward pass on a (2, 20) input and
    shows the parameters materialized with their inferred shapes.
    """
    import numpy as np

    from . import DeferredInitializationError, nn, registry

    name = backend or registry.get_backend()
    registry.load_backend(name)

    def get_net() -> nn.Sequential:
        net = nn.Sequential()
        net.add(nn.Dense(256, activation="relu"))
        net.add(nn.Dense(10))
        return net

    net = get_net()
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
    _section("4. net.initialize() records the intent; nothing is materialized")
    net.initialize(seed=seed, backend=name)
    print(net.collect_params())
    _section("5. The first forward pass infers 20 input features and materializes everything")
    x = np.random.default_rng(seed).uniform(size=(2, 20)).astype("float32")
    start = time.perf_counter()
    y = net(x)
    elapsed = time.perf_counter() - start
    print(f"net(X) with X.shape == {x.shape} -> Y.shape == {tuple(y.shape)} ({elapsed * 1e3:.1f} ms)")
    print(net.collect_params())
    w = net.get_weights()[0]
    print(f"0.weight[0, :4] = {np.array2string(w[0, :4], precision=6)}")


def _chapter_net(weight_init: str | None = None) -> object:
    from . import nn

    return nn.Sequential(
        [nn.Dense(256, activation="relu", weight_initializer=weight_init), nn.Dense(10, weight_initializer=weight_init)]
    )


def compare(seed: int = 0, dtype: str = "float32", weight_init: str | None = None,
            backends: Sequence[str] | None = None) -> bool:
    """Initialize the demo model on every installed backend and compare parameter bits.

    The reference is the NumPy backend in ``dtype`` (for bfloat16, which NumPy lacks, its
    float32 values rounded once, as the value spec defines). Prints one row per parameter with
    ``match``/``DIFFER`` per backend, and the largest forward-output difference. Returns True
    when every bit matches.
    """
    import numpy as np

    from . import registry
    from ._dtypes import float32_to_bfloat16_bits

    names = list(backends) if backends else registry.available_backends()
    x = np.random.default_rng(seed).uniform(size=(2, 20)).astype("float32")

    def run(name: str, run_dtype: str) -> tuple[list[np.ndarray], np.ndarray]:
        backend = registry.load_backend(name)
        net = _chapter_net(weight_init)
        net.initialize(seed=seed, dtype=run_dtype, backend=name)  # type: ignore[attr-defined]
        y = np.asarray(backend.to_numpy(net(x)), dtype=np.float64)  # type: ignore[operator]
        return net.get_weights(), y  # type: ignore[attr-defined]

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

    params = list(_chapter_net().collect_params())  # type: ignore[attr-defined]
    rounded = " rounded to bfloat16" if dtype == "bfloat16" else ""
    print(f"seed {seed}, dtype {dtype}, weight initializer {weight_init or 'default (xavier_uniform)'}; "
          f"reference: the numpy backend in {ref_dtype}{rounded}")
    cols = list(results)
    width = max(len(p) for p in params) + 2
    print(f"{'parameter':<{width}}{'shape':<13}" + "".join(f"{c:<12}" for c in cols))
    all_match = True
    for i, pname in enumerate(params):
        cells = []
        for c in cols:
            same = bool(np.array_equal(bits(results[c][0][i]), bits(ref_w[i])))
            all_match &= same
            cells.append("match" if same else "DIFFER")
        print(f"{pname:<{width}}{ref_w[i].shape!s:<13}" + "".join(f"{cell:<12}" for cell in cells))
    for c in cols:
        diff = float(np.max(np.abs(results[c][1] - ref_y)))
        print(f"forward output, {c} vs reference: max |difference| = {diff:.3g}")
    for c, why in skipped.items():
        print(f"{c}: skipped ({why})")
    if not cols:
        print("no backend supports this dtype")
        return False
    print("all parameter bits match" if all_match else "SOME PARAMETERS DIFFER")
    return all_match


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deferral`` console command."""
    parser = argparse.ArgumentParser(
        prog="deferral", description="Deferred initialization on every framework."
    )
    parser.add_argument("--version", action="version", version=f"deferral {__version__}")
    sub = parser.add_subparsers(dest="command")
    p_demo = sub.add_parser("demo", help="walk through deferred initialization (the seed chapter)")
    p_demo.add_argument("--backend", default=None, help="backend name (default: the default backend)")
    p_demo.add_argument("--seed", type=int, default=0, help="seed for the parameters (default 0)")
    p_cmp = sub.add_parser("compare", help="initialize the demo model on every installed backend; compare bits")
    p_cmp.add_argument("--seed", type=int, default=0)
    p_cmp.add_argument("--dtype", default="float32", choices=["float16", "bfloat16", "float32", "float64"])
    p_cmp.add_argument("--init", default=None, help="weight initializer name (default: xavier_uniform)")
    p_cmp.add_argument("--backends", nargs="*", default=None, help="backends to compare (default: all installed)")
    p_sum = sub.add_parser("summary", help="layers, output shapes, parameter counts and bytes, allocating nothing")
    p_sum.add_argument("factory", help="MODULE:FACTORY returning a model, e.g. deferral.models:resnet18")
    p_sum.add_argument("--input-shape", type=_parse_shape, action="append", required=True,
                       help="one per forward argument, e.g. N,3,224,224 (add :int64 for token ids)")
    p_sum.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32", "float64"],
                       help="price every parameter in this dtype")
    p_sum.add_argument("--markdown", action="store_true", help="print a Markdown table")
    sub.add_parser("backends", help="list the installed backends")
    args = parser.parse_args(argv)
    from .errors import DeferralError

    try:
        if args.command == "demo":
            demo(args.backend, args.seed)
        elif args.command == "compare":
            return 0 if compare(args.seed, args.dtype, args.init, args.backends) else 1
        elif args.command == "summary":
            try:
                summary_command(args.factory, args.input_shape, args.dtype, args.markdown)
            except (ImportError, AttributeError, ValueError, TypeError) as exc:
                print(f"deferral: error: {exc}", file=sys.stderr)
                return 1
        elif args.command == "backends":
            from .registry import available_backends

            for name in available_backends():
                print(name)
        else:
            parser.print_help()
            return 2
    except DeferralError as exc:
        print(f"deferral: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
