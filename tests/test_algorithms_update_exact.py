"""Exact, hand-computed masks of DSR, Deep-R and GraNet-ST; RigL's defaults.

Each test drives `Updater.update` directly on tiny tensors, as
`test_algorithms_update.py` does, so every expected mask is a literal worked
out by hand in the comments. Random growth (DSR, Deep-R) ranks the eligible
entries by `masks.seed_for(seed, step, weight_index).random(shape)`; those
scores are pinned (to 3 decimals) by `_scores` so the hand derivation below
is checked against the stream the updater really draws.
"""

import inspect
import math

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg
from keras_sparse import masks as mm
from testing import mask_of, targets, weight_of


def f32(a):
    return np.asarray(a, np.float32)


def _scores(seed, step, index, expected):
    """The random grow scores of weight `index` at `step`, checked against `expected`."""
    scores = mm.seed_for(seed, step, index).random((2, 4))
    np.testing.assert_allclose(scores, expected, atol=5e-4)
    return scores


# ------------------------------------------------------------------- DSR
def test_dsr_exact_masks_threshold_and_reallocation_over_two_updates():
    w0 = np.array([[0.5, 0.004, 0.0, 0.0],
                   [0.002, 0.0, 0.6, 0.007]], np.float32)
    w1 = np.array([[0.9, 0.0, 0.8, 0.0],
                   [0.0, 0.3, 0.0, 0.4]], np.float32)
    ts = targets(w0, w1)  # masks = (w != 0): 5 + 4 = 9 active of 16
    a = alg.DSR(initial_threshold=0.01, tolerance=0.1, drop_fraction=0.5, seed=0)
    a.setup(ts, 1000)

    # ---- update 1 (step 100), H = 0.01.
    # Below H: l0 has 0.004 (0,1), 0.002 (1,0), 0.007 (1,3) -> drops 3; l1 none -> 0.
    # K = 3; target N_p = 0.5 * 9 = 4.5; K < 0.9 * 4.5 = 4.05 -> H doubles to 0.02.
    # Survivors l0: 2, l1: 4 -> the 3 regrown split 1 : 2 (reallocation: l1
    # grows although it pruned nothing; 9 non-zeros in total are kept).
    _scores(0, 100, 0, [[0.648, 0.233, 0.401, 0.767], [0.563, 0.312, 0.910, 0.294]])
    _scores(0, 100, 1, [[0.081, 0.425, 0.752, 0.800], [0.296, 0.977, 0.535, 0.801]])
    # l0 grows 1 among its inactive entries after the drop
    # {(0,1) .233, (0,2) .401, (0,3) .767, (1,0) .563, (1,1) .312, (1,3) .294} -> (0,3).
    # l1 grows 2 among {(0,1) .425, (0,3) .800, (1,0) .296, (1,2) .535} -> (0,3), (1,2).
    stats = a.update(100, ts)
    np.testing.assert_array_equal(mask_of(ts[0]), [[1, 0, 0, 1],
                                                   [0, 0, 1, 0]])
    np.testing.assert_array_equal(mask_of(ts[1]), [[1, 0, 1, 1],
                                                   [0, 1, 1, 1]])
    # New connections start at 0; pruned entries are 0.
    np.testing.assert_array_equal(weight_of(ts[0]), f32([[0.5, 0, 0, 0], [0, 0, 0.6, 0]]))
    np.testing.assert_array_equal(weight_of(ts[1]), f32([[0.9, 0, 0.8, 0], [0, 0.3, 0, 0.4]]))
    assert a.threshold == pytest.approx(0.02)
    assert (stats["l0/kernel"]["regrown"], stats["l1/kernel"]["regrown"]) == (1, 2)
    assert stats["l0/kernel"]["sparsity"] == pytest.approx(5 / 8)
    assert stats["l1/kernel"]["sparsity"] == pytest.approx(2 / 8)

    # ---- update 2 (step 200), H = 0.02: training moved some weights.
    ts[0].weight.assign(np.array([[0.5, 0, 0, 0.015], [0, 0, 0.6, 0]], np.float32))
    ts[1].weight.assign(np.array([[0.9, 0, 0.8, 0.012], [0, 0.3, 0.005, 0.4]], np.float32))
    # Below H = 0.02 (the doubled threshold; 0.015 and 0.012 survive H = 0.01):
    # l0: 0.015 (0,3) -> 1; l1: 0.012 (0,3), 0.005 (1,2) -> 2. K = 3 < 4.05 -> H = 0.04.
    # Survivors l0: 2, l1: 4 -> regrow 1 : 2.
    _scores(0, 200, 0, [[0.712, 0.020, 0.302, 0.282], [0.369, 0.743, 0.601, 0.469]])
    _scores(0, 200, 1, [[0.856, 0.833, 0.832, 0.657], [0.488, 0.850, 0.926, 0.194]])
    # l0 grows 1 among {(0,1) .020, (0,2) .302, (0,3) .282, (1,0) .369, (1,1) .743, (1,3) .469} -> (1,1).
    # l1 grows 2 among {(0,1) .833, (0,3) .657, (1,0) .488, (1,2) .926} -> (1,2), (0,1);
    # (1,2) was dropped and re-grown in the same update: not new, keeps 0.005.
    stats = a.update(200, ts)
    np.testing.assert_array_equal(mask_of(ts[0]), [[1, 0, 0, 0],
                                                   [0, 1, 1, 0]])
    np.testing.assert_array_equal(mask_of(ts[1]), [[1, 1, 1, 0],
                                                   [0, 1, 1, 1]])
    np.testing.assert_array_equal(weight_of(ts[0]), f32([[0.5, 0, 0, 0], [0, 0, 0.6, 0]]))
    np.testing.assert_array_equal(weight_of(ts[1]), np.array(
        [[0.9, 0, 0.8, 0], [0, 0.3, 0.005, 0.4]], np.float32))
    assert a.threshold == pytest.approx(0.04)
    assert (stats["l0/kernel"]["regrown"], stats["l1/kernel"]["regrown"]) == (1, 1)


