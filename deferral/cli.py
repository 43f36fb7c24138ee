"""The ``deferral`` command: ``deferral demo`` walks through deferred initialization."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ._version import __version__

__all__ = ["demo", "main"]


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
    sub.add_parser("backends", help="list the installed backends")
    args = parser.parse_args(argv)
    from .errors import DeferralError

    try:
        if args.command == "demo":
            demo(args.backend, args.seed)
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
