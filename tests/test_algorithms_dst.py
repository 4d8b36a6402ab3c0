"""keras_sparse.algorithms.dst: NeurRev's p, the RigL-ITOP preset, churn statistics."""

import math

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg


def _targets(*weights):
    out = []
    for i, w in enumerate(weights):
        w = np.asarray(w, np.float32)
        out.append(alg.Target(f"l{i}/kernel", keras.Variable(w),
                              keras.Variable((w != 0).astype(np.float32)), 0.0))
    return out


def test_neurrev_default_p_is_independent_of_the_update_interval():
    w = np.zeros((10, 100), np.float32)
    w.flat[:100] = np.linspace(-1, 1, 100)  # s = 0.9: 100 of 1000 active
    for interval in (1, 10, 50, 100, 1000):
        a = alg.NeurRev(update_interval=interval)
        assert a.default_ratio() == pytest.approx(0.1)
        a.setup(_targets(w), 100_000)
        assert a._relax == [10], interval  # p = 0.1 * (1 - 0.9) of 1000 entries


def test_rigl_itop_is_registered_with_the_itop_defaults():
    a = alg.get("rigl_itop")
    assert isinstance(a, alg.RigLITOP) and isinstance(a, alg.RigL) and a.needs_gradients
    cfg = a.get_config()
    assert cfg["update_interval"] == 4000
    assert cfg["drop_fraction"] == 0.5 and cfg["drop_fraction_decay"] == "cosine"
    assert cfg["drop_fraction_min"] == 0.005 and cfg["stop_step"] == 1.0
    a = alg.RigLITOP(update_interval=100)
    a.setup(_targets(np.array([[0.5, 0.0, -0.2, 0.0]], np.float32)), 2000)
    assert a.bounds == (0, 2000)  # no 75% stop
    assert a.schedule.is_update_step(2000, 2000)
    # Cosine over all of training, 0.5 -> 0.005 (CosineAnnealingLR, eta_min=0.005).
    for t in (0, 500, 1000, 1500, 2000):
        expected = 0.005 + 0.495 * 0.5 * (1 + math.cos(math.pi * t / 2000))
        assert a.drop_fraction_at(t) == pytest.approx(expected)
    # The named callback, like the other ones, and a config round trip.
    cb = ks.callbacks.RigLITOP(update_interval=100, seed=3)
    assert isinstance(cb.algorithm, alg.RigLITOP) and cb.algorithm.update_interval == 100
    again = ks.callbacks.RigLITOP.from_config(cb.get_config())
    assert again.algorithm.get_config() == cb.algorithm.get_config()
    with pytest.raises(ValueError, match="drop_fraction_min"):
        alg.RigLITOP(drop_fraction=0.3, drop_fraction_min=0.4)


def test_churn_counts_grown_weights_dropped_at_the_next_update():
    # SET on one weight of 8, 4 active; drop 2 by magnitude, grow 2 at random.
    w = np.array([[0.9, 0.8, 0.05, 0.04, 0, 0, 0, 0]], np.float32)
    ts = _targets(w)
    a = alg.SET(drop_fraction=0.5, drop_fraction_decay="constant", seed=0)
    a.setup(ts, 1000)
    first = a.update(100, ts)["l0/kernel"]
    assert first["churn_grown"] == 0 and "churn" not in first and a.churn() is None
    grown = a._last_grown[0].copy()
    assert grown.sum() == first["regrown"] > 0
    # Grown weights start at 0: the next update drops them first.
    second = a.update(200, ts)["l0/kernel"]
    mask = keras.ops.convert_to_numpy(ts[0].mask)
    dropped = int((grown & (mask == 0)).sum())
    assert second["churn_grown"] == grown.sum()
    assert second["churn_dropped"] == dropped
    assert second["churn"] == pytest.approx(dropped / grown.sum())
    assert a.churn() == pytest.approx(second["churn"])


def test_callback_logs_churn_and_its_mean():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(3, name="b")])
    sparse = ks.sparsify(model, 0.8, "uniform", keep_dense=None, seed=0)
    sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    cb = ks.callbacks.SET(update_interval=2, stop_step=1.0, seed=0)
    history = sparse.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    assert 0.0 <= history.history["churn"][-1] <= 1.0
    assert 0.0 <= history.history["churn_mean"][-1] <= 1.0
    grown, dropped = cb._churn_totals
    assert grown > 0 and history.history["churn_mean"][-1] == pytest.approx(dropped / grown)