def test_dsr_threshold_halves_when_too_many_fall_below_it():
    w = np.array([[0.001, 0.002, 0.003, 0.5], [0.004, 0.6, 0.0, 0.0]], np.float32)
    ts = targets(w)  # 6 active
    a = alg.DSR(initial_threshold=0.01, drop_fraction=0.3, seed=0)
    a.setup(ts, 1000)
    # 4 below H; target 0.3 * 6 = 1.8; 4 > 1.1 * 1.8 -> H halves. One layer:
    # all 4 regrow here, among {(0,0) .648, (0,1) .233, (0,2) .401, (1,0) .563,
    # (1,2) .910, (1,3) .294} -> (1,2), (0,0), (1,0), (0,2); (0,1) and (1,3) stay off.
    _scores(0, 100, 0, [[0.648, 0.233, 0.401, 0.767], [0.563, 0.312, 0.910, 0.294]])
    a.update(100, ts)
    assert a.threshold == pytest.approx(0.005)
    np.testing.assert_array_equal(mask_of(ts[0]), [[1, 0, 1, 1],
                                                   [1, 1, 1, 0]])
    # (0,0), (0,2), (1,0) were dropped and re-drawn at once: they keep their values.
    np.testing.assert_array_equal(weight_of(ts[0]), np.array(
        [[0.001, 0, 0.003, 0.5], [0.004, 0.6, 0, 0]], np.float32))


