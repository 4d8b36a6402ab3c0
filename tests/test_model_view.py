"""`keras_sparse.model_view`: the one traversal of masked weights and the one zero count."""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse.model_view import MaskedWeightRecord, SparsityCounts


def _nested_model():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8,))
    inner = keras.Model(inner_in, keras.layers.Dense(6, name="inner_fc")(inner_in), name="block")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="first")(inputs)
    x = inner(x)
    outputs = keras.layers.Dense(3, name="last")(x)
    return keras.Model(inputs, outputs)


def test_masked_weights_recurses_in_order_and_skips_kept_dense_layers():
    sparse = ks.sparsify(_nested_model(), 0.5, distribution="uniform", keep_dense=["last"], seed=0)
    records = list(ks.masked_weights(sparse))
    assert [r.key for r in records] == ["first/kernel", "inner_fc/kernel"]
    assert all(isinstance(r, MaskedWeightRecord) for r in records)
    for r in records:
        assert isinstance(r.wrapper, ks.layers.SparseWrapper)
        assert r.key == f"{r.wrapper.name}/{r.name}"
        assert tuple(r.weight.shape) == tuple(r.mask.shape)
        assert any(r.weight is w for _, w, _ in r.wrapper.masked_weights)
    assert [r.key for r in ks.masked_weights(sparse)] == [r.key for r in records]  # deterministic
    assert ks.sparse_wrappers(sparse) == [r.wrapper for r in records]


def test_masked_weights_of_a_dense_model_is_empty_and_of_a_non_model_raises():
    assert list(ks.masked_weights(_nested_model())) == []
    with pytest.raises(TypeError, match="list"):
        list(ks.masked_weights([1, 2]))


def test_sparsity_counts_of_arrays_is_hand_computed():
    counts = ks.sparsity_counts([np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([0.0, 2.0, 3.0])])
    assert counts == SparsityCounts(zeros=4, total=7)
    assert counts.nonzeros == 3 and counts.sparsity == pytest.approx(4 / 7)
    assert ks.sparsity_counts([]).sparsity == 0.0


def test_sparsity_counts_of_a_model_counts_its_masks():
    sparse = ks.sparsify(_nested_model(), 0.5, distribution="uniform", keep_dense=["last"], seed=0)
    records = list(ks.masked_weights(sparse))
    records[0].mask.assign(np.zeros(records[0].mask.shape, "float32"))
    expected_zeros = records[0].mask.shape[0] * records[0].mask.shape[1] + int(
        np.sum(records[1].mask.numpy() == 0))
    expected_total = sum(int(np.prod(r.mask.shape)) for r in records)
    assert ks.sparsity_counts(sparse) == (expected_zeros, expected_total)
    assert ks.sparsity_counts(records) == ks.sparsity_counts(sparse)
    assert ks.sparsity_counts(records[1:]).sparsity == pytest.approx(0.5)


def test_sparsity_counts_rejects_what_it_cannot_count():
    with pytest.raises(TypeError, match="Received: 3"):
        ks.sparsity_counts(3)
