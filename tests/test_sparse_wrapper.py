import keras
import numpy as np
import pytest

import keras_sparse
from keras_sparse.layers import SparseWrapper, register_prunable_weights

from testing import all_masked_entries_zero

# (layer factory, input shape, masked weight names)
LAYER_CASES = {
    "dense": (lambda: keras.layers.Dense(6), (5,), ["kernel"]),
    "einsum_dense": (lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=6), (5,), ["kernel"]),
    "conv1d": (lambda: keras.layers.Conv1D(4, 3), (9, 3), ["kernel"]),
    "conv2d": (lambda: keras.layers.Conv2D(4, 3), (7, 7, 3), ["kernel"]),
    "conv3d": (lambda: keras.layers.Conv3D(4, 2), (4, 4, 4, 2), ["kernel"]),
    "depthwise_conv2d": (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (7, 7, 3), ["kernel"]),
    "separable_conv2d": (
        lambda: keras.layers.SeparableConv2D(4, 3),
        (7, 7, 3),
        ["depthwise_kernel", "pointwise_kernel"],
    ),
    "conv2d_transpose": (lambda: keras.layers.Conv2DTranspose(4, 3), (5, 5, 3), ["kernel"]),
    "embedding": (lambda: keras.layers.Embedding(20, 6), (7,), ["embeddings"]),
}


def _model_around(layer, input_shape):
    is_embedding = isinstance(layer.layer if isinstance(layer, SparseWrapper) else layer, keras.layers.Embedding)
    inputs = keras.Input(input_shape, dtype="int32" if is_embedding else "float32")
    x = keras.layers.Flatten()(layer(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def _data(input_shape, is_embedding, n=16):
    rng = np.random.default_rng(0)
    if is_embedding:
        x = rng.integers(0, 20, size=(n, *input_shape))
    else:
        x = rng.normal(size=(n, *input_shape)).astype("float32")
    return x, rng.normal(size=(n, 1)).astype("float32")


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_layer_type_keeps_pruned_weights_zero_after_training(case):
    factory, input_shape, names = LAYER_CASES[case]
    wrapper = SparseWrapper(factory(), sparsity=0.5, seed=1)
    model = _model_around(wrapper, input_shape)
    assert [w.name for w in wrapper.masked_weights] == names
    assert [m.name for _, _, m in wrapper.masked_weights] == [f"{n}_mask" for n in names]
    before = [w.numpy().copy() for _, w, _ in wrapper.masked_weights]
    for _, _weight, mask in wrapper.masked_weights:
        assert mask.numpy().sum() == keras_sparse.masks.num_active(int(np.prod(mask.shape)), 0.5)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    x, y = _data(input_shape, case == "embedding")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 2 steps
    assert all_masked_entries_zero(model)
    # Training really happened on the kept entries.
    after = [w.numpy() for _, w, _ in wrapper.masked_weights]
    assert any(not np.allclose(a, b) for a, b in zip(after, before))


def test_user_constraint_still_applied():
    layer = keras.layers.Dense(8, kernel_constraint=keras.constraints.NonNeg())
    wrapper = SparseWrapper(layer, sparsity=0.5, seed=0)
    model = _model_around(wrapper, (6,))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x, y = _data((6,), False, n=32)
    model.fit(x, -np.abs(y) - 1, batch_size=8, epochs=2, verbose=0)
    kernel = wrapper.layer.kernel.numpy()
    assert kernel.min() >= 0.0  # NonNeg still enforced
    assert np.all(kernel[wrapper.kernel_mask.numpy() == 0] == 0.0)


@pytest.mark.full
def test_shared_layer_called_twice_has_one_mask():
    wrapper = SparseWrapper(keras.layers.Dense(4), sparsity=0.75, seed=0)
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], keras.layers.Add()([wrapper(a), wrapper(b)]))
    assert len(wrapper.masked_weights) == 1
    model.compile("sgd", "mse")
    x = np.random.rand(8, 4).astype("float32")
    model.fit([x, x], x, epochs=1, verbose=0)
    assert all_masked_entries_zero(model)