# ---------------------------------------------------------------- Deep-R
def test_deep_r_zero_temperature_exact_rewiring_over_two_updates():
    w = np.array([[0.5, -0.3, 0.2, 0.0],
                  [0.0, 0.4, -0.1, 0.0]], np.float32)
    ts = targets(w)  # 5 active
    a = alg.DeepR(seed=0)  # temperature 0: no noise
    a.setup(ts, 1000)
    # Every entry has a fixed sign: the active ones their initial sign; the
    # zero entries (0,3), (1,0), (1,3) draw theirs from seed_for(0, 0, 0, 2).
    drawn = mm.seed_for(0, 0, 0, 2).integers(0, 2, (2, 4)) * 2 - 1
    np.testing.assert_array_equal(drawn[[0, 1, 1], [3, 0, 3]], [1, -1, -1])
    np.testing.assert_array_equal(a._signs[0], [[1, -1, 1, 1], [-1, 1, -1, -1]])

    # ---- update 1: (0,1) went - to +, (0,2) + to -: 2 sign flips; (1,2)
    # grew in magnitude but kept its sign. Drop exactly the 2 flipped.
    ts[0].weight.assign(np.array([[0.5, 0.1, -0.05, 0], [0, 0.4, -0.2, 0]], np.float32))
    # Grow 2 among the inactive after the drop
    # {(0,1) .233, (0,2) .401, (0,3) .767, (1,0) .563, (1,3) .294} -> (0,3), (1,0).
    _scores(0, 100, 0, [[0.648, 0.233, 0.401, 0.767], [0.563, 0.312, 0.910, 0.294]])
    stats = a.update(100, ts)
    np.testing.assert_array_equal(mask_of(ts[0]), [[1, 0, 0, 1],
                                                   [1, 1, 1, 0]])
    # No noise at T = 0: kept weights exact, flipped ones 0, new ones 0.
    np.testing.assert_array_equal(weight_of(ts[0]), np.array(
        [[0.5, 0, 0, 0], [0, 0.4, -0.2, 0]], np.float32))
    assert stats["l0/kernel"]["regrown"] == 2
    # The signs are fixed: dropped (0,1), (0,2) and grown (0,3), (1,0) keep theirs.
    np.testing.assert_array_equal(a._signs[0], [[1, -1, 1, 1], [-1, 1, -1, -1]])

    # ---- update 2: the new connections moved, (0,3) against its sign +
    # (to -0.02) and (1,0) against its sign - (to +0.03): both flipped, as
    # did (1,1) (+ to -): 3 flips of 5 active.
    ts[0].weight.assign(np.array([[0.5, 0, 0, -0.02], [0.03, -0.4, -0.2, 0]], np.float32))
    # Grow 3 among {(0,1) .020, (0,2) .302, (0,3) .282, (1,0) .369, (1,1) .743,
    # (1,3) .469} -> (1,1), (1,3), (1,0). (1,1) and (1,0) are re-drawn at
    # once, so (as for every updater) they are not new and keep their values.
    _scores(0, 200, 0, [[0.712, 0.020, 0.302, 0.282], [0.369, 0.743, 0.601, 0.469]])
    stats = a.update(200, ts)
    np.testing.assert_array_equal(mask_of(ts[0]), [[1, 0, 0, 0],
                                                   [1, 1, 1, 1]])
    np.testing.assert_array_equal(weight_of(ts[0]), np.array(
        [[0.5, 0, 0, 0], [0.03, -0.4, -0.2, 0]], np.float32))
    assert stats["l0/kernel"]["regrown"] == 1
    assert stats["l0/kernel"]["drop_fraction"] == pytest.approx(3 / 5)
    # Of the 2 connections grown at update 1, (0,3) was dropped: churn 1/2.
    assert stats["l0/kernel"]["churn"] == pytest.approx(1 / 2)
    # Re-drawn flipped connections take their new sign (documented deviation).
    np.testing.assert_array_equal(a._signs[0], [[1, -1, 1, 1], [1, -1, -1, -1]])


def test_deep_r_no_flip_no_change():
    w = np.array([[0.5, -0.3, 0.2, 0.0], [0.0, 0.4, -0.1, 0.0]], np.float32)
    ts = targets(w)
    a = alg.DeepR(seed=0)
    a.setup(ts, 1000)
    ts[0].weight.assign(w * 2)  # magnitudes change, signs do not
    stats = a.update(100, ts)
    np.testing.assert_array_equal(mask_of(ts[0]), (w != 0).astype(np.float32))
    np.testing.assert_array_equal(weight_of(ts[0]), w * 2)
    assert stats["l0/kernel"]["regrown"] == 0


