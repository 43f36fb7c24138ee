"""The ``native`` section: ``deferral.native(net)`` (a ``torch.nn.Module``) against torch.nn.

For each MLP case the deferral model is materialized on torch, and a hand-written
``torch.nn.Sequential`` of ``Linear`` and ``ReLU`` gets copies of its weights (outputs are
checked to agree). Both are timed eagerly and compiled with ``torch.compile`` (inductor, the
default), batch 1 and 256, alternating in one process (see :func:`bench._timing.measure`).
Run it alone with ``python bench/run.py --sections native --backends torch``.
"""

from __future__ import annotations

from typing import Any

from bench import _models
from bench._report import Table, fmt_ratio, fmt_time, verdict
from bench._timing import PAIRED_REPEATS, measure, paired_ratio

__all__ = ["TARGETS", "run", "table", "verdicts"]

#: Largest acceptable ratio native-module / torch.nn, per way and batch.
TARGETS = {("eager", 1): 1.3, ("eager", 256): 1.05, ("compiled", 1): 1.05, ("compiled", 256): 1.05}
BATCHES = (1, 256)


def _torch_nn(spec: _models.MLP, weights: list[Any]) -> Any:
    import torch

    layers: list[torch.nn.Module] = []
    for i, ((out, inp), act) in enumerate(zip(spec.shapes, spec.activations)):
        linear = torch.nn.Linear(inp, out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[2 * i]))
            linear.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        layers.append(linear)
        if act is not None:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _subclass(sequential: Any) -> Any:
    """The same layers in a ``torch.nn.Module`` subclass with its own ``forward``, as most
    models are written: torch treats it as any user module (``torch.compile`` runs its
    ``__call__`` outside the compiled frame, unlike a ``torch.nn.Sequential``'s)."""
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(list(sequential))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)
            return x

    return MLP()


def _pair(ours: Any, theirs: Any, subclass: Any, x: Any, cfg: dict[str, Any], repeats: int) -> dict[str, Any]:
    for name, other in (("torch.nn.Sequential", theirs), ("the torch.nn.Module subclass", subclass)):
        diff = float((ours(x) - other(x)).abs().max())
        if not diff <= 1e-4:
            raise AssertionError(f"native rows: the deferral module and {name} disagree (max |diff| {diff:g})")
    stats = measure({"deferral": lambda: ours(x), "native": lambda: theirs(x), "subclass": lambda: subclass(x)},
                    repeats=max(repeats, PAIRED_REPEATS), min_time=cfg["min_time"], keep_results=False)
    return {name: s.as_dict() for name, s in stats.items()}


def run(specs: list[_models.MLP], cfg: dict[str, Any], repeats: int, say: Any) -> list[dict[str, Any]]:
    """Measure every (case, way, batch); returns the rows for the results file."""
    import numpy as np
    import torch

    import deferral

    rows = []
    rng = np.random.default_rng(0)
    for spec in specs:
        net = spec.deferral_net(True)
        net.initialize(seed=0, backend="torch", dtype="float32")
        module = deferral.native(net)
        reference = _torch_nn(spec, net.get_weights())
        subclass = _subclass(reference)
        ways = {"eager": (module, reference, subclass),
                "compiled": (torch.compile(module), torch.compile(reference), torch.compile(subclass))}
        for way, (ours, theirs, user) in ways.items():
            for batch in BATCHES:
                say(f"  native {spec.label} {way} batch {batch} [torch] ...")
                x = torch.from_numpy(rng.standard_normal((batch, spec.in_features)).astype(np.float32))
                rows.append({"backend": "torch", "model": spec.to_dict(), "way": way, "batch": batch,
                             "stats": _pair(ours, theirs, user, x, cfg, repeats)})
        torch._dynamo.reset()
    return rows


def _ratio(row: dict[str, Any]) -> float:
    return paired_ratio(row["stats"]["deferral"], row["stats"]["native"])


def table(results: dict[str, Any]) -> Table:
    t = Table("3c. deferral.native(net) as a torch.nn.Module against hand-written torch.nn (same weights)",
              ["model", "batch", "way", "deferral.native", "torch.nn", "ratio", "target", "verdict", "vs target",
               "nn.Module subclass", "ratio to it"])
    for row in results.get("native", []):
        s, target = row["stats"], TARGETS[(row["way"], row["batch"])]
        v, margin = verdict(_ratio(row), target)
        user = s.get("subclass")
        t.rows.append([row["model"]["label"], str(row["batch"]), row["way"], fmt_time(s["deferral"]["median_s"]),
                       fmt_time(s["native"]["median_s"]), fmt_ratio(_ratio(row)), f"<= {target}", v, margin,
                       fmt_time(user["median_s"] if user else None),
                       fmt_ratio(paired_ratio(s["deferral"], user) if user else None)])
    t.notes.append(
        "torch.nn is a Sequential of Linear and ReLU holding copies of deferral's weights (the judged "
        "reference); 'nn.Module subclass' is the same layers in a class with its own forward, as most "
        "models are written, shown for information. 'compiled' is torch.compile (inductor) of each side, "
        "timed after its warm-up compile; torch compiles a torch.nn.Sequential's whole call, but runs a "
        "user module's __call__ (deferral's, or the subclass's) outside the compiled frame. Grad mode is "
        "on, as a user calls a model. Times are medians of 21 or more alternating samples on a shared "
        "machine; a ratio is the median of the per-round ratios (bench._timing.paired_ratio)."
    )
    return t


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for row in results.get("native", []):
        target = TARGETS[(row["way"], row["batch"])]
        v, margin = verdict(_ratio(row), target)
        out.append((f"native module {row['model']['label']} {row['way']} batch {row['batch']} [torch]", v,
                    f"{_ratio(row):.3f} vs <= {target} ({margin})"))
    return out
