"""MEST's Elastic Mutation: stage-wise elastic lower/upper bounds (boone891214/MEST scripts)."""

import warnings

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg
from keras_sparse import masks as mm
from keras_sparse import schedules

TOTAL = 1600  # 160 "epochs" of 10 steps: the reference's stages start at steps 900 and 1200.


def target(w, m, key="l0/kernel"):
    return alg.Target(key, keras.Variable(np.asarray(w, np.float32)),
                      keras.Variable(np.asarray(m, np.float32)), 0.5)


def np_(v):
    return keras.ops.convert_to_numpy(v)


# 4x5 weight, 10 active entries (sparsity 0.5), distinct magnitudes.
W0 = np.array([[0.9, 0.0, -0.8, 0.0, 0.7],
               [0.0, 0.6, 0.0, -0.5, 0.0],
               [0.4, 0.0, 0.3, 0.0, -0.2],
               [0.0, 0.15, 0.0, 0.1, 0.0]], np.float32)
M0 = (W0 != 0).astype(np.float32)
# The gradient lifts 0.1's removal score to 0.1 + 0.5 = 0.6 (lambda = 1).
G = np.zeros_like(W0)
G[3, 3] = 0.5


def expected_after(mask_kept, seed, step, n_grow, old_mask, w):
    """Kept mask plus the n_grow best random scores (the base's seed_for(seed, step, 0))."""
    scores = mm.seed_for(seed, step, 0).random(w.shape)
    scores = np.where(mask_kept > 0, -np.inf, scores).reshape(-1)
    mask = mask_kept.reshape(-1).copy()
    mask[np.argsort(-scores, kind="stable")[:n_grow]] = 1
    mask = mask.reshape(w.shape)
    # Kept and re-drawn entries keep their values; dropped and new ones are 0.
    return mask, w * mask * old_mask


def test_defaults_reproduce_reference_90_script():
    a = alg.MEST()
    assert a.elastic
    assert a.lower_bound == (0.92, 0.91, 0.9) and a.upper_bound == 0.9
    assert a.stage_boundaries == (0.5625, 0.75)  # epochs 90 and 120 of 160
    assert a.mutation_ratios == (0.2, 0.1, 0.0)
    assert a.gradient_weight == 1.0 and a.needs_gradients
    # Updater's own defaults are kept (the reference updates every 5 epochs).
    assert a.update_interval == 100 and a.stop_step == 0.75
    # The 95% script's bounds give the same relative mutation.
    b = alg.MEST(lower_bound=(0.96, 0.955, 0.95), upper_bound=(0.95, 0.95, 0.95))
    assert b.upper_bound == 0.95 and b.mutation_ratios == (0.2, 0.1, 0.0)


@pytest.mark.parametrize("step, expected", [
    (1, 0.2), (100, 0.2), (899, 0.2),      # stage 1: prune to 0.92, grow to 0.9
    (900, 0.1), (1000, 0.1), (1199, 0.1),  # stage 2 (epoch 90): 0.91 -> 0.9
    (1200, 0.0), (1600, 0.0),              # stage 3 (epoch 120): no mutation
])
def test_schedule_values(step, expected):
    a = alg.MEST()
    a.setup([target(W0, M0)], TOTAL)
    assert a.drop_fraction_at(step) == expected


def test_custom_bounds_and_boundaries():
    a = alg.MEST(lower_bound=[0.7, 0.6, 0.55, 0.5], upper_bound=0.5,
                 stage_boundaries=[0.25, 0.5, 0.6], stop_step=1.0)
    a.setup([target(W0, M0)], 1000)
    assert a.mutation_ratios == (0.4, 0.2, 0.1, 0.0)
    assert [a.drop_fraction_at(s) for s in (249, 250, 499, 500, 599, 600, 1000)] == \
        [0.4, 0.2, 0.2, 0.1, 0.1, 0.0, 0.0]
    single = alg.MEST(lower_bound=0.95, upper_bound=0.9)
    assert single.stage_boundaries == () and single.mutation_ratios == (0.5,)


def test_piecewise_constant_schedule():
    f = schedules.PiecewiseConstant([0.2, 0.1, 0.0], [0.5625, 0.75])
    assert [f(s, 0, 1600) for s in (0, 899, 900, 1199, 1200)] == [0.2, 0.2, 0.1, 0.1, 0.0]
    assert f.stage(1000, 0, 1600) == 1
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(f))
    assert isinstance(again, schedules.PiecewiseConstant)
    assert again.get_config() == {"values": [0.2, 0.1, 0.0], "boundaries": [0.5625, 0.75]}


def test_stage_1_hand_computed_mask():
    t = target(W0, M0)
    a = alg.MEST(seed=3)
    a.setup([t], TOTAL)
    stats = a.update(800, [t], [G])
    # Drop 0.2 * 10 = 2 lowest of |W| + |g|: 0.15 and -0.2 (0.1 is lifted to 0.6).
    kept = M0.copy()
    kept[3, 1] = 0
    kept[2, 4] = 0
    mask, weight = expected_after(kept, 3, 800, 2, M0, W0)
    np.testing.assert_array_equal(np_(t.mask), mask)
    np.testing.assert_array_equal(np_(t.weight), weight)
    assert np_(t.mask).sum() == 10
    assert np_(t.mask)[3, 3] == 1  # kept thanks to the gradient term
    assert stats["l0/kernel"]["drop_fraction"] == pytest.approx(0.2)


