"""``deferral.native(net)`` on the torch backend: a real ``torch.nn.Module`` sharing the model's tensors."""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import deferral  # noqa: E402
import deferral.models  # noqa: E402
from deferral import nn  # noqa: E402
from deferral_torch._module import BackendMismatchError, DeferralModule, ModuleChangeError, StateDictError  # noqa: E402

# torch's inductor imports its own deprecated torch.jit modules; that warning is torch's business.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small() -> nn.Sequential:
    return nn.Sequential([nn.Dense(8, activation="relu"), nn.BatchNorm(), nn.Dense(3)])


def chapter_mlp() -> nn.Sequential:
    return nn.Sequential([nn.Dense(256, activation="relu"), nn.Dense(10)])


def native(make=small, seed: int = 0) -> tuple[nn.Block, DeferralModule]:
    net = make()
    net.initialize(seed=seed, backend="torch")
    return net, deferral.native(net)


X = torch.linspace(-1, 1, 20).reshape(4, 5)


def test_the_module_tree_mirrors_the_block_tree() -> None:
    net, m = native()
    assert isinstance(m, torch.nn.Module) and deferral.native(net) is m
    assert [name for name, _ in m.named_children()] == ["0", "1", "2"]
    assert m[1] is deferral.native(net[1]) and m[1].block is net[1]
    assert [type(c).__name__ for c in m.children()] == ["DenseModule", "DeferralModule", "DenseModule"]
    assert isinstance(m[0], torch.nn.Linear) and (m[0].in_features, m[0].out_features) == (-1, 8)
    assert "(1): BatchNorm(-1, axis=1" in repr(m)
    assert list(m.state_dict()) == ["0.weight", "0.bias", "1.gamma", "1.beta", "1.running_mean",
                                    "1.running_var", "2.weight", "2.bias"]
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias", "1.gamma", "1.beta", "2.weight", "2.bias"]
    assert [n for n, _ in m.named_buffers()] == ["1.running_mean", "1.running_var"]


def test_deferred_parameters_are_torchs_lazy_parameters() -> None:
    net, m = native()
    lazy = torch.nn.modules.lazy.LazyModuleMixin.has_uninitialized_params
    assert m.has_uninitialized_params() and lazy(m[0]) and lazy(m[1])
    assert isinstance(m[0].weight, torch.nn.parameter.UninitializedParameter)
    assert isinstance(m[1].running_mean, torch.nn.parameter.UninitializedBuffer)
    with pytest.raises(ValueError, match="uninitialized parameter"):
        m[0].weight.sum()
    # torch refuses them where it refuses its own (DDP); an optimizer holding them trains the
    # parameters they become, as with torch's Lazy* modules.
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m.train()
    y = m(X)
    assert not m.has_uninitialized_params() and not lazy(m[0])
    assert opt.param_groups[0]["params"][0] is net[0].weight.data() is m[0].weight
    before = net.get_weights()
    y.sum().backward()
    opt.step()
    after = net.get_weights()
    assert not np.array_equal(before[0], after[0]) and np.array_equal(before[4], before[4])


def test_the_first_call_materializes_the_bits_net_x_gives() -> None:
    net, m = native()
    ref = small()
    ref.initialize(seed=0, backend="torch")
    assert torch.equal(m(X), ref(X))
    for a, b in zip(ref.get_weights(), net.get_weights()):
        assert a.tobytes() == b.tobytes()
    assert m[0].weight is net[0].weight.data() and type(m[0].weight) is torch.nn.Parameter


def test_storage_is_shared_both_ways() -> None:
    net, m = native()
    m(X)
    with torch.no_grad():
        m[0].weight.add_(1.0)
    assert np.array_equal(net.get_weights()[0], m[0].weight.detach().numpy())
    net[2].bias.data().data.fill_(7.0)
    assert torch.equal(m.state_dict()["2.bias"], torch.full((3,), 7.0))
    assert m[0].weight is net.parameters()[0]


def test_deferral_replacing_values_is_seen_by_the_module() -> None:
    net, m = native()
    m(X)
    old = m[0].weight
    net.initialize(force_reinit=True, seed=5, backend="torch")
    # The new values are written into the tensors the module (and any optimizer) holds.
    assert m[0].weight is net[0].weight.data() and m[0].weight is old
    fresh, _ = native(seed=5)
    fresh(X)
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), fresh.get_weights()))
    net[2].bias.set_data(np.ones(3, dtype="float32"))
    assert torch.equal(m[2].bias, torch.ones(3))
    path = Path(__file__).parent / "_native_ckpt_tmp.safetensors"
    try:
        net.save_parameters(path)
        other, om = native(seed=9)
        other.load_parameters(path)
        assert not om.has_uninitialized_params()
        assert torch.equal(om[0].weight, m[0].weight) and om[0].weight is other[0].weight.data()
    finally:
        path.unlink(missing_ok=True)


def test_train_and_eval_stay_in_sync_both_ways() -> None:
    net, m = native()
    assert not m.training and not net.training  # the model's mode, inference by default
    m.train()
    assert all(b.training for _, b in net._walk()) and all(x.training for x in m.modules())
    net.eval()
    assert not any(x.training for x in m.modules())
    net.train()
    assert m[1].training
    m[1].eval()
    assert not net[1].training and net[0].training