def test_deep_r_temperature_noise_has_documented_scale():
    """Soft Deep-R: active weights get sqrt(2 * lr * T * interval) * N(0, 1) at an update.

    50 000 entries, 25 000 active, all positive and far from 0 (no sign flip,
    so nothing is rewired and every active entry gets noise). The sample std
    of 25 000 normals is within 0.5% of sigma (1 s.d.); the 2% tolerance
    would fail for a missing factor of 2, lr, T or interval.
    """
    rng = np.random.default_rng(0)
    mask = np.zeros(50_000, np.float32)
    mask[rng.permutation(50_000)[:25_000]] = 1
    w = (mask * 10.0).reshape(200, 250).astype(np.float32)
    ts = targets(w)
    lr, temperature, interval = 0.01, 0.5, 8
    a = alg.DeepR(temperature=temperature, update_interval=interval, seed=3)
    a.setup(ts, 1000)
    stats = a.update(8, ts, optimizer=keras.optimizers.SGD(learning_rate=lr))
    sigma = math.sqrt(2 * lr * temperature * interval)  # 0.2828
    new = weight_of(ts[0])
    np.testing.assert_array_equal(mask_of(ts[0]), w != 0)  # no rewiring
    assert stats["l0/kernel"]["regrown"] == 0
    noise = (new - w)[w != 0]
    assert np.all(new[w == 0] == 0)  # pruned entries get no noise
    assert noise.size == 25_000
    assert np.std(noise) == pytest.approx(sigma, rel=0.02)
    assert abs(np.mean(noise)) < 5 * sigma / math.sqrt(noise.size)
    # Gaussian shape: 68.27% within one sigma (binomial s.d. 0.3%).
    assert np.mean(np.abs(noise) < sigma) == pytest.approx(0.6827, abs=0.015)
    # The noise stream is (seed, step, index, 1): reproducible.
    expected = sigma * mm.seed_for(3, 8, 0, 1).standard_normal(w.shape)
    np.testing.assert_allclose(new - w, (expected * (w != 0)).astype(np.float32), atol=1e-5)


def test_deep_r_temperature_without_learning_rate_adds_no_noise():
    w = np.array([[0.5, -0.3, 0.2, 0.0], [0.0, 0.4, -0.1, 0.0]], np.float32)
    ts = targets(w)
    a = alg.DeepR(temperature=1.0, seed=0)
    a.setup(ts, 1000)
    a.update(100, ts)  # no optimizer: lr unknown (0) -> no noise
    np.testing.assert_array_equal(weight_of(ts[0]), w)


