"""keras_sparse.tost.lrsi: LRSI scales searched before training (GradInit)."""

import keras
import numpy as np
import pytest

import keras_sparse
from keras_sparse import tost


def small_resnet(width=4, classes=3):
    """Stem, one residual block (conv-BN), BN'd head."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="c1")(x)
    y = keras.layers.ReLU(name="relu1")(keras.layers.BatchNormalization(name="bn1")(y))
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="c2")(y)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.ReLU(name="out")(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="fc")(x))


def xy(n=64, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 2)).astype("float32"), rng.integers(0, classes, n)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _reference_gradinit(w0, batches, iterations, lr, eta, grad_clip, min_scale):
    """GradInit of LRsI/gradinit_utils.py + RescaleAdam, in numpy, for y = x @ w and MSE."""
    def grad(w, x, y):
        return 2.0 / len(x) * x.T @ (x @ w - y)

    w, scale, m, v, t = w0.copy(), 1.0, 0.0, 0.0, 0
    cycle = 0
    for _ in range(iterations):
        b = [batches[(cycle + k) % len(batches)] for k in range(3)]
        cycle += 3
        x01, y01 = np.concatenate([b[0][0], b[1][0]]), np.concatenate([b[0][1], b[1][1]])
        x02, y02 = np.concatenate([b[0][0], b[2][0]]), np.concatenate([b[0][1], b[2][1]])
        stepped = w - eta * grad(w, x01, y01)  # look-ahead step, gradient as a constant
        h = grad(stepped, x02, y02) / eta  # d(L/eta)/dp at the stepped point
        g = float(np.sum(h * w)) * np.linalg.norm(w0) / np.linalg.norm(w)
        g = max(min(g, grad_clip), -grad_clip)
        t += 1
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        scale = max(scale - lr / (1 - 0.9 ** t) * m / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8), min_scale)
        w = w0 * scale
    return scale


@pytest.mark.full
@pytest.mark.parametrize("lr, grad_clip", [(0.05, 1.0), (0.2, 0.01)])
def test_search_matches_hand_computed_gradinit(lr, grad_clip):
    rng = np.random.default_rng(3)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, name="d")(inputs))
    w0 = np.array([[0.5], [-0.3], [0.8]], "float32")
    model.get_layer("d").kernel.assign(w0)
    batches = [(rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 1)).astype("float32"))
               for _ in range(3)]
    scales = tost.search_lrsi_scales(model, batches, "mse", iterations=3, learning_rate=lr,
                                     eta=0.1, grad_clip=grad_clip)
    expected = _reference_gradinit(w0.astype(np.float64), [(x.astype(np.float64), y.astype(np.float64))
                                                           for x, y in batches], 3, lr, 0.1, grad_clip, 0.01)
    assert list(scales) == ["d/kernel"]
    assert scales["d/kernel"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - 1.0) > 0.01  # the search moved the scale
    np.testing.assert_array_equal(model.get_layer("d").kernel.numpy(), w0)  # model untouched


@pytest.mark.full
def test_scales_are_floored_at_min_scale_for_weights():
    rng = np.random.default_rng(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, name="d")(inputs))
    x = rng.normal(size=(16, 3)).astype("float32")
    y = np.zeros((16, 1), "float32")  # the best scale is 0: the search drives it down
    scales = tost.search_lrsi_scales(model, (x, y), "mse", iterations=30, batch_size=4,
                                     learning_rate=0.5, min_scale=0.2)
    assert scales["d/kernel"] == pytest.approx(0.2)


@pytest.mark.full
def test_search_restores_weights_masks_and_batchnorm_statistics():
    x, y = xy()
    model = keras_sparse.sparsify(small_resnet(), 0.7, "uniform", keep_dense=None, seed=0)
    before = [v.numpy().copy() for v in model.variables]
    scales = tost.search_lrsi_scales(model, (x, y), LOSS, iterations=3, batch_size=16)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    # One scale per parameter block with non-zero norm (kernels, BN gammas; zero
    # biases / betas are skipped, as in RescaleAdam), weights floored at 0.01.
    assert sorted(scales) == sorted(["stem/kernel", "stem_bn/gamma", "c1/kernel", "bn1/gamma",
                                     "c2/kernel", "bn2/gamma", "fc/kernel"])
    assert all(s >= 0.01 for s in scales.values())


@pytest.mark.full
def test_tost_prepare_rescales_the_weights_before_training_and_trains_no_scale():
    x, y = xy()
    sparse = keras_sparse.sparsify(small_resnet(), 0.7, "uniform", keep_dense=None, seed=0)
    before = {v.path: v.numpy().copy() for v in sparse.variables}
    helper = tost.ToST(ghost_skip=False, ghost_swish=False, lrsi_iterations=8, lrsi_batch_size=16)
    model = helper.prepare(sparse, data=(x, y), loss=LOSS)
    for v in sparse.variables:  # input untouched
        np.testing.assert_array_equal(v.numpy(), before[v.path])
    assert not tost.ghost_layers(model, tost.LRSIScale)
    assert any(abs(s - 1.0) > 1e-3 for s in helper.lrsi_scales.values())
    # Each parameter block is its initial value times its own scale; zeros stay zeros.
    for name, scale in helper.lrsi_scales.items():
        layer_name, weight = name.split("/")
        layer = model.get_layer(layer_name)
        inner = layer.layer if isinstance(layer, keras_sparse.layers.SparseWrapper) else layer
        old = sparse.get_layer(layer_name)
        old = old.layer if isinstance(old, keras_sparse.layers.SparseWrapper) else old
        np.testing.assert_allclose(getattr(inner, weight).numpy(), scale * getattr(old, weight).numpy(),
                                   rtol=1e-6, atol=1e-7)
    for wrapper in keras_sparse.sparse_wrappers(model):
        for _, w, m in wrapper.masked_weights:
            assert np.all(w.numpy()[m.numpy() == 0] == 0)
    # Plain training afterwards: the same trainable variables as the sparse
    # model (no scale variable), and nothing changes the scales during fit.
    assert len(model.trainable_variables) == len(sparse.trainable_variables)
    assert not any("scale" in v.path for v in model.variables)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not tost.ghost_layers(model, tost.LRSIScale)
    final, _ = helper.finalize(model)
    np.testing.assert_allclose(final.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_tost_gradinit_needs_data_before_any_change():
    model = small_resnet()
    with pytest.raises(ValueError, match=r"lrsi='gradinit'.*data=None"):
        tost.ToST().prepare(model)
    with pytest.raises(ValueError, match="needs a loss"):
        tost.ToST().prepare(model, data=xy())  # uncompiled model, no loss


@pytest.mark.full
def test_joint_variant_keeps_the_trainable_scalars():
    model = tost.ToST(ghost_skip=False, ghost_swish=False, lrsi="joint").prepare(small_resnet())
    scales = tost.ghost_layers(model, tost.LRSIScale)
    assert len(scales) == 4 and all(s.scale.trainable for s in scales)


@pytest.mark.full
def test_search_and_apply_reject_bad_input():
    model = small_resnet()
    data = xy()
    for kwargs, match in [({"iterations": 0}, "iterations"), ({"batch_size": 1.5}, "batch_size"),
                          ({"eta": 0.0}, "eta"), ({"min_scale": -1.0}, "min_scale")]:
        with pytest.raises(ValueError, match=match):
            tost.search_lrsi_scales(model, data, LOSS, **kwargs)
    with pytest.raises(TypeError, match="data"):
        tost.search_lrsi_scales(model, 3, LOSS, iterations=1)
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(ValueError, match="does not have"):
        tost.apply_lrsi_scales(model, {"c1/kernel": 2.0, "nope/kernel": 2.0})
    with pytest.raises(ValueError, match="finite"):
        tost.apply_lrsi_scales(model, {"c1/kernel": 2.0, "c2/kernel": float("nan")})
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.full
def test_nested_models_get_unique_scale_names():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="a")
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="b")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(other(inner(inputs))))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 2, 16))
    scales = tost.search_lrsi_scales(model, data, LOSS, iterations=2, batch_size=4)
    assert sorted(scales) == ["a/d/kernel", "b/d/kernel", "head/kernel"]
    kernel = model.get_layer("b").get_layer("d").kernel.numpy().copy()
    tost.apply_lrsi_scales(model, {"b/d/kernel": 3.0})
    np.testing.assert_allclose(model.get_layer("b").get_layer("d").kernel.numpy(), 3.0 * kernel)