def test_dtype_and_device_moves_keep_deferrals_view() -> None:
    net, m = native()
    m(X)
    assert m.double() is m
    w = net[0].weight
    assert w.dtype == "float64" and w.data().dtype == torch.float64 and m[0].weight is w.data()
    assert net[1].running_mean.dtype == "float64" and m[1].running_mean is net[1].running_mean.data()
    assert net.get_weights()[0].dtype == np.float64
    assert m(np.ones((2, 5))).dtype == torch.float64  # NumPy inputs follow the new dtype
    m.to(torch.float32)
    assert w.dtype == "float32" and net.get_weights()[0].dtype == np.float32
    assert m.cpu() is m and w.device == "cpu"
    m.to("cpu", torch.float16)
    assert w.dtype == "float16" and net[1].running_var.data().dtype == torch.float16


def test_a_move_before_the_first_call_changes_how_it_materializes() -> None:
    net, m = native()
    m.double()
    assert net[0].weight.dtype == "float64" and m[0].weight.dtype == torch.float64
    y = m(X.double())
    ref = small()
    ref.initialize(seed=0, backend="torch", dtype="float64")
    assert torch.equal(y, ref(X.double()))


@needs_cuda
def test_cuda_moves() -> None:
    net, m = native()
    m(X)
    m.cuda()
    assert net[0].weight.device == "cuda:0" and m[0].weight.is_cuda
    assert torch.equal(m(X.cuda()).cpu(), m.cpu()(X))
    other, om = native()
    om.to("cuda")
    om(X.cuda())
    assert other[0].weight.data().is_cuda


def test_forward_hooks_fire() -> None:
    net, m = native()
    seen = []
    m.register_forward_pre_hook(lambda mod, args: seen.append(("pre", args[0].shape)))
    handle = m.register_forward_hook(lambda mod, args, out: out * 2)
    y = m(X)
    assert seen == [("pre", X.shape)] and torch.equal(y, net(X) * 2)
    handle.remove()
    assert torch.equal(m(X), net(X))


def test_hooks_on_child_modules_fire_in_order_with_the_actual_tensors() -> None:
    net, m = native()
    m.train()  # BatchNorm on batch statistics: its input and output differ
    seen: list[tuple[str, Any]] = []
    for name, mod in [("root", m), ("0", m[0]), ("1", m[1]), ("2", m[2])]:
        mod.register_forward_pre_hook(lambda mod, args, name=name: seen.append((name + " pre", args[0])))
        mod.register_forward_hook(lambda mod, args, out, name=name: seen.append((name + " out", out)))
    y = m(X)
    assert [n for n, _ in seen] == ["root pre", "0 pre", "0 out", "1 pre", "1 out", "2 pre", "2 out", "root out"]
    values = dict(seen)
    assert values["root pre"] is X and values["0 pre"] is X
    hidden = torch.relu(X @ net[0].weight.data().T + net[0].bias.data())
    assert torch.allclose(values["0 out"], hidden) and values["1 pre"] is values["0 out"]
    assert values["2 pre"] is values["1 out"] and values["2 out"] is y and values["root out"] is y
    seen.clear()
    net(X)  # the deferral model's own call runs no torch hooks
    assert seen == []


def test_a_child_forward_hook_changes_what_the_parent_computes() -> None:
    net, m = native(chapter_mlp)
    m(X[:, :4])
    m[0].register_forward_hook(lambda mod, args, out: torch.zeros_like(out))
    # Layer 1 then sees zeros: the output is its bias, broadcast.
    assert torch.equal(m(X[:, :4]), net[1].bias.data().expand(4, 10))


def test_full_backward_hooks_on_children_get_the_gradients() -> None:
    net, m = native(chapter_mlp)
    got: dict[str, Any] = {}
    def before(mod: Any, grad_out: Any) -> None:
        got["pre"] = grad_out[0]

    def after(mod: Any, grad_in: Any, grad_out: Any) -> None:
        got["in"] = grad_in[0]

    m[1].register_full_backward_pre_hook(before)
    m[1].register_full_backward_hook(after)
    x = torch.randn(3, 7)
    m(x).sum().backward()
    assert torch.equal(got["pre"], torch.ones(3, 10))
    assert torch.allclose(got["in"], torch.ones(3, 10) @ net[1].weight.data())


def test_child_hooks_fire_on_the_first_call_and_under_torch_compile() -> None:
    net, m = native(chapter_mlp)
    inputs: list[Any] = []
    m[1].register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
    x = torch.randn(2, 20)
    first = m(x)  # materializes
    assert len(inputs) == 1 and inputs[0].shape == (2, 256)
    inputs.clear()  # (dynamo would inspect the autograd tensor the list holds)
    assert torch._dynamo.explain(m)(x).graph_break_count == 0
    inputs.clear()
    compiled = torch.compile(m)
    assert torch.allclose(compiled(x), first, atol=1e-5, rtol=0)
    assert len(inputs) == 1 and torch.allclose(inputs[0], torch.relu(x @ net[0].weight.data().T + net[0].bias.data()))


