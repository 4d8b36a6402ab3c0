"""Tests for keras_sparse.models: shapes, parameter counts, bad input."""

import keras
import numpy as np
import pytest

from keras_sparse import models


def _conv_params(k, c_in, c_out, bias):
    return k * k * c_in * c_out + (c_out if bias else 0)


@pytest.mark.full
def test_small_cnn_matches_benchmark_model_a():
    model = models.small_cnn()
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    # 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5; 5*5*64 = 1600 features.
    expected = (
        _conv_params(3, 1, 32, True)
        + _conv_params(3, 32, 64, True)
        + (5 * 5 * 64 * 256 + 256)
        + (256 * 10 + 10)
    )
    assert model.count_params() == expected
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer", "Conv2D", "ReLU", "MaxPooling2D", "Conv2D", "ReLU",
        "MaxPooling2D", "Flatten", "Dense", "ReLU", "Dense",
    ]


@pytest.mark.full
def test_small_cnn_outputs_logits_not_probabilities():
    model = models.small_cnn()
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    out = keras.ops.convert_to_numpy(model(x))
    assert out.shape == (4, 10)
    # Logits: rows don't sum to one, there is no final activation.
    assert not np.allclose(out.sum(axis=1), 1.0)
    assert model.layers[-1].get_config()["activation"] == "linear"


@pytest.mark.full
def test_small_cnn_other_input_and_classes():
    model = models.small_cnn(input_shape=(32, 32, 3), num_classes=100)
    assert model.output_shape == (None, 100)


def _resnet_params(n, widths=(16, 32, 64), in_ch=3, classes=10):
    """Independent parameter count: convs (no bias), BN (4 per channel)."""
    total = _conv_params(3, in_ch, widths[0], False) + 4 * widths[0]
    c = widths[0]
    for stage, w in enumerate(widths):
        for block in range(n):
            total += _conv_params(3, c, w, False) + 4 * w
            total += _conv_params(3, w, w, False) + 4 * w
            if c != w or (stage > 0 and block == 0):
                total += _conv_params(1, c, w, False) + 4 * w
            c = w
    return total + c * classes + classes


@pytest.mark.full
@pytest.mark.parametrize("depth,approx", [(20, 0.27e6), (32, 0.46e6)])
def test_cifar_resnet_param_counts(depth, approx):
    model = models.cifar_resnet(depth)
    n = (depth - 2) // 6
    assert model.count_params() == _resnet_params(n)
    assert abs(model.count_params() - approx) / approx < 0.03
    assert model.output_shape == (None, 10)
    assert model.name == f"resnet{depth}"


@pytest.mark.full
def test_cifar_resnet_weighted_layer_count_is_depth():
    depth = 32
    model = models.cifar_resnet(depth)
    # He et al. count the stem, 2 convs per block and the Dense; projection
    # shortcuts are extra (option B).
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    main_path = [l for l in convs if "shortcut" not in l.name]
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert len(main_path) + len(dense) == depth
    assert len(convs) - len(main_path) == 2  # two shape changes
    assert all(not l.use_bias for l in convs)


@pytest.mark.full
def test_cifar_resnet_28x28_grayscale_forward():
    model = models.cifar_resnet(20, input_shape=(28, 28, 1))
    x = np.zeros((2, 28, 28, 1), dtype="float32")
    assert tuple(model(x, training=False).shape) == (2, 10)
    assert model.count_params() == _resnet_params(3, in_ch=1)
    # 28 -> 14 -> 7 spatial through the two stride-2 stages.
    last_block = model.get_layer("stage3_block3_out_relu")
    assert tuple(last_block.output.shape) == (None, 7, 7, 64)


@pytest.mark.full
def test_cifar_resnet_width_multiplier():
    model = models.cifar_resnet(20, width=32, num_classes=100)
    assert model.count_params() == _resnet_params(3, widths=(32, 64, 128), classes=100)


@pytest.mark.full
def test_relus_are_separate_layers():
    model = models.cifar_resnet(20)
    relus = [l for l in model.layers if isinstance(l, keras.layers.ReLU)]
    # stem + 2 per block (9 blocks).
    assert len(relus) == 1 + 2 * 9
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            assert layer.get_config()["activation"] == "linear"


@pytest.mark.full
def test_resnet18_param_count():
    model = models.resnet18()
    assert model.count_params() == _resnet_params(2, widths=(64, 128, 256, 512))
    assert abs(model.count_params() - 11.17e6) / 11.17e6 < 0.01
    assert model.output_shape == (None, 10)


@pytest.mark.full
def test_resnet18_28x28_input():
    model = models.resnet18(input_shape=(28, 28, 1), num_classes=10)
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("depth", [21, 19, 2, 0, -4, 20.0, "20", True])
def test_cifar_resnet_bad_depth(depth):
    with pytest.raises(ValueError, match=r"6n \+ 2.*received"):
        models.cifar_resnet(depth)


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1, 1), (0, 28, 1)])
def test_bad_input_shape_value_error(shape):
    with pytest.raises(ValueError, match="input_shape"):
        models.small_cnn(input_shape=shape)


def test_bad_input_shape_type_error():
    with pytest.raises(TypeError, match="input_shape"):
        models.cifar_resnet(20, input_shape=None)


@pytest.mark.parametrize("builder", [models.small_cnn, models.resnet18])
def test_bad_num_classes(builder):
    with pytest.raises(ValueError, match="num_classes.*received 0"):
        builder(num_classes=0)


@pytest.mark.full
def test_mobilenet_v2_small_layout():
    model = models.mobilenet_v2_small((28, 28, 1), num_classes=7)
    assert model.output_shape == (None, 7)
    names = [layer.name for layer in model.layers]
    # Stride-2 stem, expand -> depthwise -> project blocks, skip adds only
    # where stride 1 keeps the channels (blocks 1, 3 and 5 with (1, 2, 2)).
    assert model.get_layer("stem_conv").strides == (2, 2)
    assert [n for n in names if n.endswith("_add")] == [
        "block1_add", "block3_add", "block5_add"]
    assert isinstance(model.get_layer("block2_dw_conv"), keras.layers.DepthwiseConv2D)
    assert model.get_layer("block2_dw_conv").strides == (2, 2)
    assert model.get_layer("block2_expand_conv").filters == 16 * 4
    assert model.get_layer("block2_project_conv").filters == 24
    assert model.get_layer("block2_dw_relu").get_config()["max_value"] == 6.0
    assert isinstance(model.get_layer("avg_pool"), keras.layers.GlobalAveragePooling2D)
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype("float32")
    assert np.all(np.isfinite(np.asarray(model(x))))


@pytest.mark.parametrize("bad", [dict(width=0), dict(expansion=-1),
                                 dict(blocks_per_stage=(1, 2)),
                                 dict(input_shape=(28, 28))])
def test_mobilenet_v2_small_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        models.mobilenet_v2_small(**bad)
