"""Hand-computed mask updates for every algorithm, registry, config, bad input."""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg
from keras_sparse import masks as mm


def targets(*weights, masks=None):
    out = []
    for i, w in enumerate(weights):
        w = np.asarray(w, np.float32)
        m = (w != 0).astype(np.float32) if masks is None else np.asarray(masks[i], np.float32)
        out.append(alg.Target(f"l{i}/kernel", keras.Variable(w), keras.Variable(m), 0.0))
    return out


def mask_of(t):
    return keras.ops.convert_to_numpy(t.mask)


def weight_of(t):
    return keras.ops.convert_to_numpy(t.weight)


W = [[0.5, -0.1, 0.0, 0.3], [0.0, 0.05, -0.9, 0.0]]


def test_set_hand_computed():
    ts = targets(W)
    a = alg.SET(drop_fraction=0.4, drop_fraction_decay="constant", seed=3)
    a.setup(ts, 1000)
    a.update(100, ts)
    kept = np.array([[1, 0, 0, 1], [0, 0, 1, 0]], np.float32)
    # Growth: the 2 best random scores among entries not kept.
    scores = mm.seed_for(3, 100, 0).random((2, 4))
    scores = np.where(kept > 0, -np.inf, scores).reshape(-1)
    expected = kept.reshape(-1).copy()
    expected[np.argsort(-scores)[:2]] = 1
    np.testing.assert_array_equal(mask_of(ts[0]), expected.reshape(2, 4))
    np.testing.assert_array_equal(weight_of(ts[0]) * (1 - kept), 0)


