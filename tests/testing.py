"""Helpers shared by several test files (import from here, never from a test file)."""

import os

import keras
import numpy as np
import pytest

import keras_sparse
import keras_sparse as ks
from keras_sparse import algorithms as alg
from keras_sparse import masks as mm

def masks_of(model) -> list:
    """Copies of every mask of `model`, in a fixed order."""
    return [m.numpy().copy() for w in keras_sparse.sparse_wrappers(model)
            for _, _, m in w.masked_weights]


def assert_export_choice_holds(inference_result: dict) -> None:
    """The inference file is the sparse (smaller) one, or the measurably faster dense one.

    `inference_result` holds `bytes`, `dense_float32_bytes` and the report's
    `encoding_choice` (`tflite_export.export_inference`, `optimize="latency"`).
    """
    c = inference_result["encoding_choice"]
    if c["chosen"] == "sparse":
        assert inference_result["bytes"] < inference_result["dense_float32_bytes"]
    else:
        assert c["dense_latency_us"] < c["sparse_latency_us"]


def skip_or_fail_in_ci(reason: str):
    """Skip a test whose prerequisite is missing; under CI (``CI`` set) that is
    a set-up bug, so fail instead: CI must never pass by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"missing prerequisite under CI: {reason}")
    pytest.skip(reason)


# Simulated kills and small models.

class Interrupt(Exception):
    """Raised by `KillAt`: a simulated kill of a training run."""


class KillAt(keras.callbacks.Callback):
    """Kills `fit` (raises `Interrupt`) at the start of epoch `epoch`."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt(f"simulated kill at epoch {epoch}")


def small_cnn_functional(input_shape=(12, 12, 1), num_classes=4):
    """A tiny version of docs/benchmark_protocol.md's Model A for fast tests."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs)


def all_masked_entries_zero(model) -> bool:
    for wrapper in keras_sparse.sparse_wrappers(model):
        for _, weight, mask in wrapper.masked_weights:
            if np.any(weight.numpy()[mask.numpy() == 0] != 0.0):
                return False
    return True


# A DST fit on a tiny Conv2D + Dense model, for every registered method.

GRADUAL = {"gmp", "granet", "granet_st"}
METHODS = alg.registered_names()
# Every (method, structure) pair the method accepts (Chase: unstructured only).
METHOD_STRUCTURES = [(m, s) for m in METHODS for s in alg.get(m).structures]


def make_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(4)(x)
    return keras.Model(inputs, outputs)


def data(n=96):
    rng = np.random.default_rng(0)
    return rng.random((n, 6, 6, 4)).astype("float32"), rng.integers(0, 4, n)


def sparse_model(method, structure, optimizer="adam", spe=1, jit=False, block_size=None):
    start = 0.0 if method in ("gmp", "granet") else 0.5 if method == "granet_st" else 0.8
    if structure == "n:m" and start < 0.5:
        start = 0.5
    model = ks.sparsify(make_model(), start, distribution="uniform", keep_dense=None,
                        seed=0, structure=structure, block_size=block_size)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=spe, jit_compile=jit)
    return model


def algorithm(method, structure, interval=2, seed=0):
    kw = dict(update_interval=interval, structure=structure, seed=seed)
    if method in GRADUAL:
        kw["sparsity"] = 0.8
    if method in ("set", "rigl", "mest", "neurrev"):
        kw["drop_fraction_decay"] = "constant"
    return alg.get({"class_name": method, "config": kw})


class Checker(keras.callbacks.Callback):
    """After each batch: masks binary, pruned weights zero, structure kept
    (each weight's own, `SparseWrapper.structure_of`: block size, fallback)."""

    def __init__(self, structure):
        super().__init__()
        self.structure = structure
        self.history = []

    def on_train_batch_end(self, batch, logs=None):
        counts = []
        for w in ks.sparse_wrappers(self.model):
            for name, weight, mask in w.masked_weights:
                m, v = mask.numpy(), weight.numpy()
                assert set(np.unique(m)) <= {0.0, 1.0}
                assert np.all(v[m == 0] == 0.0)
                structure = w.structure_of(name)
                assert structure.kind in (self.structure, "unstructured")
                if structure.kind == "block":
                    u = mm.to_blocks(m, block_size=structure.block_size)
                    assert np.all((u == 0) | (u == 1))
                if structure.kind == "n:m":
                    assert mm._grouped(m).sum(axis=-2).max() <= 2
                counts.append(int(m.sum()))
        self.history.append(counts)


# Algorithm updates driven directly on tiny tensors.

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


# Checks every public class goes through (tests/test_public_api.py).


def run_serialization_test(obj) -> None:
    """`obj` survives `get_config` / `from_config` and Keras (de)serialization unchanged."""
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert type(clone) is type(obj)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj)
    assert restored.get_config() == config


def run_layer_test(layer, input_shape, sparsity: float = 0.5) -> None:
    """`layer`, wrapped in `SparseWrapper`, builds, masks its forward pass exactly
    (output == the stripped layer's), and survives a `.keras`-style config round trip."""
    wrapper = ks.layers.SparseWrapper(layer, sparsity=sparsity, seed=0)
    x = np.random.default_rng(0).standard_normal((2, *input_shape)).astype("float32")
    model = keras.Sequential([keras.Input(input_shape), wrapper])
    out = np.asarray(model(x))
    for _, weight, mask in wrapper.masked_weights:
        m = mask.numpy()
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert np.all(weight.numpy()[m == 0] == 0.0)
    np.testing.assert_allclose(np.asarray(ks.strip(model)(x)), out, rtol=1e-5, atol=1e-6)
    clone = keras.Sequential.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), out, rtol=1e-5, atol=1e-6)


def run_updater_invariants(method: str, structure: str = "unstructured", epochs: int = 1) -> list[list[int]]:
    """Trains the tiny model of `make_model` with the registered algorithm `method`
    (`algorithm(method, structure)`: an update every 2 steps) under `DynamicSparseTraining`
    and checks after every batch: binary masks, pruned weights exactly zero, `structure` kept.
    Returns the per-batch non-zero counts (per masked weight)."""
    model = sparse_model(method, structure)
    checker = Checker(structure)
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
              callbacks=[ks.callbacks.DynamicSparseTraining(algorithm(method, structure)), checker])
    return checker.history
