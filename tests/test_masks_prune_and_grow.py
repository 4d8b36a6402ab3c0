"""Hand-computed prune-and-grow, Search & Awake and structure math."""

import numpy as np
import pytest

from keras_sparse import masks as mm


def test_prune_and_grow_unstructured_hand_computed():
    mask = np.array([[1, 1, 0, 1], [0, 1, 1, 0]], np.float32)
    drop = np.array([[0.5, 0.1, 9, 0.3], [9, 0.05, 0.9, 9]])
    grow = np.array([[0, 0, 0.7, 0], [0.2, 0.1, 0, 0.9]])
    new, grown = mm.prune_and_grow(mask, drop, grow, 2)
    np.testing.assert_array_equal(new, [[1, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(grown, [[0, 0, 1, 0], [0, 0, 0, 1]])


def test_grow_may_pick_just_dropped_entry():
    mask = np.array([1, 1, 0, 0], np.float32)
    new, grown = mm.prune_and_grow(mask, np.array([0.1, 0.9, 0, 0]), np.array([5.0, 0, 1, 2]), 1)
    np.testing.assert_array_equal(new, [1, 1, 0, 0])
    np.testing.assert_array_equal(grown, [1, 0, 0, 0])


def test_prune_and_grow_block_hand_computed():
    # (8, 2) kernel: 1x4 blocks along axis 0 -> units (2, 2).
    mask = np.zeros((8, 2), np.float32)
    mask[0:4, 0] = 1
    mask[4:8, 1] = 1
    drop = np.ones((8, 2))
    drop[0:4, 0] = 0.1  # weakest block
    grow = np.zeros((8, 2))
    grow[0:4, 1] = 1.0  # best inactive block
    new, grown = mm.prune_and_grow(mask, drop, grow, 4)
    expected = np.zeros((8, 2))
    expected[0:4, 1] = 1
    expected[4:8, 1] = 1
    np.testing.assert_array_equal(new, expected)
    assert grown.sum() == 4


def test_prune_and_grow_nm_respects_two_of_four():
    # One group of 4 along axis 0 per column; column 0 already has 2 active.
    mask = np.array([[1, 0], [1, 0], [0, 0], [0, 1]], np.float32)
    drop = np.array([[5, 0], [6, 0], [0, 0], [0.1, 0]], float)
    grow = np.array([[0, 1], [0, 2], [9, 3], [0, 0]], float)  # best is column 0 but it is full
    new, grown = mm.prune_and_grow(mask, drop, grow, 1, None, "n:m")
    # Drop (3,1); column 0 is full, so the best allowed is (2,1) score 3.
    np.testing.assert_array_equal(new, [[1, 0], [1, 0], [0, 1], [0, 0]])
    assert mm._grouped(new).sum(axis=-2).max() <= 2


def test_search_and_awake_crafted():
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
    w = np.array([0.9, -0.5, 0.0, -0.6, -0.4, 0.0])
    delta = np.array([0.0, 0.3, 0.0, 0.01, 0.1, 0.0])
    new, pruned, neg = mm.search_and_awake(mask, w, delta, 2)
    # Negative active weights by ascending delta: idx3 (0.01), idx4 (0.1), idx1 (0.3).
    np.testing.assert_array_equal(pruned, [0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(new, [1, 1, 1, 0, 0, 0])
    assert neg == 2


def test_search_and_awake_falls_back_to_magnitude():
    mask = np.array([1, 1, 1, 1], np.float32)
    w = np.array([0.9, -0.5, 0.2, 0.3])
    new, pruned, neg = mm.search_and_awake(mask, w, np.zeros(4), 2)
    np.testing.assert_array_equal(new, [1, 0, 0, 1])
    assert neg == 1


@pytest.mark.full
def test_global_drop_counts_hand_computed():
    m1, m2 = np.ones(4), np.ones(4)
    s1, s2 = np.array([1.0, 2, 3, 4]), np.array([0.5, 5, 6, 0.1])
    assert mm.global_drop_counts([m1, m2], [s1, s2], 4) == [2, 2]
    assert mm.global_drop_counts([m1, m2], [s1, s2], 3) == [1, 2]


@pytest.mark.full
@pytest.mark.parametrize("structure", mm.STRUCTURES)
def test_structured_random_mask_counts(structure):
    mask = mm.structured_random_mask((3, 3, 8, 16), 0.75, mm.seed_for(0, 1), structure)
    assert mask.sum() == mm.num_active(mask.size, 0.75)
    if structure == "block":
        u = mm.to_blocks(mask)
        assert np.all((u == 0) | (u == 1))
    if structure == "n:m":
        assert mm._grouped(mask).sum(axis=-2).max() <= 2


@pytest.mark.parametrize("structure", mm.STRUCTURES)
def test_prune_and_grow_conserves_count(structure):
    rng = np.random.default_rng(0)
    mask = mm.structured_random_mask((16, 12), 0.8, rng, structure)
    for _ in range(5):
        new, grown = mm.prune_and_grow(mask, rng.random(mask.shape), rng.random(mask.shape), 12, None, structure)
        assert new.sum() == mask.sum()
        assert set(np.unique(new)) <= {0.0, 1.0}
        mask = new


def test_structure_errors_name_values():
    with pytest.raises(ValueError, match="Received shape \\(3, 5\\)"):
        mm.validate_structure("block", (3, 5))
    with pytest.raises(ValueError, match="sparsity >= 0.5"):
        mm.validate_structure("n:m", (8, 4), 0.3)
    with pytest.raises(ValueError, match="'unstructured', 'block', 'n:m'"):
        mm.validate_structure("2:4")
    with pytest.raises(TypeError):
        mm.validate_structure(None)


@pytest.mark.parametrize("structure", ["block", "n:m"])
def test_sparsify_structure_and_wrapper_config(structure):
    import keras

    import keras_sparse as ks

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(12), keras.layers.Dense(4)])
    sparse = ks.sparsify(model, 0.75, distribution="uniform", keep_dense=None, seed=0, structure=structure)
    for w in ks.sparse_wrappers(sparse):
        m = w.masked_weights[0].mask.numpy()
        assert m.sum() == mm.num_active(m.size, 0.75)
        assert w.get_config()["structure"] == structure
        clone = type(w).from_config(w.get_config())
        assert clone.structure == structure
