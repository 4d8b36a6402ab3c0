"""Acceptance: the papers' and phones' networks (ResNet-20/32 and a
MobileNetV2-style net at 90% ERK sparsity) train on the device exactly like
the sparse Keras model's `train_on_batch` (frozen BatchNormalization on
both sides), in ai-edge-litert and in tflite-runtime 2.14."""

import keras
import numpy as np
import pytest

import keras_sparse
import tflite_export
from tflite_export.verify import make_interpreter

from tflite_helpers import randomize_batchnorm, train_in_tflite_runtime

B = 4
STEPS = 20
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _opt():
    return keras.optimizers.SGD(0.05, momentum=0.9)


def _sparse_pair(model):
    """(sparse Keras model with frozen BN, compiled; its stripped copy)."""
    randomize_batchnorm(model)
    sparse = keras_sparse.sparsify(model, 0.9, distribution="erk", seed=0)
    for layer in sparse.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    sparse.compile(optimizer=_opt(), loss=LOSS, jit_compile=False)
    return sparse, keras_sparse.strip(sparse)


def _batches(rng, shape, classes=10):
    xs = rng.standard_normal((STEPS, B) + shape).astype(np.float32)
    ys = rng.integers(0, classes, (STEPS, B)).astype(np.int32)
    return xs, ys


def _keras_kernels(sparse):
    out = {}
    for layer in sparse.layers:
        inner = getattr(layer, "layer", layer)
        for v in inner.trainable_weights:
            out[f"{layer.name}_{v.name}"] = np.asarray(v)
    return out


def _check(report, losses, w0, w1, sparse, k_losses):
    np.testing.assert_allclose(losses, k_losses, rtol=1e-4)
    kw = _keras_kernels(sparse)
    assert set(report.weight_names) == set(kw)
    for name in report.weight_names:
        np.testing.assert_allclose(w1[name], kw[name], rtol=1e-3,
                                   atol=1e-3 * np.max(np.abs(kw[name])))
        if "kernel" in name:
            pruned = w0[name] == 0
            assert np.all(w1[name][pruned] == 0.0)  # exactly zero
    pruned = sum(int(np.sum(w0[n] == 0)) for n in w0 if "kernel" in n)
    total = sum(w0[n].size for n in w0 if "kernel" in n)
    assert pruned / total > 0.85  # 90% ERK reached the device


MODELS = {
    "resnet20": lambda: keras_sparse.models.cifar_resnet(
        20, input_shape=(16, 16, 1)),
    "mobilenet_v2_small": lambda: keras_sparse.models.mobilenet_v2_small(
        (28, 28, 1)),
}


def _export_and_train_keras(tmp_path, rng, make, storage):
    sparse, plain = _sparse_pair(make())
    shape = tuple(plain.inputs[0].shape[1:])
    xs, ys = _batches(rng, shape)
    path = str(tmp_path / "t.tflite")
    report = tflite_export.export_trainable(
        plain, path, _opt(), LOSS, batch_size=B, compare_dense=False,
        weight_storage=storage)
    assert report.flex_ops == []
    assert not any(op.startswith("CUSTOM") for op in report.operators)
    k_losses = [float(sparse.train_on_batch(x, y)) for x, y in zip(xs, ys)]
    return sparse, report, path, xs, ys, k_losses


def _train_litert(path, xs, ys):
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    w0 = interp.get_signature_runner("get_weights")()
    train = interp.get_signature_runner("train")
    losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(xs, ys)]
    return losses, w0, interp.get_signature_runner("get_weights")()


@pytest.mark.full
@pytest.mark.parametrize("name", sorted(MODELS))
def test_20_steps_match_sparse_keras_in_litert_and_tflite_runtime(
        tmp_path, rng, name):
    sparse, report, path, xs, ys, k_losses = _export_and_train_keras(
        tmp_path, rng, MODELS[name], "sparse")
    assert "SCATTER_ND" in report.operators
    losses, w0, w1 = _train_litert(path, xs, ys)
    _check(report, losses, w0, w1, sparse, k_losses)
    losses, w0, w1, _ = train_in_tflite_runtime(tmp_path, path, xs, ys)
    _check(report, losses, w0, w1, sparse, k_losses)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_resnet32_20_steps_match_sparse_keras(tmp_path, rng, storage):
    sparse, report, path, xs, ys, k_losses = _export_and_train_keras(
        tmp_path, rng, lambda: keras_sparse.models.cifar_resnet(
            32, input_shape=(16, 16, 1)), storage)
    losses, w0, w1 = _train_litert(path, xs, ys)
    _check(report, losses, w0, w1, sparse, k_losses)
    losses, w0, w1, _ = train_in_tflite_runtime(tmp_path, path, xs, ys)
    _check(report, losses, w0, w1, sparse, k_losses)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_dense_storage_20_steps_match_sparse_keras(tmp_path, rng, name):
    sparse, report, path, xs, ys, k_losses = _export_and_train_keras(
        tmp_path, rng, MODELS[name], "dense")
    losses, w0, w1 = _train_litert(path, xs, ys)
    _check(report, losses, w0, w1, sparse, k_losses)


@pytest.mark.full
def test_sparsified_model_exports_directly_with_its_masks(tmp_path, rng):
    model = keras_sparse.models.small_cnn((12, 12, 1))
    sparse = keras_sparse.sparsify(model, 0.8, distribution="erk", seed=0)
    plain = keras_sparse.strip(sparse)
    # A wrapper may hold values at pruned positions (e.g. when its forward
    # masks the kernel): the masks, not the values, decide what is pruned.
    conv = sparse.get_layer("conv2")
    _, kernel, mask = conv.masked_weights[0]
    pruned = np.asarray(mask) == 0
    kernel.assign(np.where(pruned, 5.0, np.asarray(kernel)))
    xs, ys = _batches(rng, (12, 12, 1))
    losses = {}
    for name, m in (("wrapped", sparse), ("stripped", plain)):
        path = str(tmp_path / f"{name}.tflite")
        report = tflite_export.export_trainable(
            m, path, _opt(), LOSS, batch_size=B, compare_dense=False,
            weight_storage="sparse")
        losses[name], w0, w1 = _train_litert(path, xs, ys)
        assert np.all(w0["conv2_kernel"][pruned] == 0.0)
        assert np.all(w1["conv2_kernel"][pruned] == 0.0)
        assert report.num_masked >= 2  # conv2 and fc1 at least
    np.testing.assert_allclose(losses["wrapped"], losses["stripped"],
                               rtol=1e-6)
    # The dense float32 reference is the model's weights alone (no masks).
    from tflite_export.convert import convert

    report = tflite_export.export_trainable(
        sparse, str(tmp_path / "w.tflite"), _opt(), LOSS, batch_size=B,
        weight_storage="sparse")
    plain_bytes = len(convert(plain, "float32", sparsity=False))
    assert abs(report.dense_inference_float32_bytes - plain_bytes) < \
        0.05 * plain_bytes
