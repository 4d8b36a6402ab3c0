"""Tests of `tflite_export.check_xnnpack_sparse` (static layout check)."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_sparse
import tflite_export
from tflite_export import xnnpack


def mobilenet_like(stem="pad_valid", mid_conv=None, bn_after_relu=False,
                   head="gap", stride2_dw="pad_valid", input_channels=3):
    """A tiny MobileNet-style net: stem, inverted residual, stride-2
    depthwise, 1x1 head conv, global average pooling, Dense logits."""
    x = inp = keras.Input((16, 16, input_channels), name="image")
    if stem == "pad_valid":
        x = layers.ZeroPadding2D(1, name="stem_pad")(x)
        x = layers.Conv2D(8, 3, strides=2, padding="valid",
                          name="stem_conv")(x)
    elif stem == "same":
        x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(x)
    elif stem == "stride1":
        x = layers.Conv2D(8, 3, padding="same", name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    y = layers.Conv2D(16, 1, use_bias=False, name="expand")(x)
    y = layers.BatchNormalization(name="expand_bn")(y)
    y = layers.ReLU(6.0, name="expand_relu")(y)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    if bn_after_relu:
        y = layers.ReLU(name="dw_relu")(y)
        y = layers.BatchNormalization(name="late_bn")(y)
    if mid_conv == "3x3":
        y = layers.Conv2D(16, 3, padding="same", name="mid_conv")(y)
    y = layers.Conv2D(8, 1, name="project")(y)
    x = layers.Add(name="add")([x, y])
    if stride2_dw == "pad_valid":
        x = layers.ZeroPadding2D(1, name="dw2_pad")(x)
        x = layers.DepthwiseConv2D(3, strides=2, padding="valid", name="dw2")(x)
    else:
        x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw2")(x)
    x = layers.Conv2D(32, 1, activation="relu", name="head_conv")(x)
    if head == "gap":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="mobilenet_like")


ONE_BY_ONE = ("expand", "project", "head_conv")


def stem(x):
    x = layers.ZeroPadding2D(1, name="stem_pad")(x)
    return layers.Conv2D(8, 3, strides=2, name="stem_conv")(x)


def sparse(model, sparsity=0.8, **per_layer):
    """Sparsify every prunable layer uniformly, or the named ones."""
    if per_layer:
        return keras_sparse.sparsify(model, 0.0, distribution=per_layer, seed=0)
    return keras_sparse.sparsify(model, sparsity, distribution="uniform",
                                 keep_dense=None, seed=0)


def by_name(report):
    return {layer.name: layer for layer in report.layers}


def test_qualifying_net_passes_with_sparse_wrappers():
    report = tflite_export.check_xnnpack_sparse(sparse(mobilenet_like()))
    assert report.qualifies, report.to_markdown()
    assert report.reasons == ()
    assert report.failing_layers == ()
    layers_ = by_name(report)
    assert layers_["stem_conv"].role == "stem"
    assert layers_["gap"].role == "head"
    assert layers_["logits"].role == "outside"
    assert {n for n, c in layers_.items() if c.role == "sparse_conv"} == set(
        ONE_BY_ONE)
    assert layers_["dw2_pad"].reason == "folded into dw2"
    # Pooled count equals the masked zeros of the three 1x1 kernels.
    assert report.conv1x1_params == 8 * 16 + 16 * 8 + 8 * 32
    assert report.conv1x1_zeros == sum(
        layers_[n].conv1x1_zeros for n in ONE_BY_ONE)
    assert report.conv1x1_sparsity > xnnpack.MIN_ZERO_FRACTION


@pytest.mark.full
def test_share_counts_prunable_entries_of_eligible_layers():
    model = sparse(mobilenet_like())
    report = tflite_export.check_xnnpack_sparse(model)
    prunable = sum(int(np.prod(w.shape)) for wrapper in
                   keras_sparse.sparse_wrappers(model)
                   for _, w, _ in wrapper.masked_weights)
    assert report.prunable_params == prunable
    assert report.eligible_params == report.conv1x1_params
    assert report.eligible_share == pytest.approx(
        report.conv1x1_params / prunable)
    assert 0.0 < report.eligible_share < 1.0


@pytest.mark.full
def test_stripped_model_reads_zeros_from_kernels():
    model = sparse(mobilenet_like())
    wrapped = tflite_export.check_xnnpack_sparse(model)
    stripped = tflite_export.check_xnnpack_sparse(keras_sparse.strip(model))
    assert stripped.qualifies
    assert stripped.conv1x1_zeros == wrapped.conv1x1_zeros
    assert stripped.prunable_params == wrapped.prunable_params


def test_sequential_model_is_read_as_a_chain():
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.ZeroPadding2D(1),
        layers.Conv2D(8, 3, strides=2, name="stem_conv"),
        layers.Conv2D(16, 1, name="pw"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(4),
    ])
    report = tflite_export.check_xnnpack_sparse(sparse(model, 0.9))
    assert report.qualifies, report.to_markdown()
    assert by_name(report)["pw"].role == "sparse_conv"


def test_same_padded_stride2_stem_is_the_failing_layer():
    report = tflite_export.check_xnnpack_sparse(
        sparse(mobilenet_like(stem="same")))
    assert not report.qualifies
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert list(failing) == ["stem_conv"]
    assert "padding='same' with stride 2" in failing["stem_conv"]
    assert "ZeroPadding2D(1)" in failing["stem_conv"]
    assert any(r.startswith("no stem") for r in report.reasons)


def test_net_without_stride2_stem_names_its_first_conv():
    report = tflite_export.check_xnnpack_sparse(
        sparse(mobilenet_like(stem="stride1")))
    assert not report.qualifies
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert failing == {"stem_conv": "not a stem: strides (1, 1) (needs 2)"}


@pytest.mark.full
def test_stem_needs_three_input_channels():
    report = tflite_export.check_xnnpack_sparse(
        sparse(mobilenet_like(input_channels=1)))
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert failing == {"stem_conv": "not a stem: 1 input channels (needs 3)"}


def test_asymmetric_stem_padding_is_not_a_stem():
    x = inp = keras.Input((16, 16, 3))
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.Conv2D(8, 3, strides=2, name="stem_conv")(x)
    x = layers.Conv2D(8, 1)(x)
    out = layers.GlobalAveragePooling2D()(x)
    report = tflite_export.check_xnnpack_sparse(
        sparse(keras.Model(inp, out), 0.9))
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert failing == {"stem_conv": "not a stem: padding ((0, 1), (0, 1)) "
                                    "(needs 1 on each side)"}


def test_padded_1x1_conv_blocks_it():
    x = inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 1, name="pw")(layers.ZeroPadding2D(1)(stem(x)))
    out = layers.GlobalAveragePooling2D()(x)
    report = tflite_export.check_xnnpack_sparse(
        sparse(keras.Model(inp, out), 0.9))
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert failing == {"pw": "1x1 Conv2D with padding ((1, 1), (1, 1)) "
                             "(needs none)"}


def test_padding_folds_into_stride1_same_depthwise_too():
    # XNNPACK folds a PAD into a convolution whose SAME padding it made
    # explicit (stride 1): 1 + 1 on each side is not a 3x3 depthwise's 1.
    x = inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 1, name="pw")(stem(x))
    x = layers.ZeroPadding2D(1, name="pad")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2D(8, 1, name="pw2")(x)
    out = layers.GlobalAveragePooling2D()(x)
    report = tflite_export.check_xnnpack_sparse(
        sparse(keras.Model(inp, out), 0.9))
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert failing == {"dw": "depthwise padding ((2, 2), (2, 2)) (needs 1 on "
                             "each side)"}
    assert by_name(report)["pad"].reason == "folded into dw"


def test_3x3_conv_inside_the_subgraph_blocks_it():
    report = tflite_export.check_xnnpack_sparse(
        sparse(mobilenet_like(mid_conv="3x3")))
    assert not report.qualifies
    failing = {layer.name: layer for layer in report.failing_layers}
    assert list(failing) == ["mid_conv"]
    assert failing["mid_conv"].role == "blocking"
    assert failing["mid_conv"].reason.startswith(
        "Conv2D 3x3 inside the sparse subgraph")
    assert "mid_conv" in report.reasons[-1]


@pytest.mark.full
def test_same_padded_stride2_depthwise_blocks_it():
    report = tflite_export.check_xnnpack_sparse(
        sparse(mobilenet_like(stride2_dw="same")))
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert list(failing) == ["dw2"]
    assert "padding='same' with stride 2" in failing["dw2"]


def test_unfoldable_batchnorm_blocks_it():
    report = tflite_export.check_xnnpack_sparse(
        sparse(mobilenet_like(bn_after_relu=True)))
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert list(failing) == ["late_bn"]
    assert "cannot fold it" in failing["late_bn"]


def test_without_gap_head_the_blocking_layer_is_reported():
    report = tflite_export.check_xnnpack_sparse(
        sparse(mobilenet_like(head="flatten")))
    assert not report.qualifies
    assert [layer.name for layer in report.failing_layers] == ["flatten"]


def test_too_low_sparsity_on_one_1x1_conv_is_reported():
    # 1x1 kernels: expand 128 and project 128 entries at 90%, head_conv 256
    # at 20%: pooled (115 + 115 + 51) / 512 = 54.9% <= 2/3.
    model = sparse(mobilenet_like(), expand=0.9, project=0.9, head_conv=0.2,
                   logits=0.5)
    report = tflite_export.check_xnnpack_sparse(model)
    assert not report.qualifies
    layers_ = by_name(report)
    zeros = [layers_[n].conv1x1_zeros for n in ONE_BY_ONE]
    params = [layers_[n].conv1x1_params for n in ONE_BY_ONE]
    assert params == [128, 128, 256]
    assert report.conv1x1_zeros == sum(zeros)
    assert sum(zeros) * 3 <= sum(params) * 2
    assert [layer.name for layer in report.failing_layers] == ["head_conv"]
    assert "at most 2/3" in layers_["head_conv"].reason
    assert layers_["head_conv"].role == "sparse_conv"
    assert "XNNPACK needs more than 2/3" in report.reasons[0]


def test_threshold_is_strictly_more_than_two_thirds():
    # Plain model, zeros written by hand: exactly 2/3 fails, one more passes.
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.ZeroPadding2D(1),
        layers.Conv2D(4, 3, strides=2, name="stem_conv"),
        layers.Conv2D(6, 1, name="pw"),  # 4 x 6 = 24 entries
        layers.GlobalAveragePooling2D(),
    ])
    kernel, bias = model.get_layer("pw").get_weights()
    flat = np.ones(kernel.size, np.float32)
    flat[:16] = 0.0  # 16 / 24 = 2/3 exactly
    model.get_layer("pw").set_weights([flat.reshape(kernel.shape), bias])
    assert not tflite_export.check_xnnpack_sparse(model).qualifies
    flat[16] = 0.0  # 17 / 24
    model.get_layer("pw").set_weights([flat.reshape(kernel.shape), bias])
    report = tflite_export.check_xnnpack_sparse(model)
    assert report.qualifies
    assert (report.conv1x1_zeros, report.conv1x1_params) == (17, 24)


def test_squeeze_excite_and_conv_classifier_qualify():
    # SE block (GAP keepdims -> 1x1 convs -> sigmoid -> Multiply) inside the
    # subgraph; a 1x1 conv classifier on the pooled 1x1 map, then Flatten.
    x = inp = keras.Input((16, 16, 3))
    x = stem(x)
    x = layers.SeparableConv2D(16, 3, padding="same", name="sep")(x)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = layers.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = layers.Multiply(name="se_mul")([x, s])
    x = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = layers.Conv2D(10, 1, name="classifier")(x)
    out = layers.Flatten(name="flatten")(x)
    model = sparse(keras.Model(inp, out), 0.9)
    report = tflite_export.check_xnnpack_sparse(model)
    assert report.qualifies, report.to_markdown()
    layers_ = by_name(report)
    assert layers_["se_pool"].reason == "pools inside the sparse subgraph"
    assert layers_["gap"].reason == "pools inside the sparse subgraph"
    assert layers_["flatten"].role == "outside"
    # SeparableConv2D counts its pointwise kernel (8 x 16), not its 3x3 part.
    assert layers_["sep"].role == "sparse_conv"
    assert layers_["sep"].conv1x1_params == 8 * 16
    assert {n for n, c in layers_.items() if c.role == "sparse_conv"} == {
        "sep", "se_reduce", "se_expand", "classifier"}


def test_model_output_inside_the_subgraph_blocks_it():
    inp = keras.Input((16, 16, 3))
    x = stem(inp)
    mid = layers.Conv2D(8, 1, name="mid")(x)
    out = layers.GlobalAveragePooling2D(name="gap")(mid)
    model = sparse(keras.Model(inp, [out, mid]), 0.9)
    report = tflite_export.check_xnnpack_sparse(model)
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert list(failing) == ["mid"]
    assert "model output" in failing["mid"]


def test_tensor_from_outside_the_subgraph_blocks_it():
    image = keras.Input((16, 16, 3), name="image")
    extra = keras.Input((8, 8, 8), name="extra")
    x = layers.Conv2D(8, 1, name="pw")(stem(image))
    x = keras.ops.add(x, extra)  # a keras.ops operation, not a layer
    out = layers.GlobalAveragePooling2D(name="gap")(x)
    report = tflite_export.check_xnnpack_sparse(
        sparse(keras.Model([image, extra], out), 0.9))
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert len(failing) == 1
    (name, reason), = failing.items()
    assert reason == "reads the model input, which is outside the sparse subgraph"
    assert by_name(report)[name].class_name == "Add"


def _non_identity_batchnorm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


@pytest.mark.full
@pytest.mark.parametrize("bn_after_relu", [False, True])
def test_converter_emits_the_operators_the_check_assumes(bn_after_relu):
    # The check reasons about the TFLite operators each Keras layer becomes:
    # ZeroPadding2D -> PAD, GAP -> MEAN, BatchNormalization folded into the
    # convolution before it (else MUL/ADD), sparse kernels -> DENSIFY.
    from tflite_export.convert import convert
    from tflite_export.flatbuffer_inspect import inspect_flatbuffer

    model = keras_sparse.strip(sparse(_non_identity_batchnorm(
        mobilenet_like(bn_after_relu=bn_after_relu))))
    summary = inspect_flatbuffer(convert(model, "float32"))
    ops = summary.op_counts
    assert ops["PAD"] == 2 and ops["MEAN"] == 1
    assert ops["CONV_2D"] == 4 and ops["DEPTHWISE_CONV_2D"] == 2
    assert ops["ADD"] == 1 + bn_after_relu  # residual (+ the unfolded BN)
    assert ops.get("MUL", 0) == int(bn_after_relu)
    one_by_one = [t for t in summary.sparse_tensors
                  if t.shape[1:3] == [1, 1] and len(t.shape) == 4]
    assert len(one_by_one) == len(ONE_BY_ONE)
    assert all(t.consumers == ["DENSIFY"] for t in one_by_one)
    report = tflite_export.check_xnnpack_sparse(model)
    assert report.qualifies is (not bn_after_relu)


def test_int8_precision_never_qualifies():
    model = sparse(mobilenet_like())
    for precision in ("int8_dynamic", "int8_full"):
        report = tflite_export.check_xnnpack_sparse(model, precision=precision)
        assert not report.qualifies
        assert report.failing_layers == ()
        assert any(precision in r for r in report.reasons)
    assert tflite_export.check_xnnpack_sparse(model,
                                              precision="float16").qualifies


def test_precisions_match_the_exporter():
    from tflite_export.convert import PRECISIONS

    assert set(xnnpack._ALL_PRECISIONS) == set(PRECISIONS)
    assert set(xnnpack.SPARSE_PRECISIONS) <= set(PRECISIONS)


@pytest.mark.full
def test_strict_raises_with_the_failing_layer_names():
    model = sparse(mobilenet_like(mid_conv="3x3", stride2_dw="same"))
    with pytest.raises(ValueError, match="does not qualify") as info:
        tflite_export.check_xnnpack_sparse(model, strict=True)
    assert "mid_conv" in str(info.value)
    assert "dw2" in str(info.value)
    # A qualifying model passes strict mode.
    report = tflite_export.check_xnnpack_sparse(sparse(mobilenet_like()),
                                                strict=True)
    assert report.qualifies


@pytest.mark.full
def test_mobilenet_v2_small_needs_explicit_stride2_padding():
    model = sparse(keras_sparse.models.mobilenet_v2_small())
    report = tflite_export.check_xnnpack_sparse(model)
    assert not report.qualifies
    failing = {layer.name: layer.reason for layer in report.failing_layers}
    assert list(failing) == ["stem_conv"]
    assert "padding='same' with stride 2" in failing["stem_conv"]


def test_check_does_not_change_the_model():
    model = sparse(mobilenet_like())
    model.compile("sgd", "mse")  # the replay copies the compile config
    before = [w.numpy().copy() for w in model.weights]
    config = model.get_config()
    tflite_export.check_xnnpack_sparse(model)
    assert model.get_config() == config
    assert len(model.weights) == len(before)
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, w.numpy())


def test_report_serializes():
    report = tflite_export.check_xnnpack_sparse(sparse(mobilenet_like()))
    d = report.to_dict()
    assert d["qualifies"] is True
    assert d["eligible_share"] == pytest.approx(report.eligible_share)
    assert len(d["layers"]) == len(report.layers)
    assert "| stem_conv | Conv2D | stem | yes |" in report.to_markdown()
    assert '"qualifies": true' in report.to_json()


def test_rejects_non_models():
    with pytest.raises(TypeError, match="Keras 3 model.*builtins.str"):
        tflite_export.check_xnnpack_sparse("model.keras")


def test_rejects_subclassed_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(4, 1)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="subclassed model .* of type Net"):
        tflite_export.check_xnnpack_sparse(net)


def test_rejects_unbuilt_model():
    model = keras.Sequential([layers.Conv2D(4, 1)])
    with pytest.raises(ValueError, match="without inputs"):
        tflite_export.check_xnnpack_sparse(model)


def test_rejects_bad_precision_and_strict():
    model = sparse(mobilenet_like())
    with pytest.raises(ValueError, match="'float32'.*received 'int4'"):
        tflite_export.check_xnnpack_sparse(model, precision="int4")
    with pytest.raises(TypeError, match="precision.*int"):
        tflite_export.check_xnnpack_sparse(model, precision=32)
    with pytest.raises(TypeError, match="strict"):
        tflite_export.check_xnnpack_sparse(model, strict="yes")