def test_stage_1_without_gradient_term_drops_smallest_magnitudes():
    t = target(W0, M0)
    a = alg.MEST(gradient_weight=0.0, seed=3)
    assert not a.needs_gradients
    a.setup([t], TOTAL)
    a.update(800, [t])
    kept = M0.copy()
    kept[3, 3] = 0  # 0.1
    kept[3, 1] = 0  # 0.15
    mask, weight = expected_after(kept, 3, 800, 2, M0, W0)
    np.testing.assert_array_equal(np_(t.mask), mask)
    np.testing.assert_array_equal(np_(t.weight), weight)


def test_stage_2_hand_computed_mask():
    t = target(W0, M0)
    a = alg.MEST(seed=5)
    a.setup([t], TOTAL)
    stats = a.update(900, [t], [G])
    kept = M0.copy()
    kept[3, 1] = 0  # drop 0.1 * 10 = 1: the lowest score, 0.15
    mask, weight = expected_after(kept, 5, 900, 1, M0, W0)
    np.testing.assert_array_equal(np_(t.mask), mask)
    np.testing.assert_array_equal(np_(t.weight), weight)
    assert stats["l0/kernel"]["drop_fraction"] == pytest.approx(0.1)


def test_last_stage_changes_nothing():
    t = target(W0, M0)
    a = alg.MEST(seed=5)
    a.setup([t], TOTAL)
    stats = a.update(1200, [t], [G])
    np.testing.assert_array_equal(np_(t.mask), M0)
    np.testing.assert_array_equal(np_(t.weight), W0)
    assert stats["l0/kernel"]["drop_fraction"] == 0.0 and stats["l0/kernel"]["regrown"] == 0.0


def test_each_layer_mutates_its_own_active_fraction():
    # Layers at different sparsities (as with ERK): each drops 20% of its own
    # active entries in stage 1 and keeps its own count.
    rng = np.random.default_rng(0)
    w_dense = rng.normal(size=(4, 5)).astype(np.float32)  # 20 active
    m_sparse = M0.copy()
    m_sparse[0, 0] = m_sparse[0, 2] = m_sparse[0, 4] = m_sparse[1, 1] = m_sparse[1, 3] = 0  # 5 active
    w_sparse = W0 * m_sparse
    ts = [target(w_dense, np.ones((4, 5))), target(W0, M0, "l1/kernel"),
          target(w_sparse, m_sparse, "l2/kernel")]
    a = alg.MEST(gradient_weight=0.0, seed=1)
    a.setup(ts, TOTAL)
    stats = a.update(800, ts)
    assert [np_(t.mask).sum() for t in ts] == [20, 10, 5]
    drops = [stats[k]["drop_fraction"] for k in ("l0/kernel", "l1/kernel", "l2/kernel")]
    assert drops == [pytest.approx(4 / 20), pytest.approx(2 / 10), pytest.approx(1 / 5)]