def test_parametrize_is_refused_and_the_module_is_unchanged() -> None:
    from torch.nn.utils import parametrize

    from deferral_torch._module import ModuleChangeError

    class Double(torch.nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * 2

    net, m = native(chapter_mlp)
    m(X[:, :3])
    weight = m[0].weight
    with pytest.raises(ModuleChangeError, match="parametrize") as info:
        parametrize.register_parametrization(m[0], "weight", Double())
    assert isinstance(info.value, AttributeError) and "'0.weight'" in str(info.value)
    assert m[0].weight is weight is net[0].weight.data() and torch.equal(m(X[:, :3]), net(X[:, :3]))


def test_blocks_added_after_native_get_modules_that_compute_and_train() -> None:
    net, m = native(chapter_mlp)
    m(X)
    extra = nn.Dense(2)
    extra.initialize(seed=3, backend="torch")
    net.add(extra)
    assert m[2] is deferral.native(extra) and len(m) == 3
    seen: list[Any] = []
    m[2].register_forward_hook(lambda mod, args, out: seen.append(out))
    y = m(X)
    assert y.shape == (4, 2) and seen[0] is y and torch.equal(y, net(X))
    assert list(m.state_dict())[-2:] == ["2.weight", "2.bias"]
    opt = torch.optim.SGD(m.parameters(), lr=0.1)  # built after: holds the new parameters
    before = extra.weight.data().detach().clone()
    m(X).sum().backward()
    opt.step()
    assert not torch.equal(before, extra.weight.data())


def test_children_and_parameters_replaced_or_removed_are_followed() -> None:
    class Net(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Dense(4, in_units=5)
            self.head = nn.Dense(2, in_units=4)

        def forward(self, x: Any) -> Any:
            out = self.head(self.body(x))
            return out if "scale" not in self._params else out * self.scale.data()

    net, m = native(Net)
    new_head = nn.Dense(3, in_units=4)
    new_head.initialize(seed=1, backend="torch")
    net.head = new_head
    assert m.head is deferral.native(new_head) and m(X).shape == (4, 3)
    scale = deferral.Parameter("scale", (3,), init="ones")
    deferral.parameter.ParameterDict({"scale": scale}).initialize(seed=0, backend="torch")
    net.register_parameter("scale", scale)
    assert m.scale is scale.data() and "scale" in dict(m.named_parameters())
    del net.scale
    assert "scale" not in dict(m.named_parameters()) and torch.equal(m(X), net(X))


def test_an_optimizer_keeps_training_the_model_after_force_reinit() -> None:
    net, m = native(chapter_mlp)
    m(X)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    net.initialize(seed=7, backend="torch", force_reinit=True)
    fresh, _ = native(chapter_mlp, seed=7)
    fresh(X)
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), fresh.get_weights()))
    before = m(X).detach()
    m(X).square().sum().backward()
    opt.step()
    after = m(X).detach()
    assert not torch.equal(before, after) and torch.equal(after, net(X))
    assert not np.array_equal(net.get_weights()[0], fresh.get_weights()[0])


def test_native_follows_a_change_of_backend() -> None:
    net, m = native(chapter_mlp)
    m(X)
    net.initialize(seed=0, backend="numpy", force_reinit=True)
    assert deferral.native(net) is net and deferral.native(net[0]) is net[0]
    x = X.numpy()
    assert net(x).shape == (4, 10)  # the NumPy model is not routed through torch modules
    with pytest.raises(BackendMismatchError, match="numpy"):
        m(X)
    net.initialize(seed=0, backend="torch", force_reinit=True)
    again = deferral.native(net)
    assert isinstance(again, DeferralModule) and again[0] is deferral.native(net[0])
    assert torch.equal(again(X), net(X))


def test_copies_pickles_and_torch_save_round_trip() -> None:
    net, m = native()
    m(X)
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    for copied in (copy.deepcopy(m), pickle.loads(pickle.dumps(m)), torch.load(buffer, weights_only=False)):
        assert isinstance(copied, DeferralModule) and copied.block is not net
        assert torch.equal(copied(X), m(X))
        assert deferral.native(copied.block) is copied
        assert copied[0].weight is copied.block[0].weight.data()  # shared in the copy too
        assert copied[0].weight.data_ptr() != m[0].weight.data_ptr()
        assert list(copied.state_dict()) == list(m.state_dict())


def test_a_deferred_module_copies_deferred() -> None:
    _, m = native()
    copied = copy.deepcopy(m)
    assert copied.has_uninitialized_params()
    ref = small()
    ref.initialize(seed=0, backend="torch")
    assert torch.equal(copied(X), ref(X))


def test_load_state_dict_completes_a_deferred_module_without_a_forward() -> None:
    src, ms = native(seed=3)
    ms.train()
    ms(X)
    net, m = native()
    assert str(m.load_state_dict(ms.state_dict())) == "<All keys matched successfully>"
    assert not m.has_uninitialized_params()
    assert all(p.state == "materialized" for p in net.collect_params().values())
    for a, b in zip(src.get_weights(), net.get_weights()):
        assert a.tobytes() == b.tobytes()
    assert torch.equal(m(X), ms.eval()(X))


def test_load_state_dict_keeps_the_tensors_of_a_materialized_module() -> None:
    _src, ms = native(seed=3)
    ms(X)
    _net, m = native()
    m(X)
    weight = m[0].weight
    m.load_state_dict(ms.state_dict())
    assert m[0].weight is weight and torch.equal(weight, ms[0].weight)


