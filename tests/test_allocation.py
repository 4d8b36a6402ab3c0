import numpy as np
import pytest

from keras_sparse import allocation


def _global_sparsity(shapes, sparsities):
    sizes = {n: np.prod(s) for n, s in shapes.items()}
    zeros = sum(sizes[n] * sparsities[n] for n in shapes)
    return zeros / sum(sizes.values())


def _water_filling(shapes, sparsity, score):
    """Independent ERK solver: bisection on eps with densities min(1, eps*score)."""
    sizes = {n: float(np.prod(s)) for n, s in shapes.items()}
    target = (1 - sparsity) * sum(sizes.values())
    lo, hi = 0.0, 1e9
    for _ in range(200):
        eps = (lo + hi) / 2
        ones = sum(min(1.0, eps * score(s)) * sizes[n] for n, s in shapes.items())
        lo, hi = (eps, hi) if ones < target else (lo, eps)
    return {n: 1 - min(1.0, eps * score(s)) for n, s in shapes.items()}


def test_erk_hand_computed():
    # scores: a = 200/10000 = 0.02, b = 110/1000 = 0.11
    # eps = 0.1 * 11000 / (0.02 * 10000 + 0.11 * 1000) = 1100 / 310
    got = allocation.allocate({"a": (100, 100), "b": (100, 10)}, 0.9, "erk")
    eps = 1100 / 310
    assert got["a"] == pytest.approx(1 - 0.02 * eps)
    assert got["b"] == pytest.approx(1 - 0.11 * eps)


def test_erk_clamps_dense_layer_and_resolves():
    # b would get density 49.5: it becomes dense, a absorbs the rest.
    got = allocation.allocate({"a": (1000, 1000), "b": (10, 10)}, 0.5, "erk")
    assert got["b"] == 0.0
    assert got["a"] == pytest.approx(1 - (0.5 * 1_000_100 - 100) / 1e6)
    assert _global_sparsity({"a": (1000, 1000), "b": (10, 10)}, got) == pytest.approx(0.5)


SHAPES = {
    "conv1": (3, 3, 3, 16),
    "conv2": (3, 3, 16, 32),
    "conv3": (3, 3, 32, 64),
    "fc1": (1024, 256),
    "fc2": (256, 10),
    "emb": (5000, 16),
}


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95, 0.98])
@pytest.mark.parametrize("power", [1.0, 0.5])
def test_erk_matches_independent_water_filling(sparsity, power):
    got = allocation.allocate(SHAPES, sparsity, "erk", erk_power_scale=power)
    ref = _water_filling(SHAPES, sparsity, lambda s: (sum(s) / np.prod(s)) ** power)
    for name in SHAPES:
        assert got[name] == pytest.approx(ref[name], abs=1e-9)


@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 0.98])
def test_global_sparsity_is_exact(distribution, sparsity):
    got = allocation.allocate(SHAPES, sparsity, distribution)
    assert _global_sparsity(SHAPES, got) == pytest.approx(sparsity, abs=1e-12)
    assert all(0.0 <= v < 1.0 for v in got.values())


def test_er_ignores_kernel_dims():
    got = allocation.allocate({"a": (3, 3, 16, 32), "b": (5, 5, 16, 32)}, 0.9, "er")
    # Same (n_in, n_out) -> same density under ER, unlike ERK.
    assert got["a"] == pytest.approx(got["b"])
    erk = allocation.allocate({"a": (3, 3, 16, 32), "b": (5, 5, 16, 32)}, 0.9, "erk")
    assert erk["a"] != pytest.approx(erk["b"])


def test_uniform_is_uniform():
    assert set(allocation.allocate(SHAPES, 0.7, "uniform").values()) == {0.7}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"distribution": "gaussian"}, ValueError, "'uniform', 'er', 'erk'"),
        ({"distribution": None}, ValueError, "Unknown `distribution`"),
        ({"sparsity": 1.0}, ValueError, r"\[0, 1\)"),
        ({"erk_power_scale": 0.0}, ValueError, "erk_power_scale"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {"shapes": SHAPES, "sparsity": 0.9, "distribution": "erk", **kwargs}
    with pytest.raises(error, match=match):
        allocation.allocate(**args)


def test_empty_shapes():
    with pytest.raises(ValueError, match="empty"):
        allocation.allocate({}, 0.9)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (), (2, -1), (2.0, 3), "ab", None])
def test_degenerate_shape_raises_value_error_naming_it(shape):
    # Found by tests/test_keras_sparse_fuzz.py: a zero-size weight used to raise
    # ZeroDivisionError from inside the ER/ERK score.
    for distribution in ("uniform", "er", "erk"):
        with pytest.raises(ValueError, match="shape of weight 'w'"):
            allocation.allocate({"w": shape, "ok": (4, 4)}, 0.5, distribution)


@pytest.mark.parametrize("power", [float("inf"), float("nan"), None, "1", True, 0, -1.0])
def test_bad_erk_power_scale_raises_value_error(power):
    # inf used to give all-dense layers (sparsity 0 instead of the target) or
    # ZeroDivisionError; None a bare float() TypeError.
    with pytest.raises(ValueError, match="erk_power_scale"):
        allocation.allocate({"a": (2, 3), "b": (4, 4)}, 0.5, "erk", power)


def test_huge_erk_power_scale_raises_value_error():
    # Found by the fuzz sweep: 1e9 raised OverflowError / ZeroDivisionError.
    with pytest.raises(ValueError, match="erk_power_scale"):
        allocation.allocate({"a": (2, 3), "b": (1, 1)}, 0.5, "erk", 10**9)
