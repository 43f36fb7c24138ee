"""GPT-2-small (124M) on torch: deferral's ``models.gpt_decoder`` against the same model in torch.nn.

Both sides build 12 pre-norm decoder layers of width 768 (12 heads, feed-forward 3072, GELU),
token (50,257) and position (1,024) embeddings, a final LayerNorm and logits through the
tied token embedding, float32, with their default initializers (deferral: Xavier uniform
weights, zero biases; torch: ``nn.Embedding``'s normal, ``nn.Linear``'s Kaiming uniform,
``nn.MultiheadAttention``'s Xavier uniform), at the same thread count.

- **init**: deferral builds the model, ``infer_shape`` from the token and position specs and
  ``initialize()`` (which materializes every parameter); torch constructs the modules.
- **init + first call**: deferral builds, ``initialize()`` and the first call (shapes
  inferred and parameters materialized layer by layer inside it); torch constructs and calls.
"""

from __future__ import annotations

from typing import Any

from bench._timing import measure

__all__ = ["CONFIG", "run"]

#: GPT-2-small: layers, width, heads, vocabulary, positions.
CONFIG = {"layers": 12, "units": 768, "heads": 12, "vocab": 50257, "positions": 1024}
TOKENS = 64  # length of the one sequence of the first call


def _torch_model(torch: Any) -> Any:
    nn = torch.nn
    c = CONFIG

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(c["units"])
            self.attention = nn.MultiheadAttention(c["units"], c["heads"], batch_first=True)
            self.norm2 = nn.LayerNorm(c["units"])
            self.ffn1 = nn.Linear(c["units"], 4 * c["units"])
            self.ffn2 = nn.Linear(4 * c["units"], c["units"])

        def forward(self, x: Any) -> Any:
            y = self.norm1(x)
            h = x + self.attention(y, y, y, need_weights=False)[0]
            return h + self.ffn2(nn.functional.gelu(self.ffn1(self.norm2(h))))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token_embedding = nn.Embedding(c["vocab"], c["units"])
            self.position_embedding = nn.Embedding(c["positions"], c["units"])
            self.blocks = nn.ModuleList([Block() for _ in range(c["layers"])])
            self.norm = nn.LayerNorm(c["units"])

        def forward(self, tokens: Any, positions: Any) -> Any:
            h = self.token_embedding(tokens) + self.position_embedding(positions)
            for block in self.blocks:
                h = block(h)
            return self.norm(h) @ self.token_embedding.weight.T

    return GPT()


def _deferral_model() -> Any:
    from deferral import models

    c = CONFIG
    return models.gpt_decoder(c["layers"], c["units"], c["heads"], c["vocab"], c["positions"])


def run(repeats: int) -> dict[str, Any]:
    """Measure both rows; ``{"skipped": reason}`` without torch."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return {"skipped": "torch is not installed"}
    import torch

    import deferral

    tokens = torch.randint(0, CONFIG["vocab"], (1, TOKENS))
    positions = torch.arange(TOKENS).unsqueeze(0)
    spec = deferral.TensorSpec((1, TOKENS), "int64")

    def ours_init() -> Any:
        net = _deferral_model()
        net.infer_shape(spec, spec)
        net.initialize(seed=0, backend="torch", dtype="float32")
        return net

    def ours_call() -> Any:
        net = _deferral_model()
        net.initialize(seed=0, backend="torch", dtype="float32")
        return net, net(tokens, positions)

    def theirs_call() -> Any:
        net = _torch_model(torch)
        return net, net(tokens, positions)

    params = sum(p.numel() for p in _torch_model(torch).parameters())
    declared = sum(p.size for p in ours_init().collect_params().values())
    if declared != params:
        raise AssertionError(f"GPT-2-small: deferral declares {declared} parameters, torch.nn builds {params}")
    init = measure({"deferral": ours_init, "native": lambda: _torch_model(torch)}, repeats=repeats, min_time=0.0)
    call = measure({"deferral": ours_call, "native": theirs_call}, repeats=repeats, min_time=0.0)
    return {
        "params": params, "threads": torch.get_num_threads(),
        "init": {k: s.as_dict() for k, s in init.items()},
        "first_call": {k: s.as_dict() for k, s in call.items()},
        "note": (f"torch.get_num_threads() = {torch.get_num_threads()}, deferral fill threads = "
                 f"{deferral.get_num_threads()}; the first call is one sequence of {TOKENS} tokens; "
                 "model construction is timed on both sides."),
    }