def test_rigl_hand_computed():
    ts = targets(W)
    a = alg.RigL(drop_fraction=0.4, drop_fraction_decay="constant")
    a.setup(ts, 1000)
    g = np.array([[0, 0, 0.7, 0], [0.2, 0.1, 0, 0.9]], np.float32)
    stats = a.update(100, ts, [g])
    np.testing.assert_array_equal(mask_of(ts[0]), [[1, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_allclose(weight_of(ts[0]), [[0.5, 0, 0, 0.3], [0, 0, -0.9, 0]])
    assert stats["l0/kernel"]["regrown"] == 2
    assert stats["l0/kernel"]["itop_rate"] == pytest.approx(7 / 8)


def test_mest_hand_computed_removal_score():
    ts = targets(W)
    a = alg.MEST(gradient_weight=1.0, drop_fraction=0.4, drop_fraction_decay="constant")
    a.setup(ts, 1000)
    g = np.array([[0, 0, 0, 0], [0, 0.5, 0, 0]], np.float32)
    a.update(100, ts, [g])
    m = mask_of(ts[0])
    # Scores |w| + |g|: 0.5, 0.1, 0.3, 0.55, 0.9 -> drop -0.1 and 0.3 (not 0.05).
    assert m[0, 0] == 1 and m[1, 1] == 1 and m[1, 2] == 1
    assert weight_of(ts[0])[0, 3] == 0 and weight_of(ts[0])[0, 1] == 0
    assert m.sum() == 5


def test_gmp_global_hand_computed():
    ts = targets([[1.0], [2], [3], [4]], [[0.5], [5], [6], [0.1]])
    a = alg.GMP(sparsity=0.5, update_interval=100, stop_step=100)
    a.setup(ts, 1000)
    a.update(100, ts)
    np.testing.assert_array_equal(mask_of(ts[0]).ravel(), [0, 0, 1, 1])
    np.testing.assert_array_equal(mask_of(ts[1]).ravel(), [0, 1, 1, 0])


def test_gmp_per_layer_uniform():
    ts = targets([[1.0], [2], [3], [4]], [[0.5], [5], [6], [0.1]])
    a = alg.GMP(sparsity=0.5, distribution="uniform", update_interval=100, stop_step=100)
    a.setup(ts, 1000)
    a.update(100, ts)
    np.testing.assert_array_equal(mask_of(ts[0]).ravel(), [0, 0, 1, 1])
    np.testing.assert_array_equal(mask_of(ts[1]).ravel(), [0, 1, 1, 0])


def test_granet_hand_computed():
    ts = targets([[1.0], [2], [3], [4]], [[0.5], [5], [6], [0.1]])
    a = alg.GraNet(sparsity=0.5, regeneration_rate=0.99, update_interval=100, stop_step=200)
    a.setup(ts, 1000)
    # s(100) = 0.5 - 0.5 * 0.5**3 = 0.4375 -> keep round(4.5) = 4; r = 0.495 -> 1 per layer.
    g1 = np.array([[0.3], [0.1], [0.2], [0]], np.float32)
    g2 = np.array([[0], [0.4], [0], [0.8]], np.float32)
    a.update(100, ts, [g1, g2])
    np.testing.assert_array_equal(mask_of(ts[0]).ravel(), [1, 0, 0, 1])
    np.testing.assert_array_equal(mask_of(ts[1]).ravel(), [0, 0, 1, 1])
    np.testing.assert_allclose(weight_of(ts[0]).ravel(), [0, 0, 0, 4])
    np.testing.assert_allclose(weight_of(ts[1]).ravel(), [0, 0, 6, 0])


def test_neurrev_hand_computed_search_and_awake():
    w0 = [0.9, -0.2, -0.2, -0.61, -0.3, -0.3, 0, 0, 0, 0]
    ts = targets(np.array([w0], np.float32))
    a = alg.NeurRev(p=0.2, drop_fraction=0.34, drop_fraction_decay="constant")
    a.setup(ts, 1000)  # theta* = w0, s = 0.4, relaxed to 0.2
    w = np.array([[0.9, -0.5, -0.2, -0.6, -0.4, -0.3, 0, 0, 0, 0]], np.float32)
    ts[0].weight.assign(w)
    g = np.array([[0, 0, 0.05, 0, 0, 0.01, 0.5, 0.3, 0.2, 0.4]], np.float32)
    stats = a.update(100, ts, [g])
    # Drop |w| smallest: idx2, idx5. Grow 2 + 2 by |g|: 6, 9, 7, 8.
    # Search & Awake: negatives 1 (delta 0.3), 3 (0.01), 4 (0.1) -> prune 3, 4.
    np.testing.assert_array_equal(mask_of(ts[0]).ravel(), [1, 1, 0, 0, 0, 0, 1, 1, 1, 1])
    assert stats["l0/kernel"]["awakened"] == 2
    assert stats["l0/kernel"]["sparsity"] == pytest.approx(0.4)
    np.testing.assert_allclose(a._reference[0], weight_of(ts[0]))


def test_dsr_hand_computed_reallocation():
    w1 = np.array([[0.0005], [0.5], [0.0008], [0.7], [0], [0], [0], [0]], np.float32)
    w2 = np.array([[0.9], [0.8], [0.6], [0.0001], [0], [0], [0], [0]], np.float32)
    ts = targets(w1, w2)
    a = alg.DSR(initial_threshold=1e-3, drop_fraction=0.3)
    a.setup(ts, 1000)
    stats = a.update(100, ts)
    m1, m2 = mask_of(ts[0]).ravel(), mask_of(ts[1]).ravel()
    assert m1[[1, 3]].tolist() == [1, 1] and m2[[0, 1, 2]].tolist() == [1, 1, 1]
    # K = 3 pruned, regrown 1 : 2 in proportion to survivors 2 : 3.
    assert (m1.sum(), m2.sum()) == (3, 5)
    assert a.threshold == pytest.approx(5e-4)  # K=3 > 1.1 * 0.3 * 8
    assert stats["l0/kernel"]["regrown"] + stats["l1/kernel"]["regrown"] == 3


def test_deep_r_rewires_sign_flips():
    ts = targets(np.array([[0.5, -0.3, 0.2, 0, 0, 0]], np.float32))
    a = alg.DeepR(seed=1)
    a.setup(ts, 1000)
    ts[0].weight.assign(np.array([[0.5, 0.1, -0.1, 0, 0, 0]], np.float32))
    stats = a.update(100, ts)
    m = mask_of(ts[0]).ravel()
    assert m[0] == 1 and m.sum() == 3 and stats["l0/kernel"]["regrown"] == 2
    w = weight_of(ts[0]).ravel()
    assert w[0] == pytest.approx(0.5) and np.count_nonzero(w) == 1


@pytest.mark.parametrize("name", alg.registered_names())
def test_registry_and_config_round_trip(name):
    a = alg.get(name)
    assert a.registered_name == name
    b = alg.get({"class_name": name, "config": a.get_config()})
    assert b.get_config() == a.get_config()
    same = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(a))
    assert same.get_config() == a.get_config()
    assert alg.get(a) is a


def test_get_rejects_unknown():
    with pytest.raises(ValueError, match="Accepted names: .*rigl"):
        alg.get("rig_l")
    with pytest.raises(TypeError, match="Received: 3"):
        alg.get(3)


@pytest.mark.parametrize("kwargs, match", [
    ({"update_interval": 0}, "update_interval"),
    ({"drop_fraction": 1.0}, r"drop_fraction.*\(0, 1\)"),
    ({"drop_fraction": 0.0}, r"drop_fraction.*\(0, 1\)"),
    ({"structure": "4:8"}, "structure"),
    ({"drop_fraction_decay": "linear"}, "drop_fraction_decay"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        alg.RigL(**kwargs)


def test_callback_config_round_trip():
    cb = ks.callbacks.RigL(seed=2, update_interval=50, per_layer=True)
    cfg = cb.get_config()
    again = ks.callbacks.RigL.from_config(cfg)
    assert again.algorithm.get_config() == cb.algorithm.get_config()
    base = ks.callbacks.DynamicSparseTraining("neurrev")
    assert ks.callbacks.DynamicSparseTraining.from_config(base.get_config()).algorithm.get_config() == base.algorithm.get_config()


def test_neurrev_default_p_skips_dense_weights():
    ts = targets(np.ones((4, 2), np.float32), np.array([[0.5, 0, 0, -0.3]], np.float32))
    a = alg.NeurRev()
    a.setup(ts, 1000)  # a dense weight (s = 0) must not raise with p=None
    assert a._relax[0] == 0
    with pytest.raises(ValueError, match="s - p must be >= 0"):
        alg.NeurRev(p=0.2).setup(ts, 1000)
