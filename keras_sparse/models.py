"""Reference models for the benchmarks and examples.

All builders return plain functional `keras.Model`s with named layers, so
per-layer sparsity dicts and reports refer to stable names. Activations are
separate `keras.layers.ReLU` layers (not `activation=` arguments), so tools
that study or replace activations can find them. Every model outputs
**logits** (no softmax): train with
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

__all__ = ["cifar_resnet", "mobilenet_v2_small", "resnet18", "small_cnn"]

_RESNET_KERNEL_INIT = "he_normal"


def _check_input_shape(input_shape: Sequence[int], arg: str = "input_shape") -> tuple:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{arg}` must be a sequence of 3 positive ints (height, width, "
            f"channels); received {input_shape!r}."
        ) from None
    if len(shape) != 3 or any(d <= 0 for d in shape):
        raise ValueError(
            f"`{arg}` must be (height, width, channels) with positive sizes; "
            f"received {input_shape!r}."
        )
    return shape


def _check_positive_int(value, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{arg}` must be a positive int; received {value!r}.")
    return value


def small_cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    name: str = "small_cnn",
) -> keras.Model:
    """The small CNN of the benchmark protocol (Model A).

    `Conv2D(32, 3x3) - ReLU - MaxPool(2) - Conv2D(64, 3x3) - ReLU - MaxPool(2)
    - Flatten - Dense(256) - ReLU - Dense(num_classes)`. Convolutions use
    "valid" padding; for 28x28x1 inputs the model has 431,242 parameters,
    most of them (409,856) in `fc1`.

    The output is **logits** (no softmax). Use
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

    Args:
        input_shape: `(height, width, channels)` of one example.
        num_classes: number of output logits.
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with layers named `conv1`,
        `relu1`, `pool1`, `conv2`, `relu2`, `pool2`, `flatten`, `fc1`,
        `relu3`, `logits`.

    Raises:
        ValueError: if `input_shape` is not 3 positive sizes or `num_classes`
            is not a positive int.
        TypeError: if `input_shape` is not a sequence of ints.

    Example:

    >>> model = keras_sparse.models.small_cnn()
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_positive_int(num_classes, "num_classes")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, name="conv1")(inputs)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, name="conv2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, name="fc1")(x)
    x = layers.ReLU(name="relu3")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_bn(x, filters: int, kernel_size: int, strides: int, prefix: str):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=_RESNET_KERNEL_INIT,
        name=f"{prefix}_conv",
    )(x)
    return layers.BatchNormalization(name=f"{prefix}_bn")(x)


def _basic_block(x, filters: int, strides: int, prefix: str):
    """Two 3x3 conv-BN layers plus an identity or 1x1 projection shortcut."""
    in_channels = x.shape[-1]
    y = _conv_bn(x, filters, 3, strides, f"{prefix}_1")
    y = layers.ReLU(name=f"{prefix}_1_relu")(y)
    y = _conv_bn(y, filters, 3, 1, f"{prefix}_2")
    if strides != 1 or in_channels != filters:
        # Option B of He et al.: a 1x1 strided projection when shapes change.
        shortcut = _conv_bn(x, filters, 1, strides, f"{prefix}_shortcut")
    else:
        shortcut = x
    y = layers.Add(name=f"{prefix}_add")([y, shortcut])
    return layers.ReLU(name=f"{prefix}_out_relu")(y)


