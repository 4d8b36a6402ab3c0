"""Large mask updates run their weights on a thread pool: same result as one thread."""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg
from keras_sparse import _parallel

START = {"gmp": 0.0, "granet": 0.0, "granet_st": 0.5}
CONFIG = {"gmp": {"sparsity": 0.9}, "granet": {"sparsity": 0.9}, "granet_st": {"sparsity": 0.9}}
SHAPES = [(3, 3, 4, 8), (64, 32), (32, 10), (7, 5)]


def _run(name, parallel_above, monkeypatch):
    monkeypatch.setattr(_parallel, "PARALLEL_ABOVE", parallel_above)
    rng = np.random.default_rng(0)
    s0 = START.get(name, 0.9)
    targets, grads = [], []
    for i, shape in enumerate(SHAPES):
        m = ks.masks.random_mask(shape, s0, rng)
        w = rng.standard_normal(shape).astype("float32") * m
        targets.append(alg.Target(f"w{i}/kernel", keras.Variable(w), keras.Variable(m), s0))
        grads.append(rng.standard_normal(shape).astype("float32"))
    a = alg.get({"class_name": name, "config": {"seed": 3, **CONFIG.get(name, {})}})
    a.setup(targets, 1000)
    history = []
    for step in (100, 200, 300):
        for t in targets:  # training moves the weights between updates
            t.weight.assign(keras.ops.convert_to_numpy(t.weight) * 0.9 + 0.01 * t.mask.numpy())
        stats = a.update(step, targets, grads)
        history.append((stats, [t.mask.numpy().copy() for t in targets],
                        [t.weight.numpy().copy() for t in targets]))
    return history


@pytest.mark.full
@pytest.mark.parametrize("name", alg.registered_names())
def test_parallel_update_matches_serial(name, monkeypatch):
    serial = _run(name, 1 << 62, monkeypatch)
    parallel = _run(name, 0, monkeypatch)
    changed = False
    for (s_stats, s_masks, s_weights), (p_stats, p_masks, p_weights) in zip(serial, parallel):
        assert s_stats == p_stats
        for a, b in zip(s_masks, p_masks):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(s_weights, p_weights):
            np.testing.assert_array_equal(a, b)
        changed |= any(st["regrown"] > 0 or st["drop_fraction"] > 0 for st in s_stats.values())
    assert changed, f"{name}: no update changed a mask, so the comparison proves nothing"


@pytest.mark.parametrize("structure", ["unstructured", "block"])
def test_global_drop_counts_parallel_matches_serial(structure, monkeypatch):
    rng = np.random.default_rng(1)
    shapes = [(8, 16), (16, 8), (4, 4, 8, 4)]
    masks = [(rng.random(s) < 0.5).astype("float32") for s in shapes]
    scores = [np.round(rng.random(s), 1) for s in shapes]  # many ties
    scores[1][0, 0] = np.nan
    counts = {}
    for above in (1 << 62, 0):
        monkeypatch.setattr(_parallel, "PARALLEL_ABOVE", above)
        counts[above] = ks.masks.global_drop_counts(masks, scores, 120, structure)
    assert counts[0] == counts[1 << 62]
    assert sum(counts[0]) == (120 if structure == "unstructured" else 120 // 4 * 4)


def test_map_weights_keeps_order(monkeypatch):
    monkeypatch.setattr(_parallel, "PARALLEL_ABOVE", 0)
    assert _parallel.map_weights(lambda i: i * i, list(range(20)), 1) == [i * i for i in range(20)]