def test_load_state_dict_strict_false_reports_keys_as_torch_does() -> None:
    _src, ms = native(seed=3)
    ms(X)
    part = {k: v for k, v in ms.state_dict().items() if k.startswith("0.")}
    part["extra"] = torch.zeros(1)
    net, m = native()
    result = m.load_state_dict(part, strict=False)
    assert isinstance(result, torch.nn.modules.module._IncompatibleKeys)
    assert result.missing_keys == ["1.gamma", "1.beta", "1.running_mean", "1.running_var", "2.weight", "2.bias"]
    assert result.unexpected_keys == ["extra"]
    assert net[0].weight.state == "materialized" and net[2].weight.state == "declared"
    assert m.has_uninitialized_params()
    # torch's own module reports the same way
    plain = torch.nn.Sequential(torch.nn.Linear(5, 8))
    theirs = plain.load_state_dict({"0.weight": torch.zeros(8, 5), "extra": torch.zeros(1)}, strict=False)
    assert (theirs.missing_keys, theirs.unexpected_keys) == (["0.bias"], ["extra"])


def _states(net: nn.Block) -> list[tuple[str, tuple[int, ...]]]:
    return [(p.state, p.shape) for p in net.collect_params().values()]


def test_load_state_dict_is_all_or_nothing() -> None:
    _src, ms = native(seed=3)
    ms(X)
    good = ms.state_dict()
    net, m = native()
    before = _states(net)
    with pytest.raises(StateDictError, match=r'Missing key\(s\) in state_dict: "2.bias"') as info:
        m.load_state_dict({k: v for k, v in good.items() if k != "2.bias"})
    assert isinstance(info.value, RuntimeError) and "Nothing was changed" in str(info.value)
    bad = dict(good, **{"2.weight": torch.zeros(4, 8)})
    with pytest.raises(StateDictError, match=r"size mismatch for 2.weight: .*\(4, 8\).*\(3, -1\)"):
        m.load_state_dict(bad)
    with pytest.raises(StateDictError, match=r'"0.bias" is not a tensor'):
        m.load_state_dict(dict(good, **{"0.bias": [0.0] * 8}))
    assert _states(net) == before and m.has_uninitialized_params()
    # a materialized module keeps its values when a later key is wrong
    m(X)
    values = [w.copy() for w in net.get_weights()]
    with pytest.raises(StateDictError):
        m.load_state_dict(bad)
    assert all(np.array_equal(a, b) for a, b in zip(values, net.get_weights()))


def test_load_state_dict_assign_hands_the_tensors_to_deferral() -> None:
    _src, ms = native(seed=3)
    ms(X)
    state = {k: v.clone() for k, v in ms.state_dict().items()}
    net, m = native()
    m(X)
    m.load_state_dict(state, assign=True)
    assert net[0].weight.data() is m[0].weight
    assert m[0].weight.data_ptr() == state["0.weight"].data_ptr()
    assert np.array_equal(net.get_weights()[0], state["0.weight"].numpy())


def test_a_tensor_deferral_refuses_leaves_the_module_as_it_was() -> None:
    """Assigning or registering a tensor of the wrong shape (a Dense weight, a BatchNorm scale
    or running statistic, or one written into ``_parameters`` as torch.func does) raises
    deferral's error naming the parameter, and the module still shows the block's tensors."""
    net, m = native()
    m(X)
    before = [t.clone() for t in m.state_dict().values()]
    attempts = [
        lambda: setattr(m[0], "weight", torch.nn.Parameter(torch.zeros(3, 3))),
        lambda: m[0].register_parameter("bias", torch.nn.Parameter(torch.zeros(2))),
        lambda: setattr(m[1], "gamma", torch.nn.Parameter(torch.zeros(2))),
        lambda: setattr(m[1], "running_mean", torch.zeros(3)),
        lambda: m[1]._parameters.__setitem__("beta", torch.nn.Parameter(torch.zeros(5))),
    ]
    for attempt in attempts:
        with pytest.raises(deferral.errors.ShapeMismatchError, match=r"Parameter '\d\.\w+': expected shape"):
            attempt()
    for key, tensor in m.state_dict(keep_vars=True).items():
        layer, name = key.split(".")
        assert tensor is getattr(net[int(layer)], name).data(), key
    assert all(torch.equal(a, b) for a, b in zip(before, m.state_dict().values()))
    assert torch.equal(m(X), net(X))


def test_functional_call_runs_with_the_given_tensors() -> None:
    net, m = native()
    m(X)
    zeros = {k: torch.zeros_like(v) for k, v in m.named_parameters()}
    out = torch.func.functional_call(m, zeros, (X,))
    assert torch.equal(out, torch.zeros(4, 3))
    assert m[0].weight is net[0].weight.data() and m[0].weight.abs().sum() > 0


def test_functional_call_through_the_blocks_path_changes_nothing() -> None:
    """A functional call whose input the modules' own paths do not take (a NumPy array: the
    block converts it; a vector: the block refuses it) computes with the given tensors or
    raises the block's error, and the model keeps its own tensors either way."""
    net, m = native(chapter_mlp)
    x = torch.randn(2, 20)
    expected = m(x)
    own = [p.data() for p in net.collect_params().values()]
    zeros = {k: torch.zeros_like(v) for k, v in m.named_parameters()}
    out = torch.func.functional_call(m, zeros, (x.numpy(),))
    assert torch.equal(out, torch.zeros(2, 10))
    with pytest.raises(ValueError, match="Dense '0': expected input of rank >= 2"):
        torch.func.functional_call(m, zeros, (torch.randn(20),))
    assert [p.data() for p in net.collect_params().values()] == own
    assert m[0].weight is own[0] and torch.equal(m(x), expected) and torch.equal(net(x), expected)


