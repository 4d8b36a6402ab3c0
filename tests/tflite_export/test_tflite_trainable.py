import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflite_export
from tflite_export.trainable import build_module
from tflite_export.verify import make_interpreter

from tflite_helpers import (keras_reference_steps, mlp, small_cnn,
                            train_in_tflite_runtime, zero_out)

B = 8
STEPS = 20


def _data(rng, shape, classes, categorical):
    xs = rng.standard_normal((STEPS, B) + shape).astype(np.float32)
    ys = rng.integers(0, classes, (STEPS, B)).astype(np.int32)
    if categorical:
        ys = np.eye(classes, dtype=np.float32)[ys]
    return xs, ys


CASES = {
    "mlp_nobias_sgd_sparse": (
        lambda: zero_out(mlp((20, 32, 32, 5), use_bias=False), 0.2), (20,),
        lambda: keras.optimizers.SGD(0.1),
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    "mlp_adam_sparse": (lambda: zero_out(mlp((20, 32, 16, 5)), 0.1),
                        (20,), lambda: keras.optimizers.Adam(1e-2),
                        lambda: keras.losses.SparseCategoricalCrossentropy(
                            from_logits=True)),
    "mlp_nesterov_categorical_ls": (
        lambda: zero_out(mlp((20, 32, 5)), 0.1, block=4), (20,),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        lambda: keras.losses.CategoricalCrossentropy(from_logits=True,
                                                     label_smoothing=0.1)),
    "cnn_maxpool_sgd_momentum": (
        lambda: zero_out(small_cnn((12, 12, 1), (4, 8, 16)), 0.2), (12, 12, 1),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    "cnn_avgpool_adam_categorical": (
        lambda: zero_out(small_cnn((11, 11, 2), (4, 8, 16), pool="avg"), 0.2),
        (11, 11, 2), lambda: keras.optimizers.Adam(3e-3),
        lambda: keras.losses.CategoricalCrossentropy(from_logits=True,
                                                     label_smoothing=0.2)),
}


def _bn_randomized(model, seed=0):
    """Non-trivial BN statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


def _mlp_bn_dropout():
    return _bn_randomized(zero_out(keras.Sequential([
        keras.Input((20,)), keras.layers.Dense(32, use_bias=False),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Dropout(0.3), keras.layers.Dense(5)]), 0.2))


def _cnn_bn_dropout():
    return _bn_randomized(zero_out(keras.Sequential([
        keras.Input((10, 10, 1)), keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dropout(0.5), keras.layers.Dense(10)]), 0.3))


def keras_equivalent(model):
    """The Keras setup that trains like the exported model: BN frozen
    (`trainable=False`: moving statistics, gamma/beta fixed) and Dropout
    as identity (rate 0)."""
    km = keras.models.clone_model(model)
    km.set_weights(model.get_weights())
    for layer in km.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return km


BN_CASES = {
    "mlp_bn_dropout_sgd_momentum": (
        _mlp_bn_dropout, (20,), 5,
        lambda: keras.optimizers.SGD(0.05, momentum=0.9)),
    "cnn_bn_dropout_adam": (_cnn_bn_dropout, (10, 10, 1), 10,
                            lambda: keras.optimizers.Adam(3e-3)),
}


@pytest.mark.full
@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_frozen_batchnorm_and_identity_dropout_match_keras_equivalent(
        tmp_path, rng, case):
    make_model, shape, classes, make_opt = BN_CASES[case]
    model = make_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    xs, ys = _data(rng, shape, classes, categorical=False)
    path = str(tmp_path / "t.tflite")
    report = tflite_export.export_trainable(model, path, make_opt(), loss,
                                            batch_size=B, compare_dense=False)
    # The device behaviour differs from Keras' default training mode, and
    # the report says so.
    assert any("frozen on device" in n for n in report.notes)
    assert any("Dropout" in n and "identity" in n for n in report.notes)
    assert not any("gamma" in n or "beta" in n for n in report.weight_names)
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    train = interp.get_signature_runner("train")
    before = interp.get_signature_runner("get_weights")()
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    after = interp.get_signature_runner("get_weights")()
    k_losses, k_weights = keras_reference_steps(keras_equivalent(model),
                                                make_opt(), loss, xs, ys)
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    assert len(k_weights) == len(report.weight_names)
    for name, kw in zip(report.weight_names, k_weights):
        np.testing.assert_allclose(after[name], kw, rtol=1e-4,
                                   atol=1e-4 * np.max(np.abs(kw)))
        if name.endswith("kernel"):
            assert np.all(after[name][before[name] == 0] == 0.0)
    trained = _set(keras_equivalent(model), k_weights)
    np.testing.assert_allclose(
        interp.get_signature_runner("infer")(x=xs[0])["output"],
        np.asarray(trained(xs[0], training=False)), rtol=1e-4, atol=1e-4)


def _set(model, trainable_values):
    for v, val in zip(model.trainable_weights, trainable_values):
        v.assign(val)
    return model


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_20_steps_match_keras_and_keep_zeros(tmp_path, rng, case, storage):
    make_model, shape, make_opt, make_loss = CASES[case]
    model = make_model()
    categorical = isinstance(make_loss(), keras.losses.CategoricalCrossentropy)
    xs, ys = _data(rng, shape, 10 if "cnn" in case else 5, categorical)
    path = str(tmp_path / "t.tflite")
    report = tflite_export.export_trainable(model, path, make_opt(),
                                            make_loss(), batch_size=B,
                                            compare_dense=False,
                                            weight_storage=storage)
    assert report.weight_storage == storage
    if storage == "sparse":
        assert "SCATTER_ND" in report.operators
    assert report.flex_ops == []
    assert not any(op.startswith("CUSTOM") for op in report.operators)
    assert {"train", "infer", "get_weights", "set_weights"} <= set(
        report.signatures)
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    train = interp.get_signature_runner("train")
    before = interp.get_signature_runner("get_weights")()
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    after = interp.get_signature_runner("get_weights")()
    k_losses, k_weights = keras_reference_steps(model, make_opt(), make_loss(),
                                                xs, ys)
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    assert len(k_weights) == len(report.weight_names)
    for name, kw in zip(report.weight_names, k_weights):
        np.testing.assert_allclose(after[name], kw, rtol=1e-4,
                                   atol=1e-4 * np.max(np.abs(kw)))
        if name.endswith("kernel"):
            pruned = before[name] == 0
            assert pruned.mean() > 0.5
            assert np.all(after[name][pruned] == 0.0)  # exactly zero
            assert np.any(after[name] != before[name])  # live ones trained


@pytest.mark.full
def test_zeros_stay_zero_after_many_steps(tmp_path, rng):
    model = zero_out(mlp((16, 32, 4)), 0.1)
    path = str(tmp_path / "t.tflite")
    tflite_export.export_trainable(model, path, keras.optimizers.Adam(0.05),
                                   "sparse_categorical_crossentropy"
                                   if False else keras.losses.
                                   SparseCategoricalCrossentropy(
                                       from_logits=True),
                                   batch_size=4, compare_dense=False)
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    train = interp.get_signature_runner("train")
    w0 = interp.get_signature_runner("get_weights")()
    for _ in range(300):
        train(x=rng.standard_normal((4, 16)).astype(np.float32),
              y=rng.integers(0, 4, 4).astype(np.int32))
    w1 = interp.get_signature_runner("get_weights")()
    for name in w0:
        if name.endswith("kernel"):
            assert np.all(w1[name][w0[name] == 0] == 0.0)


def test_keras3_model_variables_are_collected_explicitly():
    # Pitfall: a tf.Module holding a Keras 3 model tracks none of its
    # variables, so a naive export would freeze the weights as constants.
    model = zero_out(mlp((8, 16, 3)), 0.5)

    class Naive(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

    assert len(Naive().trainable_variables) == 0
    module = build_module(model, keras.optimizers.SGD(0.1, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(
                              from_logits=True), batch_size=2)
    # 2 kernels + 2 biases, each with one momentum slot, plus the step.
    assert len(module.trainable_variables) == 4 + 4 + 1
    for var, w in zip(module.vars, model.get_weights()):
        np.testing.assert_array_equal(var.numpy(), w)


@pytest.mark.full
def test_trained_weights_are_variables_not_constants(tmp_path, rng):
    model = zero_out(mlp((8, 16, 3)), 0.5)
    path = str(tmp_path / "t.tflite")
    tflite_export.export_trainable(model, path, keras.optimizers.SGD(0.5),
                                   keras.losses.SparseCategoricalCrossentropy(
                                       from_logits=True), batch_size=4,
                                   compare_dense=False)
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    infer = interp.get_signature_runner("infer")
    x = rng.standard_normal((4, 8)).astype(np.float32)
    y0 = infer(x=x)["output"]
    np.testing.assert_allclose(y0, np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    interp.get_signature_runner("train")(x=x, y=np.array([0, 1, 2, 0],
                                                         np.int32))
    assert np.max(np.abs(infer(x=x)["output"] - y0)) > 1e-4


@pytest.mark.full
def test_relu_after_bias_free_matmul_is_kept(tmp_path, rng):
    # Pitfall: ReLU right after a bias-free matmul on a variable has been
    # seen to vanish in conversion.
    model = zero_out(mlp((16, 32, 32, 4), use_bias=False), 0.5)
    path = str(tmp_path / "t.tflite")
    report = tflite_export.export_trainable(
        model, path, keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=4, compare_dense=False)
    assert report.flex_ops == []
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    x = rng.standard_normal((16, 16)).astype(np.float32)
    out = interp.get_signature_runner("infer")(x=x)["output"]
    hidden = keras.Model(model.inputs, model.layers[0].output)
    assert np.mean(np.asarray(hidden(x)) == 0) > 0.2  # ReLU is active
    np.testing.assert_allclose(out, np.asarray(model(x)), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.full
def test_set_weights_roundtrip_and_softmax_output(tmp_path, rng):
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    out = keras.layers.Dense(3, activation="softmax")(h)
    model = zero_out(keras.Model(inp, out), 0.5)
    path = str(tmp_path / "t.tflite")
    report = tflite_export.export_trainable(
        model, path, keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(), batch_size=2,
        compare_dense=False)
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    x = rng.standard_normal((5, 6)).astype(np.float32)
    probs = interp.get_signature_runner("infer")(x=x)["output"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, np.asarray(model(x)), atol=1e-6)
    new = {n: np.full(w.shape, 0.25, np.float32) for n, w in
           zip(report.weight_names, model.get_weights())}
    interp.get_signature_runner("set_weights")(**new)
    got = interp.get_signature_runner("get_weights")()
    for n, w in zip(report.weight_names, model.get_weights()):
        # Dense storage too: values at pruned positions are dropped.
        want = np.where(w != 0, 0.25, 0.0) if n.endswith("kernel") else new[n]
        np.testing.assert_array_equal(got[n], want)


@pytest.mark.full
def test_sparse_weight_storage_is_smaller_than_dense_inference(tmp_path):
    model = zero_out(mlp((64, 256, 10)), 0.1)
    opt = lambda: keras.optimizers.SGD(0.1, momentum=0.9)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dense = tflite_export.export_trainable(model, str(tmp_path / "d.tflite"),
                                           opt(), loss, batch_size=4)
    sparse = tflite_export.export_trainable(model, str(tmp_path / "s.tflite"),
                                            opt(), loss, batch_size=4,
                                            weight_storage="sparse")
    assert set(sparse.signatures) == set(dense.signatures)
    # Values + indices + one shared zero buffer for the slots: ~12 bytes
    # per non-zero plus the graph (~30 KB here), under the dense float32
    # inference file (the benchmark MLP: 0.31x).
    assert sparse.num_bytes < sparse.dense_inference_float32_bytes
    assert sparse.num_bytes < dense.num_bytes
    with open(tmp_path / "s.tflite", "rb") as f:
        interp = make_interpreter(f.read())
    got = interp.get_signature_runner("get_weights")()  # no init step
    for n, w in zip(sparse.weight_names, model.get_weights()):
        np.testing.assert_array_equal(got[n], w)
    # set_weights drops values at pruned positions: they stay exactly 0.
    noisy = {n: w + 1.0 for n, w in zip(sparse.weight_names,
                                        model.get_weights())}
    interp.get_signature_runner("set_weights")(**noisy)
    got = interp.get_signature_runner("get_weights")()
    for n, w in zip(sparse.weight_names, model.get_weights()):
        if n.endswith("kernel"):
            np.testing.assert_array_equal(got[n], np.where(w != 0, w + 1.0,
                                                           0.0))
        else:
            np.testing.assert_array_equal(got[n], w + 1.0)


@pytest.mark.parametrize("bad,match", [
    (dict(model=lambda: mlp(activation="tanh")), "exact ReLU"),
    (dict(optimizer=lambda: keras.optimizers.RMSprop()), "RMSprop"),
    (dict(loss=lambda: keras.losses.MeanSquaredError()), "MeanSquaredError"),
    (dict(optimizer=lambda: keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9))),
     "schedules"),
    (dict(model=lambda: keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, dilation_rate=2),
        keras.layers.Flatten(), keras.layers.Dense(2)])), "dilation_rate=1"),
    (dict(model=lambda: keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(4),
        keras.layers.ReLU(negative_slope=0.1), keras.layers.Dense(2)])),
     "negative_slope"),
    (dict(model=lambda: keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(4, activation="softmax"),
        keras.layers.Dense(2)])), "only on the layer that produces"),
    (dict(model=lambda: keras.Sequential([
        keras.Input((4, 8)), keras.layers.Dense(4),
        keras.layers.Flatten(), keras.layers.Dense(2)])), "2-D inputs only"),
    (dict(model=lambda: keras.Sequential([
        keras.Input((8,)), keras.Sequential([keras.layers.Dense(4)]),
        keras.layers.Dense(2)])), "nested model"),
    (dict(model=lambda: keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(4, activation="tanh")])),
     "'tanh'"),
    (dict(batchnorm="moving"), r"batchnorm must be one of \('frozen', "
                               r"'train'\); received 'moving'"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(model=lambda: keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(4),
        keras.layers.LayerNormalization(), keras.layers.Dense(2)])),
     "LayerNormalization"),
])
def test_bad_training_inputs_raise_before_writing(tmp_path, bad, match):
    model = bad.get("model", lambda: mlp((8, 4, 3)))()
    opt = bad.get("optimizer", lambda: keras.optimizers.SGD(0.1))()
    loss = bad.get("loss", lambda: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))()
    options = {k: bad[k] for k in ("batchnorm", "batch_size") if k in bad}
    with pytest.raises(ValueError, match=match):
        tflite_export.export_trainable(model, str(tmp_path / "t.tflite"),
                                       opt, loss, **options)
    assert os.listdir(tmp_path) == []


def _train_in_tflite_runtime(tmp_path, path, xs, ys):
    return train_in_tflite_runtime(tmp_path, path, xs, ys)


def _check_against_keras(report, losses, w0, w1, k_losses, k_weights):
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    assert set(w1) == set(report.weight_names)
    for name, kw in zip(report.weight_names, k_weights):
        np.testing.assert_allclose(w1[name], kw, rtol=1e-4,
                                   atol=1e-4 * np.max(np.abs(kw)))
        if name.endswith("kernel"):
            pruned = w0[name] == 0
            assert pruned.mean() > 0.5
            assert np.all(w1[name][pruned] == 0.0)


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_trains_in_tflite_runtime_214_venv(tmp_path, rng, storage):
    model = zero_out(small_cnn((10, 10, 1), (4, 8, 16)), 0.2)
    xs, ys = _data(rng, (10, 10, 1), 10, categorical=False)
    path = str(tmp_path / "t.tflite")
    opt = lambda: keras.optimizers.Adam(5e-3)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    report = tflite_export.export_trainable(model, path, opt(), loss,
                                            batch_size=B, compare_dense=False,
                                            weight_storage=storage)
    losses, w0, w1, _ = _train_in_tflite_runtime(tmp_path, path, xs, ys)
    k_losses, k_weights = keras_reference_steps(model, opt(), loss, xs, ys)
    _check_against_keras(report, losses, w0, w1, k_losses, k_weights)


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_frozen_batchnorm_and_identity_dropout_in_tflite_runtime_214(
        tmp_path, rng, case, storage):
    make_model, shape, classes, make_opt = BN_CASES[case]
    model = make_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    xs, ys = _data(rng, shape, classes, categorical=False)
    path = str(tmp_path / "t.tflite")
    report = tflite_export.export_trainable(model, path, make_opt(), loss,
                                            batch_size=B, compare_dense=False,
                                            weight_storage=storage)
    losses, w0, w1, out = _train_in_tflite_runtime(tmp_path, path, xs, ys)
    k_losses, k_weights = keras_reference_steps(keras_equivalent(model),
                                                make_opt(), loss, xs, ys)
    _check_against_keras(report, losses, w0, w1, k_losses, k_weights)
    trained = _set(keras_equivalent(model), k_weights)
    np.testing.assert_allclose(out, np.asarray(trained(xs[0],
                                                       training=False)),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ DAGs

def _tiny_resnet(bn_trainable=False):
    import keras_sparse

    model = _bn_randomized(keras_sparse.models.cifar_resnet(
        8, input_shape=(8, 8, 1), width=4))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = bn_trainable
    return zero_out(model, 0.3)


def _dag_zoo():
    """Every supported layer type in one branching graph."""
    inp = keras.Input((9, 9, 2))
    a = keras.layers.ZeroPadding2D(((1, 0), (0, 1)))(inp)
    a = keras.layers.Conv2D(4, 3, strides=2, padding="same",
                            activation="relu")(a)
    b = keras.layers.SeparableConv2D(4, 3, padding="same",
                                     activation="relu6")(inp)
    b = keras.layers.MaxPooling2D(3, strides=2, padding="same")(b)
    c = keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2,
                                     padding="valid")(inp)
    c = keras.layers.Activation("relu")(c)
    c = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(c)
    c = keras.layers.Conv2D(4, 1, use_bias=False)(c)
    x = keras.layers.Add()([a, b])
    x = keras.layers.Concatenate()([x, c])
    x = keras.layers.BatchNormalization(trainable=False)(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.AveragePooling2D(2, strides=1)(x)
    g = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    g = keras.layers.Reshape((8,))(g)
    f = keras.layers.Flatten()(x)
    f = keras.layers.Dropout(0.0)(f)
    f = keras.layers.Dense(8, activation="relu")(f)
    x = keras.layers.Add()([f, g])
    out = keras.layers.Dense(5)(x)
    return _bn_randomized(zero_out(keras.Model(inp, out), 0.4))


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_every_supported_layer_in_a_dag_matches_keras(tmp_path, rng,
                                                      storage):
    model = _dag_zoo()
    xs, ys = _data(rng, (9, 9, 2), 5, categorical=False)
    path = str(tmp_path / "t.tflite")
    opt = lambda: keras.optimizers.Adam(3e-3)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    report = tflite_export.export_trainable(model, path, opt(), loss,
                                            batch_size=B, compare_dense=False,
                                            weight_storage=storage)
    assert report.flex_ops == []
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    train = interp.get_signature_runner("train")
    before = interp.get_signature_runner("get_weights")()
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    after = interp.get_signature_runner("get_weights")()
    k_losses, k_weights = keras_reference_steps(model, opt(), loss, xs, ys)
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    for name, kw in zip(report.weight_names, k_weights):
        np.testing.assert_allclose(after[name], kw, rtol=1e-3,
                                   atol=1e-3 * np.max(np.abs(kw)))
        if name.endswith("kernel"):
            assert np.all(after[name][before[name] == 0] == 0.0)


@pytest.mark.full
def test_batchnorm_train_matches_keras_training_mode(tmp_path, rng):
    model = _tiny_resnet(bn_trainable=True)
    xs, ys = _data(rng, (8, 8, 1), 10, categorical=False)
    path = str(tmp_path / "t.tflite")
    opt = lambda: keras.optimizers.SGD(0.05, momentum=0.9)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    report = tflite_export.export_trainable(
        model, path, opt(), loss, batch_size=B, compare_dense=False,
        batchnorm="train")
    assert report.batchnorm == "train"
    assert "stem_bn_gamma" in report.weight_names
    assert "stem_bn_moving_mean" in report.weight_names
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    train = interp.get_signature_runner("train")
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    after = interp.get_signature_runner("get_weights")()
    # Keras reference: BN in training mode, moving statistics updated.
    km = _masked_clone(model)
    km.compile(optimizer=opt(), loss=loss, jit_compile=False)
    k_losses = [float(km.train_on_batch(x, y)) for x, y in zip(xs, ys)]
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    for v in km.weights:
        name = v.path.replace("/", "_")
        np.testing.assert_allclose(after[name], np.asarray(v), rtol=1e-3,
                                   atol=1e-4)
    # infer uses the (updated) moving statistics, like Keras inference.
    out = interp.get_signature_runner("infer")(x=xs[0])["output"]
    np.testing.assert_allclose(out, np.asarray(km(xs[0], training=False)),
                               rtol=1e-3, atol=1e-4)


# ------------------------------------------------------ frozen layers

def _masked_clone(model):
    """A Keras copy whose pruned kernel entries stay zero in training."""
    from tflite_helpers import mask_constraint

    km = keras.models.clone_model(model)
    km.set_weights(model.get_weights())
    for layer in km.layers:
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.constraint = mask_constraint(
                (np.asarray(layer.kernel) != 0).astype("float32"))
    return km


def _freeze_all_but(model, names):
    for layer in model.layers:
        layer.trainable = layer.name in names
    return model


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_head_only_training_keeps_backbone_constant(tmp_path, rng, storage):
    model = _freeze_all_but(_tiny_resnet(), {"logits"})
    xs, ys = _data(rng, (8, 8, 1), 10, categorical=False)
    path = str(tmp_path / "t.tflite")
    opt = lambda: keras.optimizers.Adam(1e-2)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    report = tflite_export.export_trainable(model, path, opt(), loss,
                                            batch_size=B,
                                            compare_dense=False,
                                            weight_storage=storage)
    # Sparse storage keeps the frozen (70% zero) kernels compact too.
    assert ("SCATTER_ND" in report.operators) == (storage == "sparse")
    # Only the head trains, is saved and restored.
    assert report.weight_names == ["logits_kernel", "logits_bias"]
    assert "stem_conv" in report.frozen_layers
    assert any("trainable=False" in n for n in report.notes)
    # No backward below the head: no conv input or filter gradients.
    assert "TRANSPOSE_CONV" not in report.operators
    assert report.operators.get("CONV_2D", 0) == 2 * 9  # train + infer fwd
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    infer = interp.get_signature_runner("infer")
    y0 = infer(x=xs[0])["output"]
    head0 = interp.get_signature_runner("get_weights")()
    train = interp.get_signature_runner("train")
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    after = interp.get_signature_runner("get_weights")()
    # The device backbone is bit-identical after training: with the
    # initial head restored, the output is bit-identical too.
    interp.get_signature_runner("set_weights")(**head0)
    np.testing.assert_array_equal(infer(x=xs[0])["output"], y0)
    interp.get_signature_runner("set_weights")(**after)
    km = _masked_clone(model)
    backbone = {v.path: np.asarray(v).copy()
                for v in km.weights if not v.path.startswith("logits")}
    km.compile(optimizer=opt(), loss=loss, jit_compile=False)
    k_losses = [float(km.train_on_batch(x, y)) for x, y in zip(xs, ys)]
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    head = km.get_layer("logits")
    np.testing.assert_allclose(after["logits_kernel"], np.asarray(head.kernel),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after["logits_bias"], np.asarray(head.bias),
                               rtol=1e-4, atol=1e-6)
    # Keras leaves the frozen backbone bit-identical; so does the device:
    # its output is the Keras backbone (original weights) + the device head.
    for v in km.weights:
        if v.path in backbone:
            np.testing.assert_array_equal(np.asarray(v), backbone[v.path])
    head.kernel.assign(after["logits_kernel"])
    head.bias.assign(after["logits_bias"])
    np.testing.assert_allclose(
        interp.get_signature_runner("infer")(x=xs[0])["output"],
        np.asarray(km(xs[0], training=False)), rtol=1e-5, atol=1e-5)


@pytest.mark.full
def test_frozen_stem_trains_the_rest_like_keras(tmp_path, rng):
    model = _tiny_resnet()
    model.get_layer("stem_conv").trainable = False
    xs, ys = _data(rng, (8, 8, 1), 10, categorical=False)
    path = str(tmp_path / "t.tflite")
    opt = lambda: keras.optimizers.SGD(0.05, momentum=0.9)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    report = tflite_export.export_trainable(model, path, opt(), loss,
                                            batch_size=B,
                                            compare_dense=False)
    assert "stem_conv_kernel" not in report.weight_names
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    train = interp.get_signature_runner("train")
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    k_losses, _ = keras_reference_steps(model, opt(), loss, xs, ys)
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)


def test_all_layers_frozen_is_rejected(tmp_path):
    model = _freeze_all_but(mlp((8, 4, 3)), set())
    with pytest.raises(ValueError, match="no trainable weights"):
        tflite_export.export_trainable(
            model, str(tmp_path / "t.tflite"), keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------- save and restore

@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize("density", [0.3, 0.7])
def test_set_weights_and_set_state_never_write_pruned_positions(
        tmp_path, rng, storage, density):
    # density 0.3: compact under "sparse"; 0.7: a dense variable + mask
    # under both storages.
    model = zero_out(mlp((12, 16, 4)), density)
    path = str(tmp_path / "t.tflite")
    report = tflite_export.export_trainable(
        model, path, keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=4, compare_dense=False, weight_storage=storage)
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    w0 = interp.get_signature_runner("get_weights")()
    noisy = {n: (rng.standard_normal(w.shape) + 3.0).astype(np.float32)
             for n, w in w0.items()}
    interp.get_signature_runner("set_weights")(**noisy)
    state = interp.get_signature_runner("get_state")()
    assert set(state) == set(report.state_names)
    noisy_state = {n: (rng.standard_normal(v.shape) + 3.0).astype(np.float32)
                   for n, v in state.items()}
    noisy_state["step"] = np.array(5.0, np.float32)
    for sig, values in (("set_weights", noisy), ("set_state", noisy_state)):
        interp.get_signature_runner(sig)(**values)
        got = interp.get_signature_runner("get_weights")()
        for n in w0:
            if n.endswith("kernel"):
                pruned = w0[n] == 0
                assert pruned.any()
                assert np.all(got[n][pruned] == 0.0)
                np.testing.assert_array_equal(got[n][~pruned],
                                              values[n][~pruned])
        for _ in range(3):
            interp.get_signature_runner("train")(
                x=rng.standard_normal((4, 12)).astype(np.float32),
                y=rng.integers(0, 4, 4).astype(np.int32))
        got = interp.get_signature_runner("get_weights")()
        for n in w0:
            if n.endswith("kernel"):
                assert np.all(got[n][w0[n] == 0] == 0.0)


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_restored_state_continues_exactly(tmp_path, rng, storage):
    model = _tiny_resnet()
    path = str(tmp_path / "t.tflite")
    tflite_export.export_trainable(
        model, path, keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=B, compare_dense=False, weight_storage=storage)
    xs, ys = _data(rng, (8, 8, 1), 10, categorical=False)
    with open(path, "rb") as f:
        data = f.read()
    a = make_interpreter(data)
    train = a.get_signature_runner("train")
    full = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    final = a.get_signature_runner("get_state")()
    b = make_interpreter(data)
    train = b.get_signature_runner("train")
    first = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs[:7], ys[:7])]
    ckpt = {k: np.array(v) for k, v in
            b.get_signature_runner("get_state")().items()}
    assert float(ckpt["step"]) == 7.0
    c = make_interpreter(data)  # a fresh "device" resumes
    c.get_signature_runner("set_state")(**ckpt)
    train = c.get_signature_runner("train")
    rest = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs[7:], ys[7:])]
    assert first + rest == full  # bit-identical continuation
    resumed = c.get_signature_runner("get_state")()
    for k in final:
        np.testing.assert_array_equal(resumed[k], final[k])


@pytest.mark.full
def test_dag_and_batchnorm_train_in_tflite_runtime_214(tmp_path, rng):
    model = _dag_zoo()
    xs, ys = _data(rng, (9, 9, 2), 5, categorical=False)
    opt = lambda: keras.optimizers.Adam(3e-3)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    path = str(tmp_path / "zoo.tflite")
    report = tflite_export.export_trainable(model, path, opt(), loss,
                                            batch_size=B, compare_dense=False,
                                            weight_storage="sparse")
    losses, w0, w1, _ = _train_in_tflite_runtime(tmp_path, path, xs, ys)
    k_losses, k_weights = keras_reference_steps(model, opt(), loss, xs, ys)
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    for name in report.weight_names:
        if name.endswith("kernel"):
            assert np.all(w1[name][w0[name] == 0] == 0.0)
    model = _tiny_resnet(bn_trainable=True)
    xs, ys = _data(rng, (8, 8, 1), 10, categorical=False)
    path = str(tmp_path / "bn.tflite")
    tflite_export.export_trainable(model, path, opt(), loss, batch_size=B,
                                   compare_dense=False, batchnorm="train")
    losses, _, w1, _ = _train_in_tflite_runtime(tmp_path, path, xs, ys)
    km = _masked_clone(model)
    km.compile(optimizer=opt(), loss=loss, jit_compile=False)
    k_losses = [float(km.train_on_batch(x, y)) for x, y in zip(xs, ys)]
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    np.testing.assert_allclose(w1["stem_bn_moving_mean"],
                               np.asarray(km.get_layer("stem_bn").moving_mean),
                               rtol=1e-3, atol=1e-5)
