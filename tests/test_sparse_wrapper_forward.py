"""SparseWrapper keeps the model what its masks say, whatever writes the weights.

Covers the forward mask (set_weights / assign / loaded files), load-time mask
validation, and the sequence layers (MultiHeadAttention, LSTM, GRU).
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sparse
from keras_sparse.layers import SparseWrapper


def _mlp(seed=0):
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="a"), keras.layers.Dense(4, name="b")]
    )
    return keras_sparse.sparsify(model, 0.75, distribution="uniform", keep_dense=None, seed=seed)


def _x(shape=(5, 8)):
    return np.random.default_rng(1).normal(size=shape).astype("float32")


def _assert_matches_strip(model, x):
    np.testing.assert_array_equal(model(x).numpy(), keras_sparse.strip(model)(x).numpy())


def test_set_weights_with_dense_values_keeps_outputs_sparse():
    model = _mlp()
    wrapper = model.get_layer("a")
    dense = [np.ones_like(w) for w in wrapper.layer.get_weights()]
    wrapper.layer.set_weights(dense)
    x = _x()
    _assert_matches_strip(model, x)
    # The pruned entries hold 1.0 in the variable, yet contribute nothing.
    kernel = wrapper.layer.kernel.numpy()
    assert np.all(kernel[wrapper.kernel_mask.numpy() == 0] == 1.0)


def test_model_set_weights_and_assign_keep_outputs_sparse():
    model = _mlp()
    x = _x()
    model.set_weights([np.full_like(w, 0.3) if w.ndim == 2 and "mask" not in str(i) else w
                       for i, w in enumerate(model.get_weights())])
    model.get_layer("b").layer.kernel.assign(np.full((16, 4), 2.0, "float32"))
    _assert_matches_strip(model, x)


def test_loaded_file_with_nonzeros_at_pruned_entries_keeps_outputs_sparse(tmp_path):
    model = _mlp()
    model.get_layer("a").layer.kernel.assign(np.ones((8, 16), "float32"))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _x()
    _assert_matches_strip(loaded, x)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert keras_sparse.sparsity_report(loaded).total_sparsity == pytest.approx(0.75)


def test_gradient_of_pruned_entries_is_dense():
    """RigL grows by |dL/dW| at pruned entries: the forward mask must not hide it."""
    model = _mlp()
    wrapper = model.get_layer("a")
    x = _x()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    grad = tape.gradient(loss, wrapper.layer.kernel).numpy()
    pruned = wrapper.kernel_mask.numpy() == 0
    assert np.count_nonzero(grad[pruned]) > 0.5 * pruned.sum()
    # and equals the gradient of the stripped model (pruned entries are 0 there)
    plain = keras_sparse.strip(model)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(plain(x) ** 2)
    np.testing.assert_allclose(grad, tape.gradient(loss, plain.get_layer("a").kernel).numpy(), rtol=1e-5, atol=1e-6)


def test_training_after_dense_write_rezeroes_pruned_entries():
    model = _mlp()
    wrapper = model.get_layer("a")
    wrapper.layer.kernel.assign(np.ones((8, 16), "float32"))
    model.compile("sgd", "mse")
    model.fit(_x((16, 8)), np.zeros((16, 4)), epochs=1, verbose=0)
    assert np.all(wrapper.layer.kernel.numpy()[wrapper.kernel_mask.numpy() == 0] == 0.0)


def test_activity_regularizer_of_wrapped_layer_still_adds_its_loss():
    inner = keras.layers.Dense(3, activity_regularizer="l2")
    layer = SparseWrapper(inner, 0.5, seed=0)
    layer(np.ones((2, 4), "float32"))
    assert len(layer.losses) == 1 and float(layer.losses[0]) > 0.0


def test_nonbinary_masks_in_file_are_refused(tmp_path):
    model = _mlp()
    mask = model.get_layer("a").kernel_mask
    values = mask.numpy()
    values[values == 1] = 0.5
    mask.assign(values)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    with pytest.raises(ValueError, match=r"kernel_mask of layer 'a' holds \d+ values other than 0 and 1"):
        keras.saving.load_model(path)


def test_bad_masks_leave_the_layer_unchanged():
    wrapper = _mlp().get_layer("a")
    before = [v.numpy().copy() for v in wrapper.weights]
    stored = {}
    wrapper.save_own_variables(stored)
    mask_key = next(k for k, v in stored.items() if np.array_equal(v, wrapper.kernel_mask.numpy()))
    wrong_shape = {**stored, mask_key: np.ones((3, 3), "float32")}
    with pytest.raises(ValueError, match=r"variables for layer 'a' do not match this model"):
        wrapper.load_own_variables(wrong_shape)
    nonbinary = {**{k: np.zeros_like(v) for k, v in stored.items()}, mask_key: np.full((8, 16), 0.25, "float32")}
    with pytest.raises(ValueError, match="other than 0 and 1"):
        wrapper.load_own_variables(nonbinary)
    for b, v in zip(before, wrapper.weights):
        np.testing.assert_array_equal(b, v.numpy())


def _sequence_model():
    inputs = keras.Input((7, 16))
    h = keras.layers.MultiHeadAttention(2, 8, name="mha")(inputs, inputs)
    h = keras.layers.LSTM(12, return_sequences=True, name="lstm")(h)
    h = keras.layers.GRU(6, name="gru")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def test_attention_and_recurrent_layers_are_sparsified():
    sparse = keras_sparse.sparsify(_sequence_model(), 0.8, seed=0)
    rows = {(r.layer, r.weight): r for r in keras_sparse.sparsity_report(sparse).rows}
    expected = {("mha", f"{p}_kernel") for p in ("query", "key", "value", "output")}
    expected |= {(n, w) for n in ("lstm", "gru") for w in ("kernel", "recurrent_kernel")}
    assert expected <= set(rows)
    report = keras_sparse.sparsity_report(sparse)
    assert report.total_sparsity == pytest.approx(0.8, abs=0.01)
    assert report.model_sparsity > 0.7  # biases only stay dense
    x = _x((4, 7, 16))
    _assert_matches_strip(sparse, x)


@pytest.mark.full
def test_attention_and_recurrent_sparse_model_trains_with_rigl_and_reloads(tmp_path):
    sparse = keras_sparse.sparsify(_sequence_model(), 0.8, seed=0)
    masks_before = [m.numpy().copy() for w in keras_sparse.sparse_wrappers(sparse) for _, _, m in w.masked_weights]
    sparse.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _x((16, 7, 16)), np.arange(16) % 3
    sparse.fit(x, y, batch_size=4, epochs=2, verbose=0,
               callbacks=[keras_sparse.callbacks.RigL(update_interval=2, stop_step=1.0, total_steps=8)])
    pairs = [(wt, m) for w in keras_sparse.sparse_wrappers(sparse) for _, wt, m in w.masked_weights]
    assert any(not np.array_equal(b, m.numpy()) for b, (_, m) in zip(masks_before, pairs))
    for weight, mask in pairs:
        assert np.all(weight.numpy()[mask.numpy() == 0] == 0.0)
    path = os.path.join(tmp_path, "seq.keras")
    sparse.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), sparse(x).numpy(), rtol=1e-5, atol=1e-6)


def test_auto_keep_dense_sparsifies_a_large_first_layer():
    # An MLP whose first layer holds most of the parameters: "auto" must not
    # keep it dense (RigL's convention is for a tiny first conv).
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, name="big"), keras.layers.Dense(10)])
    sparse = keras_sparse.sparsify(model, 0.9, distribution="uniform", seed=0)
    report = keras_sparse.sparsity_report(sparse)
    assert {r.layer for r in report.rows} == {"big", "dense"}
    assert report.model_sparsity > 0.85


def test_auto_keep_dense_keeps_a_small_first_conv():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, name="stem")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(64, name="fc")(x))
    sparse = keras_sparse.sparsify(model, 0.9, distribution="uniform", seed=0)
    assert not isinstance(sparse.get_layer("stem"), SparseWrapper)
    assert isinstance(sparse.get_layer("fc"), SparseWrapper)


class _Opaque(keras.layers.Layer):
    """A custom layer with a big weight and no prunable-weight registration."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 200), name="w")

    def call(self, x):
        return x @ self.w


def test_warns_when_an_unprunable_layer_holds_much_of_the_model():
    inputs = keras.Input((50,))
    model = keras.Model(inputs, keras.layers.Dense(4)(_Opaque()(inputs)))
    with pytest.warns(UserWarning, match=r"stays dense \(its type _Opaque is not prunable\) and holds 9\d\.\d%"):
        keras_sparse.sparsify(model, 0.9, seed=0)


def test_warns_when_a_kept_dense_layer_holds_much_of_the_model():
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(100, name="big"), keras.layers.Dense(10)])
    with pytest.warns(UserWarning, match=r"'big' stays dense \(kept dense\)"):
        keras_sparse.sparsify(model, 0.9, keep_dense=["big"], seed=0)
