"""keras_sparse.pruning: SynFlow's per-layer budgets follow the iterative schedule."""

import keras
import numpy as np
import pytest

from keras_sparse import allocation
from keras_sparse import masks as mask_math
from keras_sparse import pruning
from keras_sparse.pruning import methods


def _cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 2))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c0")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="d0")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def _erk_budgets(model, sparsity):
    shapes = {f"{l.name}/kernel": tuple(l.kernel.shape) for l in model.layers if hasattr(l, "kernel")}
    return allocation.allocate(shapes, sparsity, "erk")


@pytest.mark.full
def test_synflow_budgets_as_name_or_dict_give_the_same_masks():
    model = _cnn()
    budgets = _erk_budgets(model, 0.9)
    by_name = pruning.synflow(model, 0.9, iterations=20, scope="layer", distribution="erk")
    by_dict = pruning.synflow(model, 0.9, iterations=20, scope="layer", distribution=budgets)
    a, b = pruning.get_masks(by_name), pruning.get_masks(by_dict)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a[key].sum() == mask_math.num_active(a[key].size, budgets[key])


def test_synflow_dict_budgets_are_reached_gradually(monkeypatch):
    model = _cnn()
    budgets = _erk_budgets(model, 0.95)
    seen = []
    original = methods.masks_from_scores

    def spy(scores, sparsity, scope, distribution, current):
        out = original(scores, sparsity, scope, distribution, current)
        seen.append({k: 1.0 - float(m.sum()) / m.size for k, m in out.items()})
        return out

    monkeypatch.setattr(methods, "masks_from_scores", spy)
    n = 5
    pruning.synflow(model, 0.95, iterations=n, scope="layer", distribution=budgets)
    assert len(seen) == n
    for k, densities in enumerate(seen, start=1):
        for key, s_l in budgets.items():
            size = int(np.prod(model.get_layer(key.split("/")[0]).kernel.shape))
            expected = 1.0 - mask_math.num_active(size, 1.0 - (1.0 - s_l) ** (k / n)) / size
            assert densities[key] == pytest.approx(expected, abs=1e-9), (k, key)
    # Not one-shot: the first round keeps far more than the final budget.
    assert seen[0]["d0/kernel"] < budgets["d0/kernel"] - 0.3


def test_synflow_round_budgets_formula():
    out = pruning.synflow_round_budgets({"a": 0.9, "b": 0.0}, 1, 2)
    assert out["a"] == pytest.approx(1.0 - 0.1 ** 0.5)
    assert out["b"] == 0.0
    assert pruning.synflow_round_budgets({"a": 0.9}, 2, 2)["a"] == pytest.approx(0.9)
