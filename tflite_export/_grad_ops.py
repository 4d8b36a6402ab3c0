"""Forward ops whose backward lowers to TFLite builtins.

The on-device `train` signature is a Keras forward pass traced under
`tf.GradientTape`. Most TensorFlow gradients are themselves builtin ops
(MatMul, Add, Mul, Reshape, Pad, Slice, Mean, ...), but a few gradient
kernels have no TFLite builtin: `Conv2DBackpropFilter`,
`DepthwiseConv2dNativeBackpropInput/Filter`, `MaxPoolGrad`, `AvgPoolGrad`,
`ReluGrad`, `Relu6Grad`. Each op here computes the same forward as
TensorFlow and overrides only its gradient with `tf.custom_gradient`,
written with builtin-lowerable ops:

- `relu` / `relu6`: `SELECT_V2` (forward and gradient).
- `rsqrt` (batch-statistics BatchNormalization): `-0.5 * rsqrt(v)^3`
  instead of `RsqrtGrad`.
- `conv2d`: input gradient `TRANSPOSE_CONV`; filter gradient one
  `CONV_2D` of the input with batch and channels swapped by the output
  gradient, dilated by the stride (TensorFlow's `Conv2DBackpropFilter`
  computes the same sums).
- `depthwise_conv2d`: input gradient a `DEPTHWISE_CONV_2D` of the
  zero-dilated, padded output gradient with the spatially flipped kernel;
  filter gradient one strided slice, multiply and sum per kernel tap.
- `max_pool2d` / `avg_pool2d` (any pool size, strides, valid/same): each
  window tap's share of the output gradient is placed back by zero
  dilation and padding. Max pooling sends the gradient to the first
  maximum of each window in row-major order, as TensorFlow's CPU
  `MaxPoolGrad` does; same-padded average pooling divides by the number of
  real (non-padding) inputs, as `tf.nn.avg_pool2d` does.

All ops take NHWC tensors with static spatial shapes; the backward also
needs a static batch (the `train` signature has one). Every rule is checked
against TensorFlow's own gradient in
`tests/tflite_export/test_tflite_grad_ops.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = ["avg_pool2d", "conv2d", "depthwise_conv2d", "max_pool2d",
           "relu", "relu6", "rsqrt"]


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's SAME padding `(before, after)` along one axis."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _geometry(hw, k, s, padding):
    """Padded sizes, pads and output sizes of a windowed op."""
    h, w = hw
    if padding == "SAME":
        pads = (same_pads(h, k[0], s[0]), same_pads(w, k[1], s[1]))
    else:
        pads = ((0, 0), (0, 0))
    hp = h + sum(pads[0])
    wp = w + sum(pads[1])
    oh = (hp - k[0]) // s[0] + 1
    ow = (wp - k[1]) // s[1] + 1
    return pads, (hp, wp), (oh, ow)


def _tap(x, i, j, s, out):
    """`x[:, i + s*r, j + s*c, :]` for every output position `(r, c)`."""
    return x[:, i:i + s[0] * (out[0] - 1) + 1:s[0],
             j:j + s[1] * (out[1] - 1) + 1:s[1], :]


def _dilate(g, s):
    """Inserts `s - 1` zeros between rows and columns: `[N, h, w, C]` ->
    `[N, s0*(h-1)+1, s1*(w-1)+1, C]` (reshape and pad only)."""
    n, h, w, c = (int(d) for d in g.shape)
    if s[0] > 1:
        g = tf.reshape(g, [n * h, 1, w, c])
        g = tf.pad(g, [[0, 0], [0, s[0] - 1], [0, 0], [0, 0]])
        g = tf.reshape(g, [n, h * s[0], w, c])[:, :s[0] * (h - 1) + 1]
        h = s[0] * (h - 1) + 1
    if s[1] > 1:
        g = tf.reshape(g, [n * h, w, 1, c])
        g = tf.pad(g, [[0, 0], [0, 0], [0, s[1] - 1], [0, 0]])
        g = tf.reshape(g, [n, h, w * s[1], c])[:, :, :s[1] * (w - 1) + 1]
    return g


def _place(g, i, j, s, padded):
    """The inverse of `_tap`: `g` written at `[i + s*r, j + s*c]` of a zero
    canvas of spatial size `padded`."""
    d = _dilate(g, s)
    dh, dw = int(d.shape[1]), int(d.shape[2])
    return tf.pad(d, [[0, 0], [i, padded[0] - i - dh],
                      [j, padded[1] - j - dw], [0, 0]])


def _crop(x, pads, hw):
    (pt, _), (pl, _) = pads
    if pt == 0 and pl == 0 and x.shape[1] == hw[0] and x.shape[2] == hw[1]:
        return x
    return x[:, pt:pt + hw[0], pl:pl + hw[1], :]


def _pad(x, pads, value=0.0):
    (pt, pb), (pl, pr) = pads
    if not (pt or pb or pl or pr):
        return x
    return tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]],
                  constant_values=value)


# ------------------------------------------------------------- activations

# Converter pitfall: a RELU/RELU6 right after a bias-free matmul or conv
# whose weights are variables is fused into that op and then not applied
# (observed with TF 2.21 + LiteRT). A select is not pattern-matched, so the
# forward is written as one.

@tf.custom_gradient
def relu(x):
    """`max(x, 0)`; gradient `where(y > 0, dy, 0)` (TensorFlow's ReluGrad)."""
    y = tf.where(x > 0.0, x, 0.0)

    def grad(dy):
        return tf.where(y > 0.0, dy, 0.0)

    return y, grad


@tf.custom_gradient
def relu6(x):
    """`min(max(x, 0), 6)`; gradient where `0 < y < 6` (Relu6Grad)."""
    y = tf.minimum(tf.where(x > 0.0, x, 0.0), 6.0)

    def grad(dy):
        return tf.where(tf.logical_and(y > 0.0, y < 6.0), dy, 0.0)

    return y, grad


@tf.custom_gradient
def rsqrt(v):
    """`1 / sqrt(v)`; gradient `-0.5 * rsqrt(v)^3` (TensorFlow's RsqrtGrad)."""
    r = tf.math.rsqrt(v)

    def grad(dr):
        return dr * (-0.5) * r * r * r

    return r, grad


# ------------------------------------------------------------ convolutions

def conv2d(x, kernel, strides, padding: str):
    """`tf.nn.conv2d` (NHWC, no dilation) with a builtin-only gradient.

    Args:
        x: `[N, H, W, Ci]`.
        kernel: `[kh, kw, Ci, Co]`.
        strides: int or pair.
        padding: `"SAME"` or `"VALID"`.
    """
    s = _pair(strides)
    padding = padding.upper()

    @tf.custom_gradient
    def op(x, kernel):
        y = tf.nn.conv2d(x, kernel, strides=s, padding=padding)

        def grad(dy):
            n, h, w, ci = (int(d) for d in x.shape)
            kh, kw, _, co = (int(d) for d in kernel.shape)
            pads, _, out = _geometry((h, w), (kh, kw), s, padding)
            dx = tf.nn.conv2d_transpose(dy, kernel, [n, h, w, ci],
                                        strides=s, padding=padding)
            return dx, _conv_filter_grad(x, dy, (kh, kw), s, pads, out)

        return y, grad

    return op(x, kernel)


def _conv_filter_grad(x, dy, k, s, pads, out):
    """`dK[i, j, ci, co] = sum_{n, r, c} xpad[n, i + s*r, j + s*c, ci]
    dy[n, r, c, co]` as one convolution: the padded input with batch and
    channels swapped (`[ci, H, W, n]`) convolved with the output gradient
    as the filter (`[oh, ow, n, co]`), dilated by the stride."""
    kh, kw = k
    xp = _pad(x, pads)
    rows, cols = s[0] * (out[0] - 1) + kh, s[1] * (out[1] - 1) + kw
    if int(xp.shape[1]) != rows or int(xp.shape[2]) != cols:
        xp = xp[:, :rows, :cols, :]  # VALID: trailing inputs never read
    if out == (1, 1):  # the filter covers the whole input: a matmul
        n, ci, co = int(x.shape[0]), int(x.shape[3]), int(dy.shape[3])
        dk = tf.matmul(tf.reshape(tf.transpose(xp, [1, 2, 3, 0]),
                                  [kh * kw * ci, n]),
                       tf.reshape(dy, [n, co]))
        return tf.reshape(dk, [kh, kw, ci, co])
    dk = tf.nn.conv2d(tf.transpose(xp, [3, 1, 2, 0]),
                      tf.transpose(dy, [1, 2, 0, 3]), strides=1,
                      padding="VALID", dilations=s)
    return tf.transpose(dk, [1, 2, 0, 3])


def depthwise_conv2d(x, kernel, strides, padding: str):
    """`tf.nn.depthwise_conv2d` (NHWC, no dilation) with a builtin-only
    gradient: `x` is `[N, H, W, C]`, `kernel` `[kh, kw, C, M]` (M = depth
    multiplier; output channel `c * M + m` of `C * M`), `strides` and
    `padding` as in `conv2d`."""
    s = _pair(strides)
    padding = padding.upper()

    @tf.custom_gradient
    def op(x, kernel):
        y = tf.nn.depthwise_conv2d(x, kernel, strides=(1, *s, 1),
                                   padding=padding)

        def grad(dy):
            n, h, w, c = (int(d) for d in x.shape)
            kh, kw, _, m = (int(d) for d in kernel.shape)
            pads, padded, out = _geometry((h, w), (kh, kw), s, padding)
            # Input gradient: full correlation of the dilated output
            # gradient with the flipped kernel, then crop the padding.
            d = _dilate(dy, s)
            dh, dw = int(d.shape[1]), int(d.shape[2])
            d = tf.pad(d, [[0, 0], [kh - 1, kh - 1 + padded[0] - (dh + kh - 1)],
                           [kw - 1, kw - 1 + padded[1] - (dw + kw - 1)],
                           [0, 0]])
            flipped = tf.reshape(tf.reverse(kernel, axis=[0, 1]),
                                 [kh, kw, c * m, 1])
            dxp = tf.nn.depthwise_conv2d(d, flipped, strides=(1, 1, 1, 1),
                                         padding="VALID")
            if m > 1:
                dxp = tf.reduce_sum(
                    tf.reshape(dxp, [n, padded[0], padded[1], c, m]), axis=4)
            dx = _crop(dxp, pads, (h, w))
            # Filter gradient: per tap, sum over batch and positions.
            xp = _pad(x, pads)
            dy5 = tf.reshape(dy, [n * out[0] * out[1], c, m])
            taps = []
            for i in range(kh):
                for j in range(kw):
                    patch = tf.reshape(_tap(xp, i, j, s, out),
                                       [n * out[0] * out[1], c, 1])
                    taps.append(tf.reduce_sum(patch * dy5, axis=0))
            dk = tf.reshape(tf.stack(taps, axis=0), [kh, kw, c, m])
            return dx, dk

        return y, grad

    return op(x, kernel)


# ----------------------------------------------------------------- pooling

def _pool_counts(hw, k, s, padding) -> np.ndarray:
    """Real (non-padding) inputs per window, `[1, oh, ow, 1]`."""
    pads, _, out = _geometry(hw, k, s, padding)
    ones = np.pad(np.ones(hw, np.float32), pads)
    counts = np.zeros(out, np.float32)
    for i in range(k[0]):
        for j in range(k[1]):
            counts += ones[i:i + s[0] * (out[0] - 1) + 1:s[0],
                           j:j + s[1] * (out[1] - 1) + 1:s[1]]
    return counts[None, :, :, None]


def _pool2d(x, pool_size, strides, padding: str, forward: Callable, tap_grads: Callable):
    """A 2-D pooling `forward(x, k, s, padding)` with a builtin-only gradient:
    `tap_grads(x, y, dy, k, s, padding, pads, out)` gives the gradient
    reaching each of the `k[0] * k[1]` window taps, scattered back here."""
    k, s = _pair(pool_size), _pair(strides)
    padding = padding.upper()

    @tf.custom_gradient
    def op(x):
        y = forward(x, k, s, padding)

        def grad(dy):
            h, w = int(x.shape[1]), int(x.shape[2])
            pads, padded, out = _geometry((h, w), k, s, padding)
            parts = tap_grads(x, y, dy, k, s, padding, pads, out)
            return _scatter_taps(parts, k, s, pads, padded, out, (h, w))

        return y, grad

    return op(x)


def max_pool2d(x, pool_size, strides, padding: str):
    """`tf.nn.max_pool2d` with a builtin-only gradient (first maximum of
    each window in row-major order takes the gradient; overlapping windows
    add up)."""
    def tap_grads(x, y, dy, k, s, padding, pads, out):
        xp = _pad(x, pads, float(np.finfo(np.float32).min))
        taken = None
        parts = []
        for i in range(k[0]):
            for j in range(k[1]):
                hit = tf.equal(_tap(xp, i, j, s, out), y)
                if taken is not None:
                    hit = tf.logical_and(hit, tf.logical_not(taken))
                    taken = tf.logical_or(taken, hit)
                else:
                    taken = hit
                parts.append(tf.where(hit, dy, 0.0))
        return parts

    return _pool2d(x, pool_size, strides, padding, tf.nn.max_pool2d, tap_grads)


def avg_pool2d(x, pool_size, strides, padding: str):
    """`tf.nn.avg_pool2d` with a builtin-only gradient (same padding
    averages over real inputs only, like TensorFlow)."""
    def tap_grads(x, y, dy, k, s, padding, pads, out):
        h, w = int(x.shape[1]), int(x.shape[2])
        g = dy * tf.constant(1.0 / _pool_counts((h, w), k, s, padding))
        return [g] * (k[0] * k[1])

    return _pool2d(x, pool_size, strides, padding, tf.nn.avg_pool2d, tap_grads)


def _scatter_taps(parts, k, s, pads, padded, out, hw):
    """Sums each tap's `[N, oh, ow, C]` gradient back onto the input."""
    n, c = int(parts[0].shape[0]), int(parts[0].shape[3])
    if k == s and padded[0] == out[0] * k[0] and padded[1] == out[1] * k[1]:
        # Non-overlapping windows that tile the input: interleave.
        rows = []
        for i in range(k[0]):
            cols = tf.stack(parts[i * k[1]:(i + 1) * k[1]], axis=3)
            rows.append(tf.reshape(cols, [n * out[0], out[1] * k[1], c]))
        dxp = tf.reshape(tf.stack(rows, axis=1),
                         [n, out[0] * k[0], out[1] * k[1], c])
    else:
        placed = [_place(p, t // k[1], t % k[1], s, padded)
                  for t, p in enumerate(parts)]
        dxp = placed[0] if len(placed) == 1 else tf.add_n(placed)
    dx = _crop(dxp, pads, hw)
    if dx.shape[1] != hw[0] or dx.shape[2] != hw[1]:
        # VALID windows that leave trailing rows/columns unread.
        dx = tf.pad(dx, [[0, 0], [0, hw[0] - int(dx.shape[1])],
                         [0, hw[1] - int(dx.shape[2])], [0, 0]])
    return dx