def test_a_child_of_a_users_module_gets_gradients_through_both() -> None:
    net = deferral.models.resnet18(num_classes=16)
    net.initialize(seed=0, backend="torch")

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = deferral.native(net)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.backbone(x)))

    model = Head()
    model(torch.zeros(2, 3, 32, 32))
    assert "backbone.0.weight" in model.state_dict() and "head.weight" in model.state_dict()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == len(net.parameters()) + 2
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.head.weight.grad is not None and net[0].weight.data().grad is not None
    assert net[0].weight.data().grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0
    assert net.training  # model.train() reached the deferral model


def test_requires_grad_and_zero_grad() -> None:
    net, m = native()
    m.train()
    m(X).sum().backward()
    assert net[0].weight.data().grad is not None
    m.zero_grad()
    assert net[0].weight.data().grad is None
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_a_model_moved_to_another_backend_is_refused_naming_both() -> None:
    net, m = native()
    m(X)
    net.initialize(force_reinit=True, seed=0, backend="numpy")
    assert list(m.state_dict()) == []
    with pytest.raises(BackendMismatchError, match="'numpy', not 'torch'"):
        m(X)
    net.initialize(force_reinit=True, seed=0, backend="torch")
    assert m(X).shape == (4, 3) and m[0].weight is net[0].weight.data()


def test_another_backends_array_as_input_names_both_backends() -> None:
    _net, m = native()
    m(X)
    deferral.load_backend("numpy")

    class Foreign:  # an array type of no loaded backend reads as before
        pass

    with pytest.raises(TypeError, match="Received: Foreign"):
        m(Foreign())


def test_another_frameworks_tensor_names_both_backends() -> None:
    tf = pytest.importorskip("tensorflow")
    deferral.load_backend("tensorflow")
    _net, m = native()
    m(X)
    with pytest.raises(TypeError, match=r"a 'tensorflow' backend array .* bound to 'torch'"):
        m(tf.ones((4, 5)))


