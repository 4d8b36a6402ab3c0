"""Every custom gradient rule of `tflite_export._grad_ops` against
TensorFlow's own gradient (`tf.GradientTape` on the native op) on random
inputs and random upstream gradients."""

import numpy as np
import pytest
import tensorflow as tf

from tflite_export import _grad_ops as g


def _grads(fn, args, rng):
    args = [tf.constant(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        y = fn(*args)
    dy = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
    return y.numpy(), [d.numpy() for d in tape.gradient(y, args, dy)]


def _compare(custom, native, args, rng, rtol=1e-5):
    seed = int(rng.integers(1 << 30))
    y1, d1 = _grads(custom, args, np.random.default_rng(seed))
    y2, d2 = _grads(native, args, np.random.default_rng(seed))
    np.testing.assert_array_equal(y1, y2)
    for a, b in zip(d1, d2):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol,
                                   atol=rtol * max(np.max(np.abs(b)), 1.0))


def _x(rng, shape, relu=False):
    x = rng.standard_normal(shape).astype(np.float32)
    return np.maximum(x, 0.0) if relu else x


@pytest.mark.parametrize("fn,native", [(g.relu, tf.nn.relu),
                                       (g.relu6, tf.nn.relu6)])
def test_activation_gradients_match_tensorflow(rng, fn, native):
    x = _x(rng, (3, 5, 5, 4)) * 5.0
    x[0, 0, 0, :] = [0.0, 6.0, -0.0, 3.0]  # kinks: TF's rule at the edges
    _compare(fn, native, [x], rng)


CONV = [  # (input hw, kernel, strides, padding, channels in, out)
    ((7, 7), (3, 3), 1, "SAME", 3, 4),
    ((8, 8), (3, 3), 2, "SAME", 2, 5),
    ((9, 9), (3, 3), 2, "SAME", 2, 3),
    ((9, 8), (3, 2), (2, 3), "VALID", 3, 2),
    ((6, 6), (1, 1), 2, "SAME", 4, 6),
    ((5, 5), (5, 5), 1, "VALID", 2, 3),
]


@pytest.mark.parametrize("hw,k,s,pad,ci,co", CONV)
def test_conv2d_gradient_matches_tensorflow(rng, hw, k, s, pad, ci, co):
    x = _x(rng, (2, *hw, ci))
    w = _x(rng, (*k, ci, co))
    _compare(lambda x, w: g.conv2d(x, w, s, pad),
             lambda x, w: tf.nn.conv2d(x, w, s, pad), [x, w], rng)


@pytest.mark.parametrize("hw,k,s,pad,c,m", [
    ((7, 7), (3, 3), 1, "SAME", 3, 1),
    ((8, 8), (3, 3), 2, "SAME", 4, 1),
    ((9, 9), (3, 3), 2, "SAME", 2, 2),
    ((9, 7), (3, 3), 2, "VALID", 3, 1),
    ((6, 6), (5, 5), 1, "SAME", 2, 3),
    ((7, 7), (2, 2), 2, "VALID", 2, 1),
])
def test_depthwise_conv2d_gradient_matches_tensorflow(rng, hw, k, s, pad, c,
                                                      m):
    x = _x(rng, (2, *hw, c))
    w = _x(rng, (*k, c, m))
    sp = (s, s) if isinstance(s, int) else s
    _compare(lambda x, w: g.depthwise_conv2d(x, w, s, pad),
             lambda x, w: tf.nn.depthwise_conv2d(x, w, (1, *sp, 1), pad),
             [x, w], rng)


POOL = [  # (input hw, pool, strides, padding)
    ((8, 8), 2, 2, "VALID"),
    ((7, 7), 2, 2, "VALID"),
    ((7, 7), 2, 2, "SAME"),
    ((8, 8), 3, 2, "SAME"),
    ((9, 9), 3, 2, "VALID"),
    ((6, 6), 3, 1, "SAME"),
    ((6, 8), (2, 3), (1, 2), "VALID"),
]


@pytest.mark.parametrize("relu_input", [False, True])
@pytest.mark.parametrize("hw,p,s,pad", POOL)
def test_max_pool_gradient_matches_tensorflow(rng, hw, p, s, pad,
                                              relu_input):
    # ReLU outputs have many ties (zeros): the gradient must go to the same
    # element of a window as TensorFlow's MaxPoolGrad.
    x = _x(rng, (2, *hw, 3), relu=relu_input)
    _compare(lambda x: g.max_pool2d(x, p, s, pad),
             lambda x: tf.nn.max_pool2d(x, p, s, pad), [x], rng)


@pytest.mark.parametrize("hw,p,s,pad", POOL)
def test_avg_pool_gradient_matches_tensorflow(rng, hw, p, s, pad):
    x = _x(rng, (2, *hw, 3))
    _compare(lambda x: g.avg_pool2d(x, p, s, pad),
             lambda x: tf.nn.avg_pool2d(x, p, s, pad), [x], rng)


def test_rsqrt_gradient_matches_tensorflow(rng):
    v = rng.uniform(0.1, 3.0, (4, 7)).astype(np.float32)
    _compare(g.rsqrt, tf.math.rsqrt, [v], rng)


@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_batch_statistics_batchnorm_gradient_matches_keras(rng, center,
                                                           scale):
    import keras

    from tflite_export._layers import LoweredBatchNorm

    bn = keras.layers.BatchNormalization(center=center, scale=scale,
                                         momentum=0.8)
    x = _x(rng, (4, 5, 5, 3)) * 2.0 + 1.0
    bn.build(x.shape)
    if scale:
        bn.gamma.assign(rng.uniform(0.5, 1.5, 3).astype(np.float32))
    if center:
        bn.beta.assign(rng.normal(0, 0.3, 3).astype(np.float32))
    lowered = LoweredBatchNorm(bn)
    params = ([bn.gamma] if scale else []) + ([bn.beta] if center else [])

    def run(fn):
        xt = tf.constant(x)
        dy = tf.constant(np.random.default_rng(7).standard_normal(x.shape)
                         .astype(np.float32))
        mean0 = np.asarray(bn.moving_mean).copy()
        var0 = np.asarray(bn.moving_variance).copy()
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = fn(xt)
        grads = tape.gradient(y, [xt] + [p.value for p in params], dy)
        moved = (np.asarray(bn.moving_mean).copy(),
                 np.asarray(bn.moving_variance).copy())
        bn.moving_mean.assign(mean0)
        bn.moving_variance.assign(var0)
        return y.numpy(), [gr.numpy() for gr in grads], moved

    y1, g1, m1 = run(lambda t: lowered(t, training=True))
    y2, g2, m2 = run(lambda t: bn(t, training=True))
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(m1, m2):  # moving statistics updated like Keras
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