def _resnet(
    input_shape: tuple,
    num_classes: int,
    stage_filters: Sequence[int],
    blocks_per_stage: Sequence[int],
    name: str,
) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, stage_filters[0], 3, 1, "stem")
    x = layers.ReLU(name="stem_relu")(x)
    for stage, (filters, blocks) in enumerate(zip(stage_filters, blocks_per_stage)):
        for block in range(blocks):
            strides = 2 if (stage > 0 and block == 0) else 1
            x = _basic_block(x, filters, strides, f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def cifar_resnet(
    depth: int = 20,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    width: int = 16,
    name: str | None = None,
) -> keras.Model:
    """The CIFAR ResNet of He et al. (ResNet-20/32/44/56/110, depth = 6n + 2).

    A 3x3 stem convolution with `width` filters, then 3 stages of `n`
    BasicBlocks with `width`, `2 * width` and `4 * width` filters (16/32/64
    by default), stride 2 at the start of stages 2 and 3, global average
    pooling and a Dense logits layer. Convolutions have no bias and are
    followed by BatchNormalization and a separate `ReLU` layer. When a block
    changes shape the shortcut is a 1x1 strided convolution + BN (option B);
    otherwise it is the identity. With the default width, ResNet-20 has about
    0.27M parameters and ResNet-32 about 0.47M.

    Works for any input size, e.g. `(28, 28, 1)` for Fashion-MNIST (the
    benchmark protocol's Model B). The output is **logits** (no softmax).

    Args:
        depth: total number of weighted layers, `6n + 2` (20, 32, 44, 56,
            110, ...).
        input_shape: `(height, width, channels)` of one example.
        num_classes: number of output logits.
        width: number of filters in the stem and the first stage; stages 2
            and 3 use 2x and 4x this.
        name: model name; defaults to `f"resnet{depth}"`.

    Returns:
        An uncompiled functional `keras.Model`. Layers are named
        `stem_conv`, `stage{s}_block{b}_{1,2}_conv`,
        `stage{s}_block{b}_shortcut_conv`, ..., `logits`.

    Raises:
        ValueError: if `depth` is not of the form `6n + 2` with `n >= 1`, or
            `input_shape`, `num_classes` or `width` are invalid.

    Example:

    >>> model = keras_sparse.models.cifar_resnet(20, input_shape=(28, 28, 1))
    >>> model.output_shape
    (None, 10)

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
        section 4.2. https://arxiv.org/abs/1512.03385
    """
    if (
        isinstance(depth, bool)
        or not isinstance(depth, int)
        or depth < 8
        or (depth - 2) % 6 != 0
    ):
        raise ValueError(
            "`depth` must be an int of the form 6n + 2 with n >= 1 "
            f"(8, 14, 20, 32, 44, 56, 110, ...); received {depth!r}."
        )
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_positive_int(num_classes, "num_classes")
    width = _check_positive_int(width, "width")
    n = (depth - 2) // 6
    return _resnet(
        input_shape,
        num_classes,
        stage_filters=(width, 2 * width, 4 * width),
        blocks_per_stage=(n, n, n),
        name=name or f"resnet{depth}",
    )


def resnet18(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "resnet18",
) -> keras.Model:
    """CIFAR-style ResNet-18 (about 11.2M parameters).

    The ImageNet ResNet-18 layout (4 stages of 2 BasicBlocks with 64, 128,
    256, 512 filters) with the small-image stem used in the sparse-training
    literature: one 3x3 stride-1 convolution and no max pooling. Shortcuts
    are 1x1 projections + BN when the shape changes (option B). The output is
    **logits** (no softmax).

    Args:
        input_shape: `(height, width, channels)` of one example.
        num_classes: number of output logits.
        name: model name.

    Returns:
        An uncompiled functional `keras.Model`.

    Raises:
        ValueError: if `input_shape` or `num_classes` are invalid.

    Example:

    >>> model = keras_sparse.models.resnet18((32, 32, 3), num_classes=100)
    >>> model.output_shape
    (None, 100)

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
        https://arxiv.org/abs/1512.03385
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_positive_int(num_classes, "num_classes")
    return _resnet(
        input_shape,
        num_classes,
        stage_filters=(64, 128, 256, 512),
        blocks_per_stage=(2, 2, 2, 2),
        name=name,
    )


def _conv_bn_relu6(x, filters: int, kernel_size: int, strides: int, prefix: str):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                      use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(name=f"{prefix}_bn")(x)
    return layers.ReLU(6.0, name=f"{prefix}_relu")(x)


def _inverted_residual(x, filters: int, strides: int, expansion: int, prefix: str):
    """Expand 1x1 - depthwise 3x3 - linear project 1x1 (+ identity skip)."""
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn_relu6(y, in_channels * expansion, 1, 1, f"{prefix}_expand")
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               name=f"{prefix}_dw_conv")(y)
    y = layers.BatchNormalization(name=f"{prefix}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{prefix}_dw_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_project_conv")(y)
    y = layers.BatchNormalization(name=f"{prefix}_project_bn")(y)
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{prefix}_add")([x, y])
    return y


def mobilenet_v2_small(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    width: int = 16,
    expansion: int = 4,
    blocks_per_stage: Sequence[int] = (1, 2, 2),
    name: str = "mobilenet_v2_small",
) -> keras.Model:
    """A small MobileNetV2-style network for on-device experiments.

    A 3x3 stride-2 stem convolution (`width` filters), then three stages of
    inverted residual blocks with `width`, `3 * width // 2` and `2 * width`
    output channels (stride 1, 2, 2 at the start of each stage). A block
    expands its input `expansion` times with a 1x1 convolution, filters it
    with a 3x3 depthwise convolution, and projects it back with a linear
    1x1 convolution; when the stride is 1 and the channels match, the input
    is added to the output (identity skip). Every convolution has no bias
    and is followed by BatchNormalization; ReLU6 follows all but the
    projections (linear bottlenecks). The head is a 1x1 convolution to
    `4 * width` channels + BN + ReLU6, global average pooling and a Dense
    logits layer. This is MobileNetV2 scaled down to a few hundred
    thousand multiply-adds per 32x32 image; the full network's block
    layout and widths are in the reference.

    The output is **logits** (no softmax). Use
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

    Args:
        input_shape: `(height, width, channels)` of one example.
        num_classes: number of output logits.
        width: channels of the stem and the first stage.
        expansion: expansion factor of the inverted residual blocks.
        blocks_per_stage: number of blocks in each of the three stages.
        name: model name.

    Returns:
        An uncompiled functional `keras.Model` with layers named
        `stem_conv`, `block{i}_expand_conv`, `block{i}_dw_conv`,
        `block{i}_project_conv`, `block{i}_add`, `head_conv`, `avg_pool`,
        `logits` (blocks numbered from 1 across stages).

    Raises:
        ValueError: if `input_shape`, `num_classes`, `width`, `expansion` or
            `blocks_per_stage` are invalid.
        TypeError: if `input_shape` is not a sequence of ints.

    Example:

    >>> model = keras_sparse.models.mobilenet_v2_small((28, 28, 1))
    >>> model.output_shape
    (None, 10)

    Reference:
        Sandler et al., "MobileNetV2: Inverted Residuals and Linear
        Bottlenecks", CVPR 2018. https://arxiv.org/abs/1801.04381
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = _check_positive_int(num_classes, "num_classes")
    width = _check_positive_int(width, "width")
    expansion = _check_positive_int(expansion, "expansion")
    blocks = tuple(blocks_per_stage) if isinstance(blocks_per_stage, (list, tuple)) else None
    if blocks is None or len(blocks) != 3:
        raise ValueError(
            "`blocks_per_stage` must be 3 positive ints; received "
            f"{blocks_per_stage!r}."
        )
    for b in blocks:
        _check_positive_int(b, "blocks_per_stage[i]")
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn_relu6(inputs, width, 3, 2, "stem")
    index = 0
    for stage, (filters, stride) in enumerate(
        zip((width, 3 * width // 2, 2 * width), (1, 2, 2))
    ):
        for b in range(blocks[stage]):
            index += 1
            x = _inverted_residual(x, filters, stride if b == 0 else 1,
                                   expansion, f"block{index}")
    x = _conv_bn_relu6(x, 4 * width, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
