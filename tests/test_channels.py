"""keras_sparse.channels and strip(remove_channels=True): exact physical channel removal."""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import channels

L = keras.layers


def _randomize(model, seed=0, scale=0.3):
    """Random weights everywhere, BN statistics and affine maps included."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            g, b, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, g.shape).astype("float32"),
                rng.normal(0, 0.5, b.shape).astype("float32"),
                rng.normal(0, 0.5, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, var.shape).astype("float32"),
            ])
        elif layer.weights:
            layer.set_weights([rng.normal(0, scale, w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


def _wrapper(model, name):
    return next(w for w in ks.sparse_wrappers(model) if w.name == name)


def _zero(model, name, axis, index):
    """Masks `kernel[..., index]` along `axis` of layer `name` (a SparseWrapper)."""
    w = _wrapper(model, name)
    for weight_name, weight, mask in w.masked_weights:
        if weight_name == "kernel":
            m = np.array(keras.ops.convert_to_numpy(mask))
            np.moveaxis(m, axis, 0)[index] = 0.0
            mask.assign(m)
            weight.assign(keras.ops.convert_to_numpy(weight) * m)


def _set_bn_output(model, bn_name, producer_name, channel, value):
    """Sets BN's beta so a channel whose producer outputs its bias gives `value` after BN."""
    bn = model.get_layer(bn_name)
    g, b, mean, var = bn.get_weights()
    inner = _wrapper(model, producer_name).layer
    bias = keras.ops.convert_to_numpy(inner.bias)[channel] if inner.use_bias else 0.0
    b[channel] = value - (bias - mean[channel]) * g[channel] / np.sqrt(var[channel] + bn.epsilon)
    bn.set_weights([g, b, mean, var])


def _sparse(model, sparsity=0.3):
    return ks.sparsify(_randomize(model), sparsity, distribution="uniform", keep_dense=None, seed=1)


def _assert_same_outputs(sparse, small, x):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(small(x)),
                               keras.ops.convert_to_numpy(sparse(x)), atol=1e-5, rtol=1e-5)


def _chain():
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(5, 3, padding="same", name="c2")(x)  # 'same': folds only zeros
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(4, 1, name="c3")(x)  # 1x1: folds any constant
    x = L.Flatten(name="flat")(x)  # channels spread over p * 4 + c
    x = L.Dense(7, activation="tanh", name="d1")(x)  # its own activation: tanh(bias)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


@pytest.mark.full
def test_strip_removes_channels_of_a_chain_with_equal_outputs():
    sparse = _sparse(_chain())
    # c1 channel 0: constant relu(BN(bias)), positive -> a 'same' 3x3
    # consumer cannot absorb it exactly -> kept. Channel 1: negative
    # constant -> ReLU gives 0 -> removed.
    _set_bn_output(sparse, "bn1", "c1", 0, 2.0)
    _set_bn_output(sparse, "bn1", "c1", 1, -2.0)
    _zero(sparse, "c1", -1, [0, 1])
    _zero(sparse, "c2", -1, [2])  # constant, non-zero, into a 1x1 conv: folded
    _zero(sparse, "c3", -1, [1, 3])  # through Flatten into Dense: folded
    _zero(sparse, "d1", -1, [4])
    counts = channels.channel_counts(sparse)
    assert counts == {"c1": (6, 5), "c2": (5, 4), "c3": (4, 2), "d1": (7, 6), "logits": (3, 3)}
    small = ks.strip(sparse, remove_channels=True)
    assert small.get_layer("c1").kernel.shape == (3, 3, 3, 5)
    assert small.get_layer("bn1").gamma.shape == (5,)
    assert small.get_layer("c2").kernel.shape == (3, 3, 5, 4)
    assert small.get_layer("c3").kernel.shape == (1, 1, 4, 2)
    assert small.get_layer("d1").kernel.shape == (4 * 4 * 2, 6)
    assert small.count_params() < ks.strip(sparse).count_params()
    x = np.random.default_rng(2).normal(size=(5, 8, 8, 3)).astype("float32")
    _assert_same_outputs(sparse, small, x)


def test_strip_without_remove_channels_is_unchanged():
    sparse = _sparse(_chain())
    _zero(sparse, "d1", -1, [4])
    plain = ks.strip(sparse)
    assert plain.get_layer("d1").kernel.shape == (4 * 4 * 4, 7)


