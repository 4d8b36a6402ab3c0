"""A Keras functional model re-wired so that its gradient lowers to
TFLite builtins.

`lower_model(model)` returns a copy of the model's graph, made with the
public `keras.models.clone_model(clone_function=...)`: every layer whose
TensorFlow gradient has no builtin lowering is replaced by a `LoweredLayer`
that runs the same forward with the ops of `tflite_export._grad_ops`
(custom gradients); every other supported layer is reused as it is (its
TensorFlow gradient is builtin already). The copy shares the original
layers' variables and owns none, so `stateless_call` on it with the
values of those variables runs the original model. The graph is never read
through private attributes: Keras replays its own graph during cloning.

Supported layers (channels_last, no dilation, groups 1):

- Dense (2-D inputs), Conv2D (any strides, `valid`/`same`),
  DepthwiseConv2D (any depth multiplier), SeparableConv2D: with or
  without bias, activation `relu`, `relu6` or `linear` (`softmax` only on
  the layer that produces the model output: folded into the loss, applied
  by `infer`).
- ReLU (plain or `max_value=6`), Activation (`relu`, `relu6`, `linear`,
  `softmax` as above), Softmax (as above).
- MaxPooling2D / AveragePooling2D (any pool size and strides,
  `valid`/`same`), GlobalAveragePooling2D (`keepdims` or not), Flatten,
  Reshape, ZeroPadding2D, Add, Concatenate.
- BatchNormalization: frozen (inference mode with the moving statistics;
  gamma and beta constants) by default; `batchnorm="train"` trains gamma
  and beta with batch statistics and updates the moving statistics like
  Keras (see `LoweredBatchNorm`).
- Dropout: identity (inference behaviour).

`keras_sparse` `SparseWrapper` layers are lowered as the layer they wrap;
their masks are read from `wrapper.masked_weights`.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tflite_export import _grad_ops as gops
from tflite_export._validate import is_sparse_wrapper

BATCHNORM_MODES = ("frozen", "train")

# Reused as they are: their TensorFlow gradients are builtin ops.
# (BatchNormalization and Dropout, whose behaviour depends on `training`,
# are wrapped: the `train` signature calls the model with training=True.)
_PASSTHROUGH = ("InputLayer", "Add", "Concatenate", "ZeroPadding2D",
                "GlobalAveragePooling2D", "Flatten", "Reshape")

SUPPORTED = (
    "Dense (2-D input), Conv2D, DepthwiseConv2D, SeparableConv2D "
    "(channels_last, no dilation, groups=1; activation relu/relu6/linear), "
    "ReLU (plain or max_value=6), Activation('relu'|'relu6'|'linear'), "
    "MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, "
    "Reshape, ZeroPadding2D, Add, Concatenate, BatchNormalization, Dropout "
    "(identity); softmax only on the output layer")


def _act_name(activation) -> str:
    return getattr(activation, "__name__", None) or str(activation)


def _activation(layer, name: str, is_output: bool) -> Callable | None:
    """The builtin-gradient function for activation `name`, None for
    identity (linear, and softmax on the output layer)."""
    if name == "relu":
        return gops.relu
    if name == "relu6":
        return gops.relu6
    if name == "linear" or (name == "softmax" and is_output):
        return None
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) uses activation "
        f"{name!r}. On-device training supports exact ReLU ('relu'), "
        "'relu6' and 'linear' activations, and 'softmax' only on the layer "
        "that produces the model output (folded into the cross-entropy).")


def _padding(layer, cfg) -> str:
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}): on-device "
            "training needs data_format='channels_last'; received "
            f"{cfg['data_format']!r}.")
    return cfg["padding"].upper()


def _check_conv(layer, cfg) -> None:
    rate = tuple(cfg.get("dilation_rate", (1, 1)))
    if rate != (1, 1) or cfg.get("groups", 1) != 1:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}): on-device "
            "training needs dilation_rate=1 and groups=1; received "
            f"dilation_rate={cfg.get('dilation_rate')}, "
            f"groups={cfg.get('groups', 1)}.")


def _value(variable):
    # Inside `stateless_call` this is the value passed for the variable.
    return variable.value


class LoweredLayer(keras.layers.Layer):
    """Runs `inner`'s forward with builtin-gradient ops.

    It owns no variables: it reads `inner`'s (tracked as a sublayer, so the
    copy's variable lists hold the original variables).

    Args:
        inner: the original layer.
        forward: `forward(inner, x) -> y`.
    """

    def __init__(self, inner, forward: Callable, **kwargs):
        super().__init__(name=inner.name, dtype=inner.dtype_policy, **kwargs)
        self.inner = inner
        self._forward = forward

    def call(self, x, training=False, **kwargs):
        # `training` is True only in the `train` signature; only
        # `LoweredBatchNorm` looks at it.
        return self._forward(self.inner, x)

    def compute_output_spec(self, x, training=False, **kwargs):
        return self.inner.compute_output_spec(x)


def _affine(core: Callable, act):
    """`forward(layer, x) = act(core(layer, x) + bias)` (no bias: none added)."""
    def forward(layer, x):
        y = core(layer, x)
        if layer.use_bias:
            y = y + _value(layer.bias)
        return act(y) if act else y
    return forward


def _dense(act, sparse_products: dict):
    """Dense forward; a kernel listed in `sparse_products` (by id) runs its
    entry `product(x)` instead of the matmul with the dense kernel."""
    def core(layer, x):
        product = sparse_products.get(id(layer.kernel))
        return product(x) if product else tf.matmul(x, _value(layer.kernel))
    return _affine(core, act)


def _conv(act, strides, padding):
    return _affine(lambda layer, x: gops.conv2d(x, _value(layer.kernel), strides, padding), act)


def _depthwise(act, strides, padding):
    return _affine(lambda layer, x: gops.depthwise_conv2d(
        x, _value(layer.kernel), strides, padding), act)


def _separable(act, strides, padding):
    def core(layer, x):
        y = gops.depthwise_conv2d(x, _value(layer.depthwise_kernel), strides, padding)
        return gops.conv2d(y, _value(layer.pointwise_kernel), 1, "VALID")
    return _affine(core, act)


def _pool(fn, pool, strides, padding):
    def forward(layer, x):
        return fn(x, pool, strides, padding)
    return forward


def _frozen_bn(layer, x):
    return layer(x, training=False)


def _unary(fn):
    def forward(layer, x):
        return fn(x) if fn else tf.identity(x)
    return forward


class LoweredBatchNorm(LoweredLayer):
    """BatchNormalization trained with batch statistics, like Keras'
    `training=True` (`batchnorm="train"`); inference mode otherwise.

    In training it normalizes with the batch mean and (biased) variance
    over all axes but the channel axis, computed as `tf.nn.moments` does
    (the mean is a constant inside the variance), and assigns the moving
    statistics `moving * momentum + batch * (1 - momentum)`; inside
    `stateless_call` the assignment comes back as the updated
    non-trainable values. `rsqrt`'s TensorFlow gradient (RsqrtGrad) has no
    builtin lowering, so it is written out: `-0.5 * rsqrt(v)^3`.
    """

    def __init__(self, inner, **kwargs):
        super().__init__(inner, None, **kwargs)

    def call(self, x, training=False, **kwargs):
        bn = self.inner
        if not training:
            return bn(x, training=False)
        axes = list(range(len(x.shape) - 1))
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        var = tf.reduce_mean(tf.math.squared_difference(
            x, tf.stop_gradient(mean)), axis=axes, keepdims=True)
        inv = gops.rsqrt(var + bn.epsilon)
        if bn.scale:
            inv = inv * _value(bn.gamma)
        offset = -mean * inv
        if bn.center:
            offset = offset + _value(bn.beta)
        y = x * inv + offset
        m = bn.momentum
        flat_mean = tf.reshape(mean, [-1])
        flat_var = tf.reshape(var, [-1])
        bn.moving_mean.assign(_value(bn.moving_mean) * m
                              + flat_mean * (1.0 - m))
        bn.moving_variance.assign(_value(bn.moving_variance) * m
                                  + flat_var * (1.0 - m))
        return y


def _output_layers(model) -> set[int]:
    """ids of the layers whose output is a model output (public API)."""
    outs = {id(t) for t in model.outputs}
    found = set()
    for layer in model.layers:
        try:
            produced = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # shared layers: no `.output`
            continue
        if any(id(t) in outs for t in produced):
            found.add(id(layer))
    return found


def _lower(layer, is_output: bool, batchnorm: str, node=None,
           sparse_products: dict | None = None) -> tuple[Any, str | None]:
    """`(replacement layer, 'softmax' or None)` for one layer; `node` is
    the layer called in the graph (a SparseWrapper around `layer`);
    `sparse_products` is `LoweredModel.sparse_products`."""
    node = node or layer
    cls = type(layer).__name__
    cfg = layer.get_config()
    if cls == "Dense":
        if _has_input(node) and len(node.input.shape) != 2:
            raise ValueError(
                f"Layer '{layer.name}' (Dense) gets a "
                f"{len(node.input.shape)}-D input; on-device training "
                "supports Dense on 2-D inputs only (add a Flatten layer).")
        name = _act_name(layer.activation)
        act = _activation(layer, name, is_output)
        return (LoweredLayer(layer, _dense(act, {} if sparse_products is None
                                             else sparse_products)),
                _soft(name))
    if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        padding = _padding(layer, cfg)
        _check_conv(layer, cfg)
        name = _act_name(layer.activation)
        act = _activation(layer, name, is_output)
        make = {"Conv2D": _conv, "DepthwiseConv2D": _depthwise,
                "SeparableConv2D": _separable}[cls]
        return (LoweredLayer(layer, make(act, tuple(cfg["strides"]), padding)),
                _soft(name))
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        padding = _padding(layer, cfg)
        pool = tuple(cfg["pool_size"])
        strides = tuple(cfg["strides"] or pool)
        fn = gops.max_pool2d if cls == "MaxPooling2D" else gops.avg_pool2d
        return LoweredLayer(layer, _pool(fn, pool, strides, padding)), None
    if cls == "ReLU":
        neg = cfg.get("negative_slope") or 0.0
        thr = cfg.get("threshold") or 0.0
        top = cfg.get("max_value")
        if neg or thr or top not in (None, 6, 6.0):
            raise ValueError(
                f"Layer '{layer.name}' (ReLU) has max_value={top}, "
                f"negative_slope={neg}, threshold={thr}; on-device training "
                "supports max(x, 0) and ReLU(max_value=6) only.")
        fn = gops.relu if top is None else gops.relu6
        return LoweredLayer(layer, _unary(fn)), None
    if cls == "Activation":
        name = _act_name(layer.activation)
        return (LoweredLayer(layer, _unary(_activation(layer, name,
                                                       is_output))),
                _soft(name))
    if cls == "Softmax":
        _activation(layer, "softmax", is_output)
        return LoweredLayer(layer, _unary(None)), "softmax"
    if cls == "BatchNormalization":
        axis = cfg["axis"]
        axis = axis if isinstance(axis, int) else (
            axis[0] if len(axis) == 1 else None)
        rank = len(node.input.shape) if _has_input(node) else None
        if axis not in (-1, None if rank is None else rank - 1):
            raise ValueError(
                f"Layer '{layer.name}' (BatchNormalization) normalizes "
                f"axis {cfg['axis']}; only the last axis is supported.")
        if batchnorm == "train" and layer.trainable:
            return LoweredBatchNorm(layer), None
        return LoweredLayer(layer, _frozen_bn), None
    if cls == "Dropout":
        return LoweredLayer(layer, _unary(None)), None
    if cls in _PASSTHROUGH:
        return layer, None
    raise ValueError(
        f"Layer '{layer.name}' of class {cls} has no builtin-only training "
        f"lowering. Supported: {SUPPORTED}.")


def _has_input(layer) -> bool:
    try:
        _ = layer.input
    except (AttributeError, ValueError):
        return False
    return True


def _soft(name: str) -> str | None:
    return "softmax" if name == "softmax" else None


class LoweredModel:
    """The re-wired copy of a model and what was learned while lowering.

    Attributes:
        model: the copy (a `keras.Model` sharing the original variables).
            Call it with `training=True` in the `train` signature (batch
            statistics for `batchnorm="train"`), `training=False` else;
            Dropout is the identity either way.
        final_activation: `"softmax"` when the model output is a softmax
            (folded into the loss; `infer` applies it), else `"linear"`.
        masks: `{id(weight): float mask array}` of the weights of
            `SparseWrapper` layers (read from `wrapper.masked_weights`).
        dense_kernels: `{id(kernel): Dense layer}` of every lowered Dense.
        sparse_products: `{id(kernel): product}`, empty until the caller
            fills it: the Dense layer of that kernel then computes
            `product(x)` (`tflite_export._sparse_matmul`) instead of its
            matmul. The caller fills it around each traced call.
    """

    def __init__(self, model, final_activation: str,
                 masks: dict | None = None, dense_kernels: dict | None = None,
                 sparse_products: dict | None = None):
        self.model = model
        self.final_activation = final_activation
        self.masks = masks or {}
        self.dense_kernels = dense_kernels or {}
        self.sparse_products = {} if sparse_products is None else sparse_products


def lower_model(model, batchnorm: str = "frozen") -> LoweredModel:
    """Copies `model`'s graph with builtin-gradient layers.

    Args:
        model: a Keras 3 Sequential or functional model (nested models are
            lowered recursively).
        batchnorm: `"frozen"` or `"train"` (see the module docstring).

    Returns:
        A `LoweredModel`.

    Raises:
        ValueError: an unsupported layer, activation or configuration (the
            message names the layer and says what is accepted).
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}; "
                         f"received {batchnorm!r}.")
    outputs = _output_layers(model)
    finals = []
    masks = {}
    dense_kernels = {}
    sparse_products = {}

    def clone(layer):
        if isinstance(layer, keras.Model):
            raise ValueError(
                f"Layer '{layer.name}' is a nested model; on-device training "
                "export needs a flat functional or Sequential model (rebuild "
                "it with the nested model's layers called directly).")
        if is_sparse_wrapper(layer):
            # The wrapped layer runs with its own variables; the masks come
            # from the public `masked_weights` (not from the wrapper's call).
            for _, weight, mask in layer.masked_weights:
                masks[id(weight)] = np.asarray(mask, dtype=np.float32)
            inner = layer.layer
            new, final = _lower(inner, id(layer) in outputs, batchnorm,
                                node=layer, sparse_products=sparse_products)
        else:
            inner = layer
            new, final = _lower(layer, id(layer) in outputs, batchnorm,
                                sparse_products=sparse_products)
        if type(inner).__name__ == "Dense":
            dense_kernels[id(inner.kernel)] = inner
        if final:
            finals.append(final)
        return new

    # Validate every layer first, so nothing is built on bad input.
    for layer in model.layers:
        if type(layer).__name__ != "InputLayer":
            clone(layer)
    finals.clear()
    copy = keras.models.clone_model(model, clone_function=clone)
    return LoweredModel(copy, "softmax" if finals else "linear", masks,
                        dense_kernels, sparse_products)
