"""Builtin-only forward and backward passes of the layers that on-device
training supports.

Every function uses TensorFlow ops that the TFLite converter lowers to
TFLITE_BUILTINS (FULLY_CONNECTED/BATCH_MATMUL, CONV_2D, TRANSPOSE_CONV,
STRIDED_SLICE, RESHAPE, PACK, SELECT_V2, ...). Gradients are written by hand
instead of taken from `tf.GradientTape`, whose kernels for convolution
filters (`Conv2DBackpropFilter`), pooling (`MaxPoolGrad`) and ReLU
(`ReluGrad`) have no builtin lowering.

Supported (everything else raises ValueError in `plan_model`):
- Dense (2-D input) with linear or ReLU activation (softmax on the last layer
  is folded into the loss), with or without bias.
- Conv2D, channels_last, groups=1, dilation 1, `valid`/`same` padding, any
  strides, linear or ReLU activation.
- MaxPooling2D / AveragePooling2D with `pool_size == strides`, `valid`
  padding. Max-pool gradients go to the first maximum of each window in
  row-major order, like TensorFlow's `MaxPoolGrad`.
- Flatten, ReLU (plain), Activation('relu'|'linear').
- BatchNormalization: frozen, i.e. inference mode with the moving
  statistics, gamma and beta as constants (not trained). Keras trains BN
  with batch statistics unless the layer has `trainable=False`; set that for
  identical results.
- Dropout: identity (inference behaviour).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class Step:
    """One layer of the training plan.

    Attributes:
        kind: dense | conv | maxpool | avgpool | flatten | relu | affine.
        name: Keras layer name.
        config: static parameters (strides, pads, shapes...).
        weights: indices into the plan's weight list ([kernel, bias?]).
        relu: apply ReLU after the op.
        consts: constant arrays (frozen batch norm scale/shift).
    """

    kind: str
    name: str
    config: dict[str, Any]
    weights: list[int]
    relu: bool = False
    consts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _act_name(activation) -> str:
    name = getattr(activation, "__name__", None) or str(activation)
    return name


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def plan_model(model) -> tuple[list[Step], list[tuple[str, Any]], str]:
    """Turns a sequential Keras 3 model into a list of `Step`s.

    Returns:
        `(steps, weights, final_activation)` where weights is a list of
        `(name, keras_variable)` and final_activation is `linear` or
        `softmax`.

    Raises:
        ValueError: unsupported layer, activation or configuration (the
            message names the layer and lists what is accepted).
    """
    layers = [l for l in model.layers
              if not isinstance(l, keras.layers.InputLayer)]
    _check_sequential(model, layers)
    steps: list[Step] = []
    weights: list[tuple[str, Any]] = []
    final_act = "linear"
    shape = tuple(model.inputs[0].shape[1:])

    def add_w(layer, var, label):
        weights.append((f"{layer.name}_{label}", var))
        return len(weights) - 1

    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        cls = type(layer).__name__
        in_shape = shape
        shape = tuple(layer.compute_output_shape((None,) + in_shape)[1:])
        if isinstance(layer, keras.layers.Dense):
            act = _act_name(layer.activation)
            if len(in_shape) != 1:
                raise ValueError(
                    f"Layer '{layer.name}' (Dense) gets a {len(in_shape) + 1}-D "
                    "input; on-device training supports Dense on 2-D inputs "
                    "only (add a Flatten layer).")
            relu = _check_act(layer, act, last)
            if act == "softmax":
                final_act = "softmax"
            idx = [add_w(layer, layer.kernel, "kernel")]
            if layer.use_bias:
                idx.append(add_w(layer, layer.bias, "bias"))
            steps.append(Step("dense", layer.name, {"in": in_shape,
                                                    "out": shape}, idx, relu))
        elif isinstance(layer, keras.layers.Conv2D) and cls == "Conv2D":
            cfg = layer.get_config()
            if cfg["data_format"] != "channels_last" or cfg.get("groups", 1) != 1 \
                    or tuple(cfg["dilation_rate"]) != (1, 1):
                raise ValueError(
                    f"Layer '{layer.name}' (Conv2D): on-device training needs "
                    "data_format='channels_last', groups=1, dilation_rate=1; "
                    f"received {cfg['data_format']!r}, {cfg.get('groups')}, "
                    f"{cfg['dilation_rate']}.")
            relu = _check_act(layer, _act_name(layer.activation), last)
            kh, kw = cfg["kernel_size"]
            sh, sw = cfg["strides"]
            h, w, _ = in_shape
            if cfg["padding"] == "same":
                pads = (_same_pads(h, kh, sh), _same_pads(w, kw, sw))
            else:
                pads = ((0, 0), (0, 0))
            idx = [add_w(layer, layer.kernel, "kernel")]
            if layer.use_bias:
                idx.append(add_w(layer, layer.bias, "bias"))
            steps.append(Step("conv", layer.name, {
                "in": in_shape, "out": shape, "k": (kh, kw),
                "s": (sh, sw), "pads": pads,
                "padding": cfg["padding"].upper()}, idx, relu))
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            cfg = layer.get_config()
            p = tuple(cfg["pool_size"])
            s = tuple(cfg["strides"] or p)
            if p != s or cfg["padding"] != "valid" or \
                    cfg["data_format"] != "channels_last":
                raise ValueError(
                    f"Layer '{layer.name}' ({cls}): on-device training "
                    "supports pool_size == strides, padding='valid', "
                    f"channels_last; received pool_size={p}, strides={s}, "
                    f"padding={cfg['padding']!r}.")
            steps.append(Step("maxpool" if cls == "MaxPooling2D" else "avgpool",
                              layer.name, {"in": in_shape, "out": shape,
                                           "p": p}, []))
        elif cls == "Flatten":
            steps.append(Step("flatten", layer.name, {"in": in_shape,
                                                      "out": shape}, []))
        elif cls == "ReLU":
            cfg = layer.get_config()
            if cfg.get("max_value") is not None or cfg.get("negative_slope") \
                    or cfg.get("threshold"):
                raise ValueError(
                    f"Layer '{layer.name}' (ReLU) has max_value/negative_slope/"
                    "threshold; on-device training needs exact ReLU "
                    "(max(x, 0)).")
            steps.append(Step("relu", layer.name, {}, []))
        elif cls == "Activation":
            act = _act_name(layer.activation)
            if _check_act(layer, act, last):
                steps.append(Step("relu", layer.name, {}, []))
            elif act == "softmax":
                final_act = "softmax"
        elif cls == "BatchNormalization":
            cfg = layer.get_config()
            if cfg["axis"] not in (-1, [-1], len(in_shape), [len(in_shape)]):
                raise ValueError(
                    f"Layer '{layer.name}' (BatchNormalization) normalizes "
                    f"axis {cfg['axis']}; only the last axis is supported.")
            gamma = np.asarray(layer.gamma) if layer.scale else 1.0
            beta = np.asarray(layer.beta) if layer.center else 0.0
            var = np.asarray(layer.moving_variance)
            mean = np.asarray(layer.moving_mean)
            scale = (gamma / np.sqrt(var + cfg["epsilon"])).astype(np.float32)
            shift = (beta - mean * scale).astype(np.float32)
            steps.append(Step("affine", layer.name, {}, [],
                              consts={"scale": scale, "shift": shift}))
        elif cls == "Dropout":
            continue
        else:
            raise ValueError(
                f"Layer '{layer.name}' of class {cls} has no builtin-only "
                "training lowering. Supported: Dense, Conv2D, MaxPooling2D, "
                "AveragePooling2D (pool == strides, valid), Flatten, ReLU, "
                "Activation('relu'), BatchNormalization (frozen), Dropout "
                "(identity), InputLayer.")
    return steps, weights, final_act


def _check_sequential(model, layers) -> None:
    if isinstance(model, keras.Sequential):
        return
    # A functional model is accepted when it is a chain.
    prev = model.inputs[0]
    for layer in layers:
        nodes = [n for n in getattr(layer, "_inbound_nodes", [])]
        if len(model.inputs) != 1 or len(model.outputs) != 1 or \
                not nodes or len(nodes[0].input_tensors) != 1:
            raise ValueError(
                f"on-device training export supports single-input "
                f"single-output chains of layers; layer '{layer.name}' "
                "breaks the chain (branches and merges are not supported).")
        if nodes[0].input_tensors[0] is not prev:
            raise ValueError(
                f"on-device training export supports chains of layers; "
                f"layer '{layer.name}' does not consume the previous "
                "layer's output.")
        prev = nodes[0].output_tensors[0]


def _check_act(layer, act: str, last: bool) -> bool:
    """True when the layer ends with ReLU; raises on non-ReLU activations."""
    if act == "relu":
        return True
    if act == "linear":
        return False
    if act == "softmax" and last:
        return False
    raise ValueError(
        f"Layer '{layer.name}' uses activation {act!r}. On-device training "
        "requires exact ReLU ('relu') or 'linear' activations (and "
        "'softmax' only on the last layer, folded into the cross-entropy).")


# ---------------------------------------------------------------- forward

def forward(steps: list[Step], ws: list[tf.Tensor], x: tf.Tensor,
            keep: bool) -> tuple[tf.Tensor, list[tuple]]:
    """Runs the plan; returns the logits and (if `keep`) per-step caches."""
    caches = []
    for st in steps:
        inp = x
        if st.kind == "dense":
            x = tf.matmul(x, ws[st.weights[0]])
            if len(st.weights) > 1:
                x = x + ws[st.weights[1]]
        elif st.kind == "conv":
            (pt, pb), (pl, pr) = st.config["pads"]
            x = tf.nn.conv2d(x, ws[st.weights[0]], strides=st.config["s"],
                             padding=st.config["padding"])
            if len(st.weights) > 1:
                x = x + ws[st.weights[1]]
        elif st.kind == "maxpool":
            x = tf.nn.max_pool2d(x, st.config["p"], st.config["p"], "VALID")
        elif st.kind == "avgpool":
            x = tf.nn.avg_pool2d(x, st.config["p"], st.config["p"], "VALID")
        elif st.kind == "flatten":
            x = tf.reshape(x, [-1, int(np.prod(st.config["out"]))])
        elif st.kind == "relu":
            x = tf.nn.relu(x)
        elif st.kind == "affine":
            x = x * st.consts["scale"] + st.consts["shift"]
        pre = x
        if st.relu and st.kind in ("dense", "conv") and len(st.weights) == 1:
            # Converter pitfall: RELU right after a bias-free matmul/conv on
            # a variable is fused into the op and lost (observed with TF
            # 2.21). A select is not pattern-matched, so it survives.
            x = tf.where(pre > 0.0, pre, tf.zeros_like(pre))
        elif st.relu:
            x = tf.nn.relu(x)
        if keep:
            caches.append((inp, pre, x))
    return x, caches


# --------------------------------------------------------------- backward

def _relu_grad(dy, pre):
    return tf.where(pre > 0.0, dy, 0.0)


def _conv_filter_grad(x, dy, st: Step, batch: int):
    """dL/dW[i, j] = sum over (n, oh, ow) of xpad[n, oh*s+i, ow*s+j, :]^T
    dy[n, oh, ow, :], one strided slice and one matmul per kernel tap."""
    (pt, pb), (pl, pr) = st.config["pads"]
    kh, kw = st.config["k"]
    sh, sw = st.config["s"]
    oh, ow, co = st.config["out"]
    ci = st.config["in"][2]
    if pt or pb or pl or pr:
        x = tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    dy2 = tf.reshape(dy, [batch * oh * ow, co])
    taps = []
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
            patch = tf.reshape(patch, [batch * oh * ow, ci])
            taps.append(tf.matmul(patch, dy2, transpose_a=True))
    return tf.reshape(tf.stack(taps, axis=0), [kh, kw, ci, co])


def _pool_grad(x, y, dy, st: Step, batch: int):
    h, w, c = st.config["in"]
    ph, pw = st.config["p"]
    oh, ow = h // ph, w // pw
    dy3 = tf.reshape(dy, [batch * oh, ow, c])
    if st.kind == "maxpool":
        x5 = tf.reshape(x[:, :oh * ph, :ow * pw, :], [batch * oh, ph, ow, pw, c])
        y3 = tf.reshape(y, [batch * oh, ow, c])
        taken = tf.zeros([batch * oh, ow, c], tf.bool)
        zeros = tf.zeros_like(dy3)
    rows = []
    for a in range(ph):
        cols = []
        for b in range(pw):
            if st.kind == "maxpool":
                hit = tf.logical_and(tf.equal(x5[:, a, :, b, :], y3),
                                     tf.logical_not(taken))
                taken = tf.logical_or(taken, hit)
                cols.append(tf.where(hit, dy3, zeros))
            else:
                cols.append(dy3 * (1.0 / (ph * pw)))
        rows.append(tf.reshape(tf.stack(cols, axis=2), [batch * oh, ow * pw, c]))
    dx = tf.reshape(tf.stack(rows, axis=1), [batch, oh * ph, ow * pw, c])
    if oh * ph != h or ow * pw != w:
        dx = tf.pad(dx, [[0, 0], [0, h - oh * ph], [0, w - ow * pw], [0, 0]])
    return dx


def backward(steps: list[Step], ws: list[tf.Tensor], caches, dlogits,
             batch: int) -> list[tf.Tensor | None]:
    """Gradients of the loss w.r.t. every weight, given dL/dlogits."""
    grads: list[tf.Tensor | None] = [None] * len(ws)
    d = dlogits
    for k in range(len(steps) - 1, -1, -1):
        st = steps[k]
        inp, pre, out = caches[k]
        if st.relu:
            d = _relu_grad(d, pre)
        need_dx = k > 0
        if st.kind == "dense":
            grads[st.weights[0]] = tf.matmul(inp, d, transpose_a=True)
            if len(st.weights) > 1:
                grads[st.weights[1]] = tf.reduce_sum(d, axis=0)
            if need_dx:
                d = tf.matmul(d, ws[st.weights[0]], transpose_b=True)
        elif st.kind == "conv":
            grads[st.weights[0]] = _conv_filter_grad(inp, d, st, batch)
            if len(st.weights) > 1:
                grads[st.weights[1]] = tf.reduce_sum(d, axis=[0, 1, 2])
            if need_dx:
                d = tf.nn.conv2d_transpose(
                    d, ws[st.weights[0]], [batch, *st.config["in"]],
                    strides=st.config["s"], padding=st.config["padding"])
        elif st.kind in ("maxpool", "avgpool"):
            if need_dx:
                d = _pool_grad(inp, out, d, st, batch)
        elif st.kind == "flatten":
            d = tf.reshape(d, [batch, *st.config["in"]])
        elif st.kind == "relu":
            d = _relu_grad(d, inp)
        elif st.kind == "affine":
            d = d * st.consts["scale"]
    return grads