def _resnet():
    return ks.models.cifar_resnet(depth=8, input_shape=(8, 8, 3), num_classes=3, width=4)


@pytest.mark.full
def test_strip_removes_channels_of_a_resnet_with_add():
    sparse = _sparse(_resnet())
    graph = channels.analyze(sparse)
    # An inner block channel (no merge): its 3x3 'same' consumer slice is
    # masked too, as Chase leaves it.
    _zero(sparse, "stage1_block1_1_conv", -1, [1])
    _zero(sparse, "stage1_block1_2_conv", -2, [1])
    # A residual channel: the stem and every conv feeding the stage-1 Adds,
    # its 3x3 consumers' slices masked, the 1x1 projection shortcut of
    # stage 2 left as is (the constant is folded into a new bias there).
    group = graph.groups[graph.group_of(_wrapper(sparse, "stem_conv"))]
    producers = sorted(p.name for p in group.producers)
    assert producers == ["stage1_block1_2_conv", "stem_conv"]
    for name in producers:
        _zero(sparse, name, -1, [2])
    _set_bn_output(sparse, "stem_bn", "stem_conv", 2, 1.0)  # relu(1.0 + 0.5) reaches
    _set_bn_output(sparse, "stage1_block1_2_bn", "stage1_block1_2_conv", 2, 0.5)  # the 1x1
    for use in group.uses:
        if use.layer.name != "stage2_block1_shortcut_conv":
            _zero(sparse, use.layer.name, -2, [2])
    # A channel masked in one branch of the Add only: must stay.
    _zero(sparse, "stem_conv", -1, [3])
    counts = channels.channel_counts(sparse)
    assert counts["stem_conv"] == (4, 3) and counts["stage1_block1_2_conv"] == (4, 3)
    assert counts["stage1_block1_1_conv"] == (4, 3)
    small = ks.strip(sparse, remove_channels=True)
    assert small.get_layer("stage2_block1_shortcut_conv").kernel.shape == (1, 1, 3, 8)
    assert small.get_layer("stage2_block1_shortcut_conv").use_bias  # constant folded in
    assert small.get_layer("stage1_block1_add").output.shape[-1] == 3
    assert small.count_params() < ks.strip(sparse).count_params()
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype("float32")
    _assert_same_outputs(sparse, small, x)


def _depthwise_net():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, name="pw1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.Conv2D(5, 1, name="pw2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


@pytest.mark.full
def test_strip_removes_channels_through_depthwise_conv():
    sparse = _sparse(_depthwise_net())
    # Channel 1 of pw1 and its depthwise slice: the depthwise outputs 2, 3
    # are then its bias (constant), folded into pw2.
    _zero(sparse, "pw1", -1, [1])
    _zero(sparse, "dw", -2, [1])
    # Channel 4 of pw1 only: its constant meets a 3x3 'same' depthwise with
    # non-zero weights -> not uniform at the borders -> kept.
    _set_bn_output(sparse, "bn1", "pw1", 4, 2.0)
    _zero(sparse, "pw1", -1, [4])
    _zero(sparse, "pw2", -1, [0])
    counts = channels.channel_counts(sparse)
    assert counts["pw1"] == (6, 5) and counts["dw"] == (12, 10) and counts["pw2"] == (5, 4)
    small = ks.strip(sparse, remove_channels=True)
    assert small.get_layer("dw").kernel.shape == (3, 3, 5, 2)
    assert small.get_layer("bn2").gamma.shape == (10,)
    assert small.get_layer("pw2").kernel.shape == (1, 1, 10, 4)
    assert small.get_layer("logits").kernel.shape == (4, 3)
    x = np.random.default_rng(4).normal(size=(3, 8, 8, 3)).astype("float32")
    _assert_same_outputs(sparse, small, x)


def test_sequential_model_is_supported():
    model = keras.Sequential([keras.Input((6,)), L.Dense(5, name="h"), L.ReLU(),
                              L.Dense(2, name="out")])
    sparse = _sparse(model)
    _zero(sparse, "h", -1, [0, 3])
    small = ks.strip(sparse, remove_channels=True)
    assert small.get_layer("h").kernel.shape == (6, 3)
    _assert_same_outputs(sparse, small, np.random.default_rng(5).normal(size=(4, 6)).astype("float32"))


