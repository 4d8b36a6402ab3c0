import keras
import numpy as np
import pytest

import keras_sparse
from keras_sparse.layers import SparseWrapper


def test_report_flops_hand_computed():
    inputs = keras.Input((10, 10, 3))
    x = SparseWrapper(keras.layers.Conv2D(4, 3, name="conv"), sparsity=0.5, seed=0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = SparseWrapper(keras.layers.Dense(5, name="fc"), sparsity=0.75, seed=0)(x)
    model = keras.Model(inputs, outputs)
    report = keras_sparse.sparsity_report(model)
    conv, fc = report.rows
    # conv: 3*3*3*4 = 108 weights, used at 8*8 output positions, 2 FLOPs/MAC.
    assert (conv.params, conv.nonzeros, conv.flops_dense) == (108, 54, 2 * 108 * 64)
    assert conv.flops_sparse == 2 * 54 * 64
    # fc: 256*5 weights used once per example.
    assert (fc.params, fc.nonzeros, fc.flops_dense) == (1280, 320, 2 * 1280)
    assert report.total_sparsity == pytest.approx(1 - (54 + 320) / (108 + 1280))
    # masks are not counted as model parameters
    assert report.model_params == 108 + 4 + 1280 + 5
    data = report.to_dict()
    assert data["rows"][1]["sparsity"] == pytest.approx(0.75)


def test_nonzeros_counts_actual_zeros_in_kept_entries():
    wrapper = SparseWrapper(keras.layers.Dense(4, kernel_initializer="zeros"), sparsity=0.5, seed=0)
    model = keras.Sequential([keras.Input((4,)), wrapper])
    assert keras_sparse.sparsity_report(model).rows[0].nonzeros == 0


def test_summary_prints_table_and_returns_report():
    model = keras.Sequential([keras.Input((4,)), SparseWrapper(keras.layers.Dense(4, name="d"), 0.5, seed=0)])
    lines = []
    report = keras_sparse.summary(model, print_fn=lines.append)
    text = lines[0]
    assert "d/kernel" in text and "50.00%" in text and "total" in text
    assert report.rows[0].layer == "d"


def test_report_needs_sparse_model():
    with pytest.raises(ValueError, match="no SparseWrapper"):
        keras_sparse.sparsity_report(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="keras.Model"):
        keras_sparse.sparsity_report("model")


def test_sparsity_logger_writes_history_and_per_layer_logs():
    model = keras.Sequential(
        [keras.Input((6,)), SparseWrapper(keras.layers.Dense(8, name="a"), 0.75, seed=0), keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse")
    batch_logs = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_logs.append(dict(logs))

    history = model.fit(
        np.random.rand(16, 6),
        np.random.rand(16, 1),
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[keras_sparse.callbacks.SparsityLogger(per_layer=True), Spy()],
    )
    assert history.history["masked_sparsity"] == pytest.approx([0.75, 0.75])
    # 36 of the kernel's 48 entries are pruned; the model has 48 + 8 (bias)
    # + 9 (second Dense) parameters.
    assert history.history["model_sparsity"] == pytest.approx([36 / 65, 36 / 65])
    assert history.history["sparsity/a/kernel"] == pytest.approx([0.75, 0.75])
    assert batch_logs[0]["masked_sparsity"] == pytest.approx(0.75)
    assert "sparsity" not in batch_logs[0]  # the ambiguous name is gone


def test_sparsity_logger_rejects_dense_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no SparseWrapper"):
        model.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0, callbacks=[keras_sparse.callbacks.SparsityLogger()])
    with pytest.raises(TypeError, match="per_layer"):
        keras_sparse.callbacks.SparsityLogger(per_layer="yes")


def test_tensorboard_gets_per_layer_scalars(tmp_path):
    model = keras.Sequential([keras.Input((3,)), SparseWrapper(keras.layers.Dense(4, name="a"), 0.5, seed=0)])
    model.compile("sgd", "mse")
    model.fit(
        np.ones((4, 3)),
        np.ones((4, 4)),
        verbose=0,
        callbacks=[keras_sparse.callbacks.SparsityLogger(per_layer=True), keras.callbacks.TensorBoard(str(tmp_path))],
    )
    import tensorflow as tf

    tags = set()
    for event_file in tmp_path.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert "epoch_sparsity/a/kernel" in tags and "epoch_model_sparsity" in tags and "epoch_masked_sparsity" in tags