@pytest.mark.parametrize("kwargs, error, fragments", [
    (dict(lower_bound=(0.92, 0.93, 0.9)), ValueError, ["must not increase", "0.93"]),
    (dict(lower_bound=(0.9, 0.89, 0.88)), ValueError, ["EM&S", "0.89", "0.88", "upper_bound"]),
    (dict(lower_bound=(1.0, 0.91, 0.9)), ValueError, ["lower_bound[0]", "1.0"]),
    (dict(lower_bound=(0.92, 0.91, -0.1)), ValueError, ["lower_bound[2]", "-0.1"]),
    (dict(upper_bound=1.0), ValueError, ["upper_bound", "1.0"]),
    (dict(upper_bound=(0.85, 0.875, 0.9)), ValueError, ["equal values", "0.875"]),
    (dict(stage_boundaries=(0.75, 0.5)), ValueError, ["strictly increasing", "[0.75, 0.5]"]),
    (dict(stage_boundaries=(0.5, 0.5)), ValueError, ["strictly increasing", "[0.5, 0.5]"]),
    (dict(stage_boundaries=(0.0, 0.5)), ValueError, ["stage_boundaries[0]", "(0, 1)", "0.0"]),
    (dict(stage_boundaries=(0.5, 1.0)), ValueError, ["stage_boundaries[1]", "(0, 1)", "1.0"]),
    (dict(stage_boundaries=(0.5,)), ValueError, ["need 2", "[0.5]"]),
    (dict(lower_bound="0.92-0.91-0.9"), TypeError, ["lower_bound", "0.92-0.91-0.9"]),
    (dict(drop_fraction=0.3, lower_bound=(0.92, 0.91, 0.9)), ValueError, ["not both", "lower_bound"]),
    (dict(drop_fraction_decay="constant", upper_bound=0.9), ValueError, ["not both", "upper_bound"]),
    (dict(gradient_weight=-1.0), ValueError, ["gradient_weight", "-1.0"]),
])
def test_bad_input_raises_at_construction(kwargs, error, fragments):
    with pytest.raises(error) as info:
        alg.MEST(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    with pytest.raises(error):  # the named callback checks the same
        ks.callbacks.MEST(**kwargs)


def test_unknown_training_length_raises_in_setup_before_any_change():
    t = target(W0, M0)
    a = alg.MEST(stop_step=1000)  # an int stop alone does not resolve the stages
    with pytest.raises(ValueError, match="fractions of training"):
        a.setup([t], None)
    np.testing.assert_array_equal(np_(t.mask), M0)
    np.testing.assert_array_equal(np_(t.weight), W0)


def test_warns_when_a_mutating_stage_starts_after_stop():
    a = alg.MEST(stop_step=0.5)
    with pytest.warns(UserWarning, match=r"stage\(s\) \[1\]"):
        a.setup([target(W0, M0)], TOTAL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alg.MEST().setup([target(W0, M0)], TOTAL)  # defaults: the last mutating stage ends at stop
    assert not [w for w in caught if "MEST" in str(w.message)]


@pytest.mark.parametrize("kwargs", [
    {},
    dict(lower_bound=[0.7, 0.6, 0.55, 0.5], upper_bound=0.5, stage_boundaries=[0.25, 0.5, 0.6],
         gradient_weight=0.5, update_interval=7, seed=2),
    dict(drop_fraction=0.25, drop_fraction_decay="cosine"),
])
def test_config_round_trip(kwargs):
    a = alg.MEST(**kwargs)
    config = a.get_config()
    b = alg.MEST.from_config(config)
    assert b.get_config() == config
    assert b.elastic == a.elastic and b.mutation_ratios == a.mutation_ratios
    c = alg.get({"class_name": "mest", "config": config})
    assert c.get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(a))
    assert type(again) is alg.MEST and again.get_config() == config
    callback = ks.callbacks.MEST(total_steps=50, **kwargs)
    restored = ks.callbacks.MEST.from_config(callback.get_config())
    assert restored.algorithm.get_config() == config and restored.total_steps == 50


def test_old_config_loads_as_legacy_stagewise_variant():
    old = {"update_interval": 100, "start_step": 0, "stop_step": 0.75, "drop_fraction": 0.3,
           "drop_fraction_decay": "stagewise", "structure": "unstructured", "seed": 0,
           "on_nonfinite": "skip", "gradient_weight": 1.0}
    a = alg.MEST.from_config(old)
    assert not a.elastic and a.mutation_ratios is None
    a.setup([target(W0, M0)], 1000)  # update span [0, 750]
    assert [a.drop_fraction_at(s) for s in (100, 375, 563)] == [0.3, 0.15, 0.075]
    assert {k: v for k, v in a.get_config().items() if k in old} == old
    assert alg.MEST(drop_fraction=0.4).drop_fraction_decay == "stagewise"


class CountsAndMasks(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.counts, self.masks = {}, {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        masks = [m.numpy().copy() for w in ks.sparse_wrappers(self.model) for _, _, m in w.masked_weights]
        weights = [v.numpy() for w in ks.sparse_wrappers(self.model) for _, v, _ in w.masked_weights]
        assert all(np.all(v[m == 0] == 0) for v, m in zip(weights, masks))
        self.counts[step] = [int(m.sum()) for m in masks]
        self.masks[step] = masks


def test_callback_trains_a_sparsified_model_keeping_counts():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    sparse = ks.sparsify(model, 0.5, distribution="uniform", keep_dense=None, seed=0)
    sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 12)).astype("float32"), rng.integers(0, 3, 128)
    before = [m.numpy().copy() for w in ks.sparse_wrappers(sparse) for _, _, m in w.masked_weights]
    check = CountsAndMasks()
    # 16 steps: stage 1 before step 9, stage 2 from 9, stage 3 (no mutation) from 12 = stop.
    mest = ks.callbacks.MEST(update_interval=2, seed=0)
    sparse.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[mest, check])
    assert sorted(check.counts) == list(range(1, 17))
    initial = [int(m.sum()) for m in before]
    assert all(c == initial for c in check.counts.values())
    changed = lambda a, b: any(not np.array_equal(p, q) for p, q in zip(a, b))  # noqa: E731
    assert changed(before, check.masks[1]) is False
    assert changed(check.masks[1], check.masks[2])       # stage-1 update at step 2
    assert changed(check.masks[9], check.masks[10])      # stage-2 update at step 10
    assert not changed(check.masks[11], check.masks[12])  # step 12: last stage, no mutation
    assert not changed(check.masks[12], check.masks[16])  # past stop_step
    assert mest.algorithm.drop_fraction_at(10) == 0.1 and mest.algorithm.drop_fraction_at(12) == 0.0