def test_custom_layer_opts_in_by_registration_and_by_hook():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 3), name="w")

        def call(self, x):
            return x @ self.w

    class Hooked(Scale):
        def get_prunable_weights(self):
            return [self.w]

    with pytest.raises(TypeError, match="has no prunable weights"):
        SparseWrapper(Scale())
    wrapper = SparseWrapper(Hooked(), sparsity=0.5, seed=0)
    wrapper.build((None, 4))
    assert [m.name for _, _, m in wrapper.masked_weights] == ["w_mask"]

    register_prunable_weights(Scale, ["w"])
    wrapper = SparseWrapper(Scale(), sparsity=0.5, seed=0)
    wrapper.build((None, 4))
    assert wrapper.masked_weights[0].mask.numpy().sum() == 6


def test_dict_sparsity_per_weight_and_unknown_weight_name():
    wrapper = SparseWrapper(
        keras.layers.SeparableConv2D(8, 3), sparsity={"pointwise_kernel": 0.75}, seed=0
    )
    wrapper.build((None, 6, 6, 4))
    densities = {n: m.numpy().mean() for n, _, m in wrapper.masked_weights}
    assert densities == {"depthwise_kernel": 1.0, "pointwise_kernel": 0.25}
    bad = SparseWrapper(keras.layers.Dense(3), sparsity={"bias": 0.5})
    with pytest.raises(ValueError, match=r"Accepted names: \['kernel'\]"):
        bad.build((None, 4))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((keras.layers.ReLU(),), TypeError, "has no prunable weights"),
        (("dense",), TypeError, "must be a keras.layers.Layer"),
        ((keras.layers.Dense(2), 1.0), ValueError, r"\[0, 1\)"),
        ((keras.layers.Dense(2), -0.5), ValueError, r"\[0, 1\)"),
        ((keras.layers.Dense(2), 0.5, -3), TypeError, "seed"),
    ],
)
def test_bad_input_raises_clear_errors(args, error, match):
    with pytest.raises(error, match=match):
        SparseWrapper(*args)


def test_already_wrapped_layer_is_rejected():
    inner = SparseWrapper(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="already a SparseWrapper"):
        SparseWrapper(inner)


def test_config_round_trip_gives_same_masks():
    wrapper = SparseWrapper(keras.layers.Conv2D(4, 3, name="c"), sparsity=0.6, seed=7)
    config = wrapper.get_config()
    assert config["sparsity"] == 0.6 and config["seed"] == 7 and config["name"] == "c"
    clone = SparseWrapper.from_config(config)
    wrapper.build((None, 8, 8, 2))
    clone.build((None, 8, 8, 2))
    np.testing.assert_array_equal(wrapper.kernel_mask.numpy(), clone.kernel_mask.numpy())


def test_zero_sparsity_is_noop():
    layer = keras.layers.Dense(5)
    wrapper = SparseWrapper(layer, sparsity=0.0, seed=0)
    x = np.random.rand(3, 4).astype("float32")
    y = wrapper(x)
    np.testing.assert_array_equal(wrapper.kernel_mask.numpy(), np.ones((4, 5)))
    np.testing.assert_allclose(y, layer(x))


@pytest.mark.full
def test_wrapping_a_built_layer_keeps_its_weights_on_kept_entries():
    layer = keras.layers.Dense(5)
    layer.build((None, 4))
    original = layer.kernel.numpy().copy()
    wrapper = SparseWrapper(layer, sparsity=0.5, seed=0)
    wrapper.build((None, 4))
    mask = wrapper.kernel_mask.numpy()
    np.testing.assert_array_equal(layer.kernel.numpy(), original * mask)


def test_pruned_entries_stay_zero_even_when_weights_blow_up():
    wrapper = SparseWrapper(keras.layers.Dense(3), sparsity=0.5, seed=0)
    wrapper.build((None, 4))
    kernel = wrapper.layer.kernel
    kernel.assign(np.full((4, 3), np.nan, dtype="float32"))
    kernel.assign(kernel.constraint(kernel))
    mask = wrapper.kernel_mask.numpy()
    assert np.all(kernel.numpy()[mask == 0] == 0.0)
    assert np.all(np.isnan(kernel.numpy()[mask == 1]))
