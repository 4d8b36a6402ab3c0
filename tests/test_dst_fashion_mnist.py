"""Real-data check: Model A on Fashion-MNIST, 1 epoch per method (slow)."""

import gzip
import os

import keras
import numpy as np
import pytest

import keras_sparse as ks

ROOT = "/usr/share/datasets/fashion-mnist"


def _idx(name):
    with gzip.open(os.path.join(ROOT, name)) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load():
    x = _idx("train-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    y = _idx("train-labels-idx1-ubyte.gz").astype("int64")
    xt = _idx("t10k-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    yt = _idx("t10k-labels-idx1-ubyte.gz").astype("int64")
    return x, y, xt, yt


def model_a():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),
    ])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(ROOT), reason="dataset-fashion-mnist not installed")
@pytest.mark.parametrize("method", ks.algorithms.registered_names())
def test_one_epoch_fashion_mnist(method):
    x, y, xt, yt = _load()
    keras.utils.set_random_seed(0)
    start = {"gmp": 0.0, "granet": 0.0, "granet_st": 0.5}.get(method, 0.9)
    model = ks.sparsify(model_a(), start, distribution="erk", seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    kw = {"sparsity": 0.9} if method in ("gmp", "granet", "granet_st") else {}
    cb = ks.callbacks.DynamicSparseTraining({"class_name": method, "config": {"seed": 0, **kw}})
    model.fit(x, y, batch_size=128, epochs=1, callbacks=[cb], verbose=0)
    masks = [m.numpy() for w in ks.sparse_wrappers(model) for _, _, m in w.masked_weights]
    sparsity = 1 - sum(m.sum() for m in masks) / sum(m.size for m in masks)
    assert sparsity == pytest.approx(0.9, abs=0.01)
    _, acc = model.evaluate(xt, yt, batch_size=1000, verbose=0)
    print(f"{method}: sparsity={sparsity:.4f} test_acc={acc:.4f}")
    assert acc > 0.6  # chance is 0.1
