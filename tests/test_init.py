"""Initializers: fan rules, scales, names and aliases, argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deferral import InitializerError, init
from deferral.random import derive_key


def _values(initializer: init.Initializer, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    n = math.prod(shape)
    return initializer.recipe(shape).values(derive_key(seed, "p"), shape, 0, n).reshape(shape)


@pytest.mark.parametrize(
    "shape,expected",
    [((), (1, 1)), ((5,), (5, 5)), ((10, 20), (20, 10)), ((64, 3, 3, 3), (27, 576)), ((8, 4, 5), (20, 40))],
)
def test_fans(shape: tuple[int, ...], expected: tuple[int, int]) -> None:
    assert init.fans(shape) == expected


def test_constant_family() -> None:
    assert np.all(_values(init.Zeros(), (3, 4)) == 0.0)
    assert np.all(_values(init.Ones(), (3, 4)) == 1.0)
    assert np.all(_values(init.Constant(-2.5), (7,)) == -2.5)


def test_scales_follow_the_conventional_definitions() -> None:
    shape = (300, 200)  # fan_in 200, fan_out 300
    assert init.XavierUniform().recipe(shape).b == pytest.approx(math.sqrt(6 / 500))
    assert init.XavierNormal().recipe(shape).b == pytest.approx(math.sqrt(2 / 500))
    assert init.KaimingUniform().recipe(shape).b == pytest.approx(math.sqrt(6 / 200))
    assert init.KaimingNormal().recipe(shape).b == pytest.approx(math.sqrt(2 / 200))
    assert init.KaimingNormal(mode="fan_out").recipe(shape).b == pytest.approx(math.sqrt(2 / 300))
    assert init.KaimingNormal(gain=1.0).recipe(shape).b == pytest.approx(math.sqrt(1 / 200))
    assert init.XavierUniform(gain=2.0).recipe(shape).b == pytest.approx(2 * math.sqrt(6 / 500))
    assert init.Uniform(0.3).recipe(shape) == init.Recipe("uniform", -0.3, 0.3)
    assert init.Normal(0.5).recipe(shape) == init.Recipe("normal", 0.0, 0.5)


def test_sampled_statistics() -> None:
    shape = (400, 500)
    v = _values(init.KaimingNormal(), shape)
    assert abs(v.std() - math.sqrt(2 / 500)) < 0.002
    v = _values(init.XavierUniform(), shape)
    bound = math.sqrt(6 / 900)
    assert v.min() >= -bound and v.max() < bound and abs(v.std() - bound / math.sqrt(3)) < 0.001
    v = _values(init.TruncatedNormal(0.1), shape)
    assert v.min() >= -0.2 and v.max() <= 0.2 and abs(v.std() - 0.1 * 0.8796) < 0.001


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4), (8, 2, 3, 3)])
def test_orthogonal_is_orthogonal(shape: tuple[int, ...]) -> None:
    v = _values(init.Orthogonal(gain=2.0), shape).reshape(shape[0], -1)
    rows, cols = v.shape
    gram = v @ v.T if rows <= cols else v.T @ v
    assert np.allclose(gram, 4.0 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_refuses_vectors() -> None:
    with pytest.raises(InitializerError, match="at least 2 dimensions"):
        init.Orthogonal().recipe((5,))


@pytest.mark.parametrize(
    "name,cls",
    [("zeros", init.Zeros), ("ones", init.Ones), ("xavier_uniform", init.XavierUniform),
     ("glorot_uniform", init.XavierUniform), ("glorot_normal", init.XavierNormal),
     ("he_normal", init.KaimingNormal), ("he_uniform", init.KaimingUniform),
     ("kaiming_normal", init.KaimingNormal), ("normal", init.Normal), ("uniform", init.Uniform),
     ("truncated_normal", init.TruncatedNormal), ("orthogonal", init.Orthogonal),
     ("Xavier_Uniform", init.XavierUniform)],
)
def test_names_and_aliases(name: str, cls: type) -> None:
    assert type(init.create(name)) is cls


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InitializerError) as info:
        init.create("he_weird")
    assert "Choose one of:" in str(info.value) and "glorot_uniform" in str(info.value)


def test_create_passes_instances_and_none_through() -> None:
    n = init.Normal(0.1)
    assert init.create(n) is n
    assert init.create(None) is None
    with pytest.raises(InitializerError, match="expected an initializer"):
        init.create(3.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make,match",
    [(lambda: init.Normal(-1.0), "Received: sigma=-1.0"),
     (lambda: init.Normal(0), "Received: sigma=0"),
     (lambda: init.TruncatedNormal(float("nan")), "sigma"),
     (lambda: init.Uniform(-0.1), "Received: scale=-0.1"),
     (lambda: init.KaimingNormal(mode="fan_sideways"), "mode"),
     (lambda: init.XavierUniform(gain=0), "gain"),
     (lambda: init.Constant(float("inf")), "finite"),
     (lambda: init.Orthogonal(gain="big"), "gain")],
)
def test_bad_arguments_fail_at_creation(make, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InitializerError, match=match):
        make()


def test_initializers_compare_and_print() -> None:
    assert init.Normal(0.1) == init.Normal(0.1) != init.Normal(0.2)
    assert repr(init.KaimingNormal()) == "KaimingNormal(gain=1.4142135623730951, mode='fan_in')"
    assert repr(init.Zeros()) == "Zeros()"
    assert len({init.Ones(), init.Ones()}) == 1


def test_orthogonal_chunks_factorise_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    qr = np.linalg.qr
    monkeypatch.setattr(np.linalg, "qr", lambda a: calls.append(a.shape) or qr(a))
    shape = (7, 5)
    recipe = init.Orthogonal().recipe(shape)
    key = derive_key(123, "chunked")
    chunks = [recipe.values(key, shape, s, min(s + 4, 35)) for s in range(0, 35, 4)]
    assert calls == [(7, 5)]
    assert np.array_equal(np.concatenate(chunks), recipe.values(key, shape, 0, 35))
