"""Real-data check: Model A on Fashion-MNIST, 1 epoch per method (slow)."""

import keras
import pytest

import keras_sparse as ks
from keras_sparse.models import small_cnn


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("method", ks.algorithms.registered_names())
def test_one_epoch_fashion_mnist(method, fashion_mnist):
    (x, y), (xt, yt) = fashion_mnist
    keras.utils.set_random_seed(0)
    start = {"gmp": 0.0, "granet": 0.0, "granet_st": 0.5}.get(method, 0.9)
    model = ks.sparsify(small_cnn(), start, distribution="erk", seed=0)
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
