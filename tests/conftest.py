"""Shared pytest set-up: quiet TensorFlow, Keras on the TF backend, fresh state."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def skip_or_fail_in_ci(reason: str):
    """Skip a test whose prerequisite is missing; under CI (``CI`` set) that is
    a set-up bug, so fail instead: CI must never pass by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"missing prerequisite under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def fashion_mnist():
    """The real Fashion-MNIST arrays from Debian's dataset-fashion-mnist."""
    from keras_sparse.datasets import load_fashion_mnist

    try:
        return load_fashion_mnist(allow_download=False)
    except FileNotFoundError as e:
        skip_or_fail_in_ci(str(e))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


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
    import keras_sparse

    for wrapper in keras_sparse.sparse_wrappers(model):
        for _, weight, mask in wrapper.masked_weights:
            if np.any(weight.numpy()[mask.numpy() == 0] != 0.0):
                return False
    return True