# -- compilers ----------------------------------------------------------------------------
def _explain(m: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    torch._dynamo.reset()
    out = torch._dynamo.explain(m)(x)
    return out.graph_break_count, out.graph_count


def test_dynamo_traces_the_mlp_and_resnet18_without_graph_breaks() -> None:
    _, mlp = native(chapter_mlp)
    mlp(torch.randn(2, 20))
    assert _explain(mlp, torch.randn(2, 20)) == (0, 1)
    net = deferral.models.resnet18(num_classes=10)
    net.initialize(seed=0, backend="torch")
    resnet = deferral.native(net)
    resnet(torch.randn(2, 3, 32, 32))
    assert _explain(resnet, torch.randn(2, 3, 32, 32)) == (0, 1)
    resnet.train()
    assert _explain(resnet, torch.randn(2, 3, 32, 32)) == (0, 1)


def _frames() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_compiled_mlp_gives_eager_outputs_and_never_recompiles() -> None:
    torch._dynamo.reset()
    _, m = native(chapter_mlp)
    x = torch.randn(2, 20)
    eager = m(x)
    compiled = torch.compile(m)
    assert torch.allclose(compiled(x), eager, atol=1e-5, rtol=0)
    graphs = _frames()
    for _ in range(3):
        assert torch.allclose(compiled(x), eager, atol=1e-5, rtol=0)
    assert _frames() == graphs


def compiled_mlp_entry() -> tuple[nn.Block, DeferralModule, Any, Any]:
    """The chapter MLP's module compiled and called three times (each checked against the
    model's own call), with the one cache entry torch made for it: its guards and the code run
    around the graph. Reads torch 2.13's cache entries
    (``torch._dynamo.eval_frame._debug_get_cache_entry_list``)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    torch._dynamo.reset()
    net, m = native(chapter_mlp)
    x = torch.randn(1, 20)
    m(x)
    compiled = torch.compile(m, backend="eager")
    for _ in range(3):
        assert torch.equal(compiled(x), net(x))
    (entry,) = _debug_get_cache_entry_list(type(m).forward.__code__)
    return net, m, x, entry


def test_the_compiled_mlp_guards_nothing_in_python() -> None:
    """Every guard of the compiled chapter MLP is one torch evaluates in C++, as for a torch.nn
    model: no guard that two paths reach one object (those run as Python on every call)."""
    _, m, x, entry = compiled_mlp_entry()
    root = entry.guard_manager.root
    assert root.get_epilogue_lambda_guards() == [] and not root.has_object_aliasing_guard()
    assert entry.guard_manager.check({"self": m, "args": (x,), "kwargs": {}})


def test_the_compiled_mlp_writes_no_python_state() -> None:
    """What a traced call writes to Python objects, dynamo writes again in Python after the
    graph on every call: the compiled chapter MLP writes nothing (its code around the graph
    stores no attribute)."""
    import dis

    entry = compiled_mlp_entry()[3]
    ops = [(i.opname, i.argval) for i in dis.get_instructions(entry.code)]
    assert any(name == "CALL" for name, _ in ops)  # the graph's call: the code read is the right one
    assert [op for op in ops if op[0] == "STORE_ATTR" or op[1] == "object_setattr_ignore_descriptor"] == []


def test_the_compiled_mlp_reads_torchs_objects_only() -> None:
    """A steady call of the chapter MLP's module is torch.nn's: the compiled call guards the
    modules, their parameter dicts and tensors, and nothing of deferral's blocks, parameters,
    call states or op dispatch, and the tensors it fetches are the registered ones."""
    net, m, x, entry = compiled_mlp_entry()
    guards = str(entry.guard_manager)
    for deferral_object in ("_deferral_block", "deferral.parameter.Parameter", "_CallState", "_dispatch", "_by_id"):
        assert deferral_object not in guards, deferral_object
    assert "L['self']._modules['0']._parameters['weight']" in guards
    assert all(type(sub._parameters) is dict for sub in m.children())  # torch's own dicts
    assert torch.equal(m(x), net(x))


def test_a_dense_module_computes_as_torch_nn_linear_and_its_activation() -> None:
    """A materialized Dense module's call is torch.nn.Linear's forward, then the backend's own
    activation: the bits the block's call gives, for every activation kind."""
    for activation in ("relu", "sigmoid", "tanh", "silu", ("leaky_relu", 0.2), None, lambda v: deferral.ops.multiply(v, 2.0)):
        layer = nn.Dense(4, activation=activation)
        layer.initialize(seed=1, backend="torch")
        m = deferral.native(layer)
        x = torch.randn(3, 6)
        assert torch.equal(m(x), layer(x)), activation
        assert m._deferral_then is not False
    relu = nn.Dense(4, activation="relu")
    relu.initialize(seed=0, backend="torch")
    relu_module = deferral.native(relu)
    relu_module(torch.randn(1, 2))
    assert relu_module._deferral_then is torch.relu


def test_a_dense_module_that_cannot_be_torchs_linear_computes_the_block() -> None:
    """A Dense subclass with its own forward, and an activation that is a block of its own (its
    module's hooks fire), take the block's call; so do inputs the block refuses, with its errors."""

    class Doubled(nn.Dense):
        def forward(self, x: Any) -> Any:
            return deferral.ops.multiply(super().forward(x), 2.0)

    layer = Doubled(3)
    layer.initialize(seed=0, backend="torch")
    m = deferral.native(layer)
    x = torch.randn(2, 5)
    assert torch.equal(m(x), layer(x)) and m._deferral_then is False

    class Gate(nn.Block):
        def forward(self, x: Any) -> Any:
            return deferral.ops.multiply(x, deferral.ops.sigmoid(x))

    gated = nn.Dense(3, activation=Gate())
    gated.initialize(seed=0, backend="torch")
    gm = deferral.native(gated)
    seen = []
    gm.activation.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    assert torch.equal(gm(x), gated(x)) and seen == [(2, 3)] and gm._deferral_then is False

    plain = nn.Dense(3)
    plain.initialize(seed=0, backend="torch")
    dense = deferral.native(plain)
    dense(x)
    with pytest.raises(ValueError, match="rank >= 2"):
        dense(torch.randn(5))
    with pytest.raises(deferral.errors.ShapeMismatchError, match="expected 5 input features"):
        dense(torch.randn(2, 4))
    with pytest.raises(TypeError, match="Dense"):
        dense(torch.ones(2, 5, dtype=torch.int64))
    assert torch.equal(dense(x.numpy()), dense(x))  # a NumPy array: the block converts it


def test_calls_in_threads_while_the_model_is_initialized_again_always_apply_the_activation() -> None:
    """Four threads call the module while a fifth initializes the model again and again: every
    output is a whole call's (the ReLU applied, the right shape), and no call raises."""
    import threading

    net = nn.Sequential([nn.Dense(16, activation="relu")])
    net.initialize(seed=0, backend="torch")
    m = deferral.native(net)
    x = torch.randn(8, 5)
    m(x)
    failures: list[str] = []
    stop = threading.Event()

    def call() -> None:
        while not stop.is_set():
            try:
                out = m(x)
                if out.shape != (8, 16) or bool((out < 0).any()):
                    failures.append(f"bad output {tuple(out.shape)}")
            except Exception as exc:  # recorded: the test fails on it
                failures.append(repr(exc))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for seed in range(1, 40):
            net.initialize(seed=seed, backend="torch", force_reinit=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == [] and not any(t.is_alive() for t in threads)
    assert torch.equal(m(x), net(x))


def test_a_running_functional_call_gives_the_dense_modules_their_values() -> None:
    """While a ``deferral.functional`` call runs, a module called inside it computes with the
    values it was given, as the blocks do."""
    net = nn.Sequential([nn.Dense(4, activation="relu"), nn.Dense(2)])

    class Caller(nn.Block):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x: Any) -> Any:
            return deferral.native(self.inner)(x)

    caller = Caller()
    caller.initialize(seed=0, backend="torch")
    x = torch.randn(3, 5)
    expected = caller(x)
    apply, params = deferral.functional(caller)
    zeros = {k: torch.zeros_like(v) for k, v in params.items()}
    assert torch.equal(apply(zeros, x), torch.zeros(3, 2))
    assert torch.equal(caller(x), expected)


def test_a_sequential_module_follows_its_blocks_changes() -> None:
    """After a layer is added to the block, or the model initialized again, the module's next
    call computes the new model (its call state was dropped, so the call is checked again)."""
    net, m = native(chapter_mlp)
    x = torch.randn(2, 20)
    m(x)
    assert m._deferral_count == 2
    net.add(nn.Dense(4))
    assert m._deferral_count == -1
    net[2].initialize(seed=1, backend="torch")
    assert m(x).shape == (2, 4) and torch.equal(m(x), net(x)) and m._deferral_count == 3
    net.initialize(seed=9, backend="torch", force_reinit=True)
    assert m._deferral_count == -1
    assert torch.equal(m(x), net(x))


def test_compiling_before_the_first_call_materializes_eagerly() -> None:
    torch._dynamo.reset()
    _net, m = native(chapter_mlp)
    compiled = torch.compile(m, backend="eager")
    y = compiled(torch.ones(2, 20))
    ref = chapter_mlp()
    ref.initialize(seed=0, backend="torch")
    assert torch.equal(y, ref(torch.ones(2, 20)))
    assert torch.equal(compiled(torch.ones(2, 20)), y)


def test_dropout_and_batchnorm_in_training_mode_do_not_recompile() -> None:
    torch._dynamo.reset()
    net = nn.Sequential([nn.Dense(16, activation="relu"), nn.BatchNorm(), nn.Dropout(0.5), nn.Dense(2)])
    net.initialize(seed=0, backend="torch")
    m = deferral.native(net)
    m(torch.randn(8, 5))
    compiled = torch.compile(m, backend="aot_eager")
    compiled(torch.randn(8, 5))
    m.train()
    compiled(torch.randn(8, 5))  # one recompile for the mode, as torch.nn's own
    graphs = _frames()
    for _ in range(4):
        out = compiled(torch.randn(8, 5))
    m.eval()
    compiled(torch.randn(8, 5))
    m.train()
    compiled(torch.randn(8, 5))
    assert _frames() == graphs and out.shape == (8, 2)


@pytest.mark.slow
def test_compiled_resnet18_gives_eager_outputs() -> None:
    torch._dynamo.reset()
    net = deferral.models.resnet18(num_classes=10)
    net.initialize(seed=0, backend="torch")
    m = deferral.native(net)
    x = torch.randn(2, 3, 32, 32)
    eager = m(x)
    compiled = torch.compile(m)
    assert torch.allclose(compiled(x), eager, atol=1e-5, rtol=0)
    graphs = _frames()
    assert torch.allclose(compiled(x), eager, atol=1e-5, rtol=0)
    assert _frames() == graphs


def test_export_of_the_mlp_computes_the_same_outputs() -> None:
    _, m = native(chapter_mlp)
    x = torch.randn(2, 20)
    m(x)
    program = torch.export.export(m, (x,))
    kinds = {spec.kind.name for spec in program.graph_signature.input_specs}
    assert kinds == {"PARAMETER", "USER_INPUT"}  # the weights are parameters, not constants
    assert sorted(program.state_dict) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    other = torch.randn(2, 20)
    assert torch.allclose(program.module()(other), m(other), atol=1e-6, rtol=0)
    batch = torch.export.Dim("batch")
    dynamic = torch.export.export(m, (x,), dynamic_shapes=(({0: batch},),))
    many = torch.randn(7, 20)
    assert torch.allclose(dynamic.module()(many), m(many), atol=1e-6, rtol=0)


def test_jit_trace_of_the_mlp() -> None:
    _, m = native(chapter_mlp)
    x = torch.randn(2, 20)
    m(x)
    traced = torch.jit.trace(m, (x,))
    other = torch.randn(3, 20)
    assert torch.allclose(traced(other), m(other), atol=1e-6, rtol=0)


# -- DistributedDataParallel ----------------------------------------------------------------
_DDP_WORKER = textwrap.dedent("""
    import datetime, sys, torch, torch.distributed as dist
    import deferral
    from deferral import nn

    rank, store = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(rank)  # different data on each rank
    net = nn.Sequential([nn.Dense(16, activation="relu"), nn.BatchNorm(), nn.Dense(1)])
    net.initialize(seed=0, backend="torch")
    module = deferral.native(net)
    module(torch.zeros(2, 4))  # materializes from the seed: the same bits on every rank
    def gathered():
        flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
        out = [torch.empty_like(flat) for _ in range(2)]
        dist.all_gather(out, flat)
        return out
    before = gathered()
    ddp = torch.nn.parallel.DistributedDataParallel(module, broadcast_buffers=False, init_sync=False)
    ddp.train()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    start = net.get_weights()[0].copy()
    for _ in range(3):
        opt.zero_grad()
        loss = ddp(torch.randn(8, 4)).square().mean()
        loss.backward()
        opt.step()
    after = gathered()
    print("RESULT", rank, bool(torch.equal(*before)), bool(torch.equal(*after)),
          bool((net.get_weights()[0] != start).any()), flush=True)
    del ddp, opt
    dist.destroy_process_group()
    # DDP's C++ threads sometimes abort the interpreter's own teardown ("terminate called
    # without an active exception", torch 2.13 with gloo): everything is done, leave at once.
    import os
    os._exit(0)
""")


def test_distributed_data_parallel_trains_across_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "ddp_worker.py"
    script.write_text(_DDP_WORKER, encoding="utf-8")
    # A file rendezvous (no port to race for) on the loopback interface only, as tests/test_sharded.py.
    store = str(tmp_path / "rendezvous")
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), store], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env) for rank in range(2)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, (out[-1000:], err[-3000:])
            results += [line.split() for line in out.splitlines() if line.startswith("RESULT")]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert sorted(results) == [["RESULT", "0", "True", "True", "True"], ["RESULT", "1", "True", "True", "True"]]


