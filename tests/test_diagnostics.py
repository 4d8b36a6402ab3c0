import keras
import numpy as np
import pytest

import keras_sparse as ks


def test_dormant_fraction_counts_dead_channels():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    d = keras.layers.Dense(4, activation="relu", name="d")
    x = d(inputs)
    x = keras.layers.Dense(3, name="lin")(x)
    out = keras.layers.Activation("relu", name="act")(x)
    model = keras.Model(inputs, out)
    kernel = np.eye(4, dtype=np.float32)
    kernel[:, 2] = -1.0  # channel 2 always negative on positive inputs: dormant
    kernel[:, 3] = -1.0
    d.set_weights([kernel, np.zeros(4, np.float32)])
    x_batch = np.random.default_rng(0).random((64, 4)).astype("float32") + 0.1
    result = ks.diagnostics.dormant_fraction(model, x_batch)
    assert result["d"] == pytest.approx(0.5)
    assert set(result) == {"d", "act", "all"}
    assert 0.0 <= result["all"] <= 1.0


@pytest.mark.full
def test_dormant_fraction_sees_wrapped_conv_and_relu_layer():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(8, name="fc"), keras.layers.ReLU(name="r"),
                              keras.layers.Dense(2)])
    sparse = ks.sparsify(model, 0.5, seed=0)
    result = ks.diagnostics.dormant_fraction(sparse, np.ones((4, 8, 8, 1), np.float32))
    assert set(result) == {"c", "r", "all"}


@pytest.mark.full
def test_dormant_fraction_bad_input():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no ReLU layer"):
        ks.diagnostics.dormant_fraction(model, np.ones((1, 2)))
    with pytest.raises(ValueError, match="threshold"):
        ks.diagnostics.dormant_fraction(model, np.ones((1, 2)), threshold=1.5)