@pytest.mark.full
def test_nothing_removable_returns_the_same_model():
    sparse = _sparse(_chain(), sparsity=0.2)
    plain = ks.strip(sparse)
    same = ks.strip(sparse, remove_channels=True)
    assert type(same) is type(plain)
    assert [tuple(w.shape) for w in same.weights] == [tuple(w.shape) for w in plain.weights]
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same_outputs(sparse, same, x)


def test_model_output_and_concatenate_lock_channels():
    inputs = keras.Input((4,))
    a = L.Dense(3, name="a")(inputs)
    b = L.Dense(3, name="b")(inputs)
    x = L.Concatenate(name="cat")([a, b])
    out = L.Dense(2, name="out")(x)
    sparse = _sparse(keras.Model(inputs, out))
    _zero(sparse, "a", -1, [0])
    _zero(sparse, "out", -1, [1])
    counts = channels.channel_counts(sparse)
    assert counts["a"] == (3, 3) and counts["out"] == (2, 2)
    graph = channels.analyze(sparse)
    assert "cat" in graph.groups[graph.group_of(_wrapper(sparse, "a"))].locked
    assert graph.groups[graph.group_of(_wrapper(sparse, "out"))].locked == "a model output"


def test_stateless_ops_lock_channels_and_are_rebuilt():
    inputs = keras.Input((6,))
    a = L.Dense(5, name="a")(inputs)
    h = L.Dense(4, name="h")(keras.ops.relu(a) + 1.0)
    out = L.Dense(2, name="out")(L.ReLU(name="r")(h))
    plain = _randomize(keras.Model(inputs, out))
    for name, channel in (("a", 0), ("h", 1)):
        kernel = plain.get_layer(name).kernel
        k = keras.ops.convert_to_numpy(kernel).copy()
        k[:, channel] = 0.0
        kernel.assign(k)
    assert channels.channel_counts(plain) == {"a": (5, 5), "h": (4, 3), "out": (2, 2)}
    small = channels.remove_channels(plain)
    assert small.get_layer("h").kernel.shape == (5, 3)
    _assert_same_outputs(plain, small, np.random.default_rng(7).normal(size=(3, 6)).astype("float32"))


def test_softmax_locks_channels():
    inputs = keras.Input((6,))
    a = L.Dense(5, activation="softmax", name="a")(inputs)
    b = L.Dense(4, name="b")(a)
    out = L.Dense(2, name="out")(L.Activation("softmax", name="sm")(b))
    sparse = _sparse(keras.Model(inputs, out))
    _zero(sparse, "a", -1, [0])
    _zero(sparse, "b", -1, [0])
    assert channels.channel_counts(sparse) == {"a": (5, 5), "b": (4, 4), "out": (2, 2)}


def test_a_fully_masked_layer_keeps_one_channel():
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, name="h"), L.Dense(2, name="out")])
    sparse = _sparse(model)
    _zero(sparse, "h", -1, [0, 1, 2, 3])
    small = ks.strip(sparse, remove_channels=True)
    assert small.get_layer("h").kernel.shape == (6, 1)
    _assert_same_outputs(sparse, small, np.ones((2, 6), "float32"))


@pytest.mark.full
def test_sparsity_report_gives_channels_before_and_after():
    sparse = _sparse(_chain())
    _zero(sparse, "d1", -1, [4, 5])
    report = ks.sparsity_report(sparse)
    row = {r.layer: r for r in report.rows}["d1"]
    assert (row.channels_before, row.channels_after) == (7, 5)
    assert report.to_dict()["rows"][0]["channels_before"] == 6
    lines = []
    ks.summary(sparse, print_fn=lines.append)
    assert "7->5" in lines[0]


@pytest.mark.full
def test_bad_input_raises():
    sparse = _sparse(_chain())
    with pytest.raises(TypeError, match="remove_channels"):
        ks.strip(sparse, remove_channels="yes")
    with pytest.raises(TypeError, match="SparseWrapper"):
        channels.remove_channels(sparse)
    with pytest.raises(TypeError, match="keras.Model"):
        channels.remove_channels("model")

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        ks.strip(Sub(), remove_channels=True)
    shared = L.Dense(4, name="shared")
    inputs = keras.Input((4,))
    twice = keras.Model(inputs, shared(shared(inputs)))
    with pytest.raises(ValueError, match="more than once"):
        channels.analyze(twice)