def test_dense_and_embedding_modules_are_torchs_linear_and_embedding() -> None:
    net = nn.Sequential([nn.Embedding(10, 4), nn.Dense(6, in_units=4), nn.Dense(3, use_bias=False, in_units=6)])
    net.initialize(seed=0, backend="torch")
    m = deferral.native(net)
    assert isinstance(m[0], torch.nn.Embedding) and (m[0].num_embeddings, m[0].embedding_dim) == (10, 4)
    assert isinstance(m[1], torch.nn.Linear) and (m[1].in_features, m[1].out_features) == (4, 6)
    assert m[2].bias is None and [n for n, _ in m[2].named_parameters()] == ["weight"]
    x = torch.tensor([[1, 9], [0, 3]])
    hidden = torch.nn.functional.embedding(x, m[0].weight)
    want = torch.nn.functional.linear(torch.nn.functional.linear(hidden, m[1].weight, m[1].bias), m[2].weight)
    assert torch.equal(m(x), want)  # torch's own layouts: (out, in) and (num_embeddings, dim)
    assert list(m.state_dict()) == ["0.weight", "1.weight", "1.bias", "2.weight"]
    assert "(1): Dense(4 -> 6, linear)" in repr(m)


def test_the_sequential_module_calls_its_child_modules_so_their_hooks_run() -> None:
    net, m = native()
    seen: list[str] = []
    for name in ("0", "1", "2"):
        m.get_submodule(name).register_forward_pre_hook(lambda mod, args, name=name: seen.append(name))
    out = m(X)  # the lazy model's first call materializes, all or nothing, through the children
    assert seen == ["0", "1", "2"] and not m.has_uninitialized_params()
    again = m(X)
    assert seen == ["0", "1", "2"] * 2 and torch.equal(out, again) and torch.equal(again, net(X))
    m[1].register_forward_hook(lambda mod, args, out: out * 0)
    assert torch.equal(m(X), m[2](torch.zeros(4, 8)))  # a hook's output goes on, as in torch.nn.Sequential