# ------------------------------------------------------------- GraNet-ST
def test_granet_st_exact_prune_on_cubic_schedule_and_gradient_regrowth():
    w0 = np.array([[0.9, 0.0, -0.05, 0.0],
                   [0.0, 0.4, 0.0, -0.2]], np.float32)
    w1 = np.array([[0.0, 0.03, 0.0, 0.7],
                   [-0.6, 0.0, 0.01, 0.0]], np.float32)
    ts = targets(w0, w1)  # sparse start: 4 + 4 of 16 active, s_i = 0.5
    a = alg.GraNetST(sparsity=0.75, regeneration_rate=0.5, update_interval=100, stop_step=300,
                     regrow_stop_step=300, regeneration_rate_min=0.0)
    a.setup(ts, 1000)
    # Cubic schedule s(t) = s_f + (s_i - s_f)(1 - t/300)^3 from s_i = 0.5:
    # s(100) = 0.75 - 0.25 * (2/3)^3 = 0.67593 -> keep round(0.32407 * 16) = 5,
    # so 8 - 5 = 3 pruned by global magnitude: 0.01 (l1), 0.03 (l1), 0.05 (l0).
    assert a.target_sparsity(100) == pytest.approx(0.75 - 0.25 * (2 / 3) ** 3)
    assert a.prune_counts(100, [w0, w1], [w0 != 0, w1 != 0]) == [1, 2]
    # Regeneration r(100) = 0.5 * (1 + cos(pi * 100/300)) / 2 = 0.375:
    # l0 drops round(0.375 * 3) = 1 more, l1 round(0.375 * 2) = 1 more, by magnitude.
    # l0 drops 0.05 (0,2) and 0.2 (1,3); l1 drops 0.01 (1,2), 0.03 (0,1), -0.6 (1,0).
    g0 = np.array([[0.0, 0.1, 0.0, 0.0],
                   [0.8, 0.0, 0.0, 0.5]], np.float32)   # best inactive: (1,0), never active
    g1 = np.array([[0.2, 0.0, 0.0, 0.0],
                   [0.9, 0.0, 0.3, 0.1]], np.float32)   # best inactive: (1,0), just dropped
    stats = a.update(100, ts, [g0, g1])
    np.testing.assert_array_equal(mask_of(ts[0]), [[1, 0, 0, 0],
                                                   [1, 1, 0, 0]])
    np.testing.assert_array_equal(mask_of(ts[1]), [[0, 0, 0, 1],
                                                   [1, 0, 0, 0]])
    # l0's (1,0) is a new connection (0.0); l1's (1,0) was pruned and
    # regenerated in the same update: never disconnected, keeps -0.6.
    np.testing.assert_array_equal(weight_of(ts[0]), np.array([[0.9, 0, 0, 0], [0, 0.4, 0, 0]], np.float32))
    np.testing.assert_array_equal(weight_of(ts[1]), np.array([[0, 0, 0, 0.7], [-0.6, 0, 0, 0]], np.float32))
    assert (stats["l0/kernel"]["regrown"], stats["l1/kernel"]["regrown"]) == (1, 0)
    assert 1 - (mask_of(ts[0]).sum() + mask_of(ts[1]).sum()) / 16 == pytest.approx(11 / 16)


# ----------------------------------------------------------- RigL defaults
def test_rigl_default_drop_fraction_schedule():
    a = alg.RigL()
    cfg = a.get_config()
    assert (cfg["drop_fraction"], cfg["drop_fraction_decay"]) == (0.3, "cosine")
    assert (cfg["update_interval"], cfg["start_step"], cfg["stop_step"]) == (100, 0, 0.75)
    a.setup(targets(np.array([[0.5, 0.0, -0.2, 0.0]], np.float32)), 2000)
    assert a.bounds == (0, 1500)  # stop at 75% of training
    # CosineDecay: 0.3 * 0.5 * (1 + cos(pi * t / 1500)), alpha 0.
    for t, value in [(0, 0.3), (100, 0.3 * 0.5 * (1 + math.cos(math.pi / 15))),
                     (500, 0.3 * 0.5 * (1 + math.cos(math.pi / 3))),  # 0.225
                     (750, 0.15), (1000, 0.075), (1500, 0.0), (1800, 0.0)]:
        assert a.drop_fraction_at(t) == pytest.approx(value, abs=1e-12), t
    # The update steps of those defaults.
    assert [s for s in range(0, 2001, 50) if a.schedule.is_update_step(s, 2000)] == list(range(100, 1501, 100))
    # The callback shares the defaults.
    assert ks.callbacks.RigL().algorithm.get_config() == cfg


def test_sparsify_defaults_to_erk():
    assert inspect.signature(ks.sparsify).parameters["distribution"].default == "erk"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
                              keras.layers.Dense(16), keras.layers.Dense(4)])
    default = ks.sparsify(model, 0.8, seed=0)
    erk = ks.sparsify(model, 0.8, "erk", seed=0)
    uniform = ks.sparsify(model, 0.8, "uniform", seed=0, keep_dense=None)
    sparsities = lambda m: {w.name: w.sparsity_of("kernel") for w in ks.sparse_wrappers(m)}  # noqa: E731
    assert sparsities(default) == sparsities(erk)
    assert sparsities(default) != sparsities(uniform)
    assert len(set(sparsities(default).values())) > 1  # ERK: per-layer sparsities differ
