"""keras_sparse.algorithms.gradual: GraNet's prune stop, regrowth stop and global pruning."""

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
                              keras.Variable(np.ones_like(w)), 0.0))
    return out


def test_granet_defaults_follow_the_reference():
    a = alg.GraNet()
    cfg = a.get_config()
    assert cfg["stop_step"] == pytest.approx(110 / 160)
    assert cfg["regrow_stop_step"] == 1.0
    assert cfg["regeneration_rate"] == 0.5 and cfg["regeneration_rate_min"] == 0.005
    assert cfg["distribution"] == "global"
    assert ks.callbacks.GraNet().algorithm.get_config() == cfg


def test_granet_regrows_after_the_prune_stop_until_the_end():
    rng = np.random.default_rng(0)
    ts = _targets(rng.normal(size=(20, 10)), rng.normal(size=(10, 5)))
    a = alg.GraNet(sparsity=0.8, update_interval=100, stop_step=0.5)
    a.setup(ts, 1000)
    assert a.bounds == (0, 1000)  # updates run to the end of training
    steps = [t for t in range(0, 1001, 50) if a.schedule.is_update_step(t, 1000)]
    assert steps == list(range(100, 1001, 100))
    for t in steps:
        grads = [rng.normal(size=tuple(x.weight.shape)) for x in ts]
        stats = a.update(t, ts, grads)
        total = sum(float(keras.ops.sum(x.mask)) for x in ts)
        if t >= 500:
            # The sparsity is at its target and prune-and-regrow goes on.
            assert total == 50
            if t < 1000:  # r(1000) = 0.005: under one weight of these layers
                assert sum(s["regrown"] for s in stats.values()) > 0, t
    # Cosine over all of training, from 0.5 down to 0.005.
    assert a.regeneration_rate_at(0) == pytest.approx(0.5)
    assert a.regeneration_rate_at(500) == pytest.approx(0.005 + 0.495 * 0.5)
    assert a.regeneration_rate_at(1000) == pytest.approx(0.005)
    expected = 0.005 + 0.495 * 0.5 * (1 + math.cos(math.pi * 0.8))
    assert a.regeneration_rate_at(800) == pytest.approx(expected)


def test_granet_rejects_regrow_stop_before_prune_stop():
    ts = _targets(np.ones((4, 4)))
    a = alg.GraNet(sparsity=0.5, stop_step=0.6, regrow_stop_step=0.5)
    with pytest.raises(ValueError, match="regrow_stop_step"):
        a.setup(ts, 1000)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ts[0].mask), np.ones((4, 4)))
    with pytest.raises(ValueError, match="regeneration_rate_min"):
        alg.GraNet(regeneration_rate=0.3, regeneration_rate_min=0.4)


def test_granet_global_pruning_ranks_all_layers_together():
    small = np.full((10, 10), 0.01, np.float32) + np.linspace(0, 0.001, 100).reshape(10, 10)
    large = np.full((10, 10), 1.0, np.float32) + np.linspace(0, 0.1, 100).reshape(10, 10)
    ts = _targets(small, large)
    a = alg.GraNet(sparsity=0.5, regeneration_rate=0.01, regeneration_rate_min=0.0,
                   update_interval=100, stop_step=100, regrow_stop_step=100)
    a.setup(ts, 1000)
    a.update(100, ts, [np.zeros((10, 10)), np.zeros((10, 10))])
    dens = [float(keras.ops.mean(t.mask)) for t in ts]
    assert dens[0] <= 0.01 and dens[1] >= 0.99  # global: the small layer goes first
    ts = _targets(small, large)
    a = alg.GraNet(sparsity=0.5, regeneration_rate=0.01, regeneration_rate_min=0.0,
                   update_interval=100, stop_step=100, regrow_stop_step=100,
                   distribution="uniform")
    a.setup(ts, 1000)
    a.update(100, ts, [np.zeros((10, 10)), np.zeros((10, 10))])
    assert [float(keras.ops.mean(t.mask)) for t in ts] == [0.5, 0.5]


def test_gmp_still_stops_at_its_stop_step():
    ts = _targets(np.random.default_rng(0).normal(size=(10, 10)))
    a = alg.GMP(sparsity=0.5, update_interval=100)
    a.setup(ts, 1000)
    assert a.bounds == (0, 750)
    assert not a.schedule.is_update_step(800, 1000)