def test_a_sequential_subclass_with_its_own_forward_routes_through_the_child_modules() -> None:
    """A Sequential whose class has its own forward computes that forward; its children still
    run through their modules (hooks fire), as in any deferral model's module."""

    class Twice(nn.Sequential):
        def forward(self, x: Any) -> Any:
            for block in self._children.values():
                x = block(block(x)) if block is self[1] else block(x)
            return x

    net = Twice([nn.Dense(4, activation="relu"), nn.Dense(4), nn.Dense(2)])
    net.initialize(seed=3, backend="torch")
    m = deferral.native(net)
    seen: list[str] = []
    for name in ("0", "1", "2"):
        m.get_submodule(name).register_forward_pre_hook(lambda mod, args, name=name: seen.append(name))
    out = m(X)
    assert seen == ["0", "1", "1", "2"] and torch.equal(out, net(X))
    assert torch.equal(out, net[2](net[1](net[1](net[0](X)))))


def test_a_child_module_deleted_from_the_sequential_module_leaves_the_block_computing() -> None:
    """Deleting a child module (``del m._modules[name]``) changes no deferral block: the call
    still computes every block, the one without a module as it is."""
    net, m = native()
    expected = m(X)
    del m._modules["1"]
    assert torch.equal(m(X), expected) and torch.equal(m(X), net(X))


def test_a_child_replaced_by_another_models_module_computes_that_model() -> None:
    """The module set in a child's place may be another deferral model's: the call computes
    that model, not the block it replaced, and setting the original back restores it."""
    net, m = native()
    m(X)
    other = nn.Dense(8, activation="tanh")
    other.initialize(seed=5, backend="torch")
    replacement = deferral.native(other)
    original = m[0]
    setattr(m, "0", replacement)
    rest = torch.nn.Sequential(*list(m)[1:])
    assert torch.equal(m(X), rest(other(X)))
    setattr(m, "0", original)
    assert torch.equal(m(X), net(X))


def test_a_childs_hook_calling_another_module_leaves_each_computing_its_block() -> None:
    net, m = native()
    expected = net(X)
    side: list[torch.Tensor] = []
    m[0].register_forward_pre_hook(lambda mod, args: side.append(m[2](torch.ones(1, 8))))
    assert torch.equal(m(X), expected) and torch.equal(side[0], net[2](torch.ones(1, 8)))


def test_a_child_module_replaced_by_an_adapter_is_the_one_called() -> None:
    """peft and torch.ao swap a layer for a wrapper with setattr: the model then calls the
    wrapper, which calls the original module; a non-module is refused and changes nothing."""
    net, m = native()
    m(X)
    original = m[0]

    class Shift(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) + 1.0

    m[0].register_forward_hook(lambda mod, args, out: seen.append(out))
    seen: list[torch.Tensor] = []
    setattr(m, "0", Shift(original))
    out = m(X)
    rest = torch.nn.Sequential(*list(m)[1:])
    assert torch.equal(out, rest(original(X) + 1.0)) and len(seen) == 2  # the original runs inside
    setattr(m, "0", original)
    assert torch.equal(m(X), net(X))
    with pytest.raises(ModuleChangeError, match=r"can be replaced by another torch\.nn\.Module, not by NoneType"):
        setattr(m, "0", None)
    assert m[0] is original and torch.equal(m(X), net(X))
