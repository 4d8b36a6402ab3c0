"""Pruning at initialization: SNIP, GraSP, SynFlow, random."""

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_sparse  # noqa: E402
from keras_sparse import masks as mask_math  # noqa: E402
from keras_sparse import pruning  # noqa: E402



def mlp(sizes=(6, 8, 5, 3), bias=True, activation="relu", bn=False):
    inputs = keras.Input((sizes[0],))
    x = inputs
    for i, n in enumerate(sizes[1:]):
        last = i == len(sizes) - 2
        x = keras.layers.Dense(n, use_bias=bias, activation=None if last else activation,
                               name=f"d{i}")(x)
        if bn and not last:
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    return keras.Model(inputs, x)


def cnn():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c0")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c1")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def data(n=16, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


XENT = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _active(model):
    return sum(int(m.sum()) for m in pruning.get_masks(model).values())


def _total(model):
    return sum(m.size for m in pruning.get_masks(model).values())


@pytest.mark.full
def test_snip_scores_are_abs_grad_times_weight_hand_computed():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, name="d")(inputs))
    model.get_layer("d").set_weights([np.array([[0.5], [-2.0]], "float32")])
    x = np.array([[1.0, 2.0], [3.0, -1.0]], "float32")
    y = np.array([[1.0], [0.0]], "float32")
    sparse = keras_sparse.sparsify(model, 0.0, "uniform", keep_dense=None)
    scores = pruning.snip_scores(sparse, (x, y), keras.losses.MeanSquaredError())
    w = np.array([0.5, -2.0])
    residual = x @ w - y[:, 0]  # [-4.5, 3.5]
    grad = (2 * residual[:, None] * x).mean(0)
    np.testing.assert_allclose(scores["d/kernel"][:, 0], np.abs(grad * w), rtol=1e-5)


@pytest.mark.full
def test_snip_keeps_global_top_scores_and_exact_count():
    model = mlp()
    x, y = data()
    sparse = keras_sparse.sparsify(model, 0.0, "uniform", keep_dense=None)
    scores = pruning.snip_scores(sparse, (x, y), XENT)
    pruned = pruning.snip(sparse, (x, y), 0.7, loss=XENT)
    assert pruned is sparse
    masks = pruning.get_masks(sparse)
    total = sum(m.size for m in masks.values())
    assert _active(sparse) == mask_math.num_active(total, 0.7)
    kept = np.concatenate([scores[k][masks[k] == 1] for k in masks])
    dropped = np.concatenate([scores[k][masks[k] == 0] for k in masks])
    assert kept.min() >= dropped.max()
    for _, w, m in sparse.get_layer("d0").masked_weights:
        assert np.all(w.numpy()[m.numpy() == 0] == 0)


@pytest.mark.full
def test_dense_input_is_untouched_and_layer_scope_follows_budgets():
    model = mlp()
    before = [w.copy() for w in model.get_weights()]
    x, y = data()
    sparse = pruning.snip(model, (x, y), 0.8, loss=XENT, scope="layer", distribution="uniform")
    assert sparse is not model
    assert not keras_sparse.sparse_wrappers(model)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key, m in pruning.get_masks(sparse).items():
        assert m.sum() == mask_math.num_active(m.size, 0.8), key


def _grad(model, weights, x, y, loss):
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss(y, model(x, training=True)))
    return [np.asarray(g, np.float64) for g in tape.gradient(value, weights)]


@pytest.mark.full
def test_grasp_scores_are_minus_theta_hg_and_highest_are_removed():
    model = mlp((4, 5, 3), activation="tanh")
    x, y = data(d=4)
    sparse = keras_sparse.sparsify(model, 0.0, "uniform", keep_dense=None)
    table = [(f"{w.name}/{n}", wt) for w in keras_sparse.sparse_wrappers(sparse)
             for n, wt, _ in w.masked_weights]
    weights = [wt for _, wt in table]
    theta = [wt.numpy().astype(np.float64) for wt in weights]
    g = _grad(sparse, weights, x, y, XENT)
    eps = 1e-3

    def grad_at(sign):
        for wt, t, gi in zip(weights, theta, g):
            wt.assign((t + sign * eps * gi).astype("float32"))
        return _grad(sparse, weights, x, y, XENT)

    plus, minus = grad_at(1), grad_at(-1)
    for wt, t in zip(weights, theta):
        wt.assign(t.astype("float32"))
    hg = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]
    scores = pruning.grasp_scores(sparse, (x, y), XENT, temperature=1.0)
    for (key, _), t, h in zip(table, theta, hg):
        np.testing.assert_allclose(scores[key], -t * h, rtol=2e-2, atol=1e-4)
    pruning.grasp(sparse, (x, y), 0.5, loss=XENT, temperature=1.0)
    masks = pruning.get_masks(sparse)
    kept = np.concatenate([scores[k][masks[k] == 1] for k in masks])
    removed = np.concatenate([scores[k][masks[k] == 0] for k in masks])
    assert removed.min() >= kept.max()  # GraSP removes the HIGHEST scores


@pytest.mark.full
def test_grasp_temperature_auto_follows_the_authors_code_on_logits():
    from keras_sparse.pruning.methods import GRASP_LOGIT_TEMPERATURE, grasp_temperature

    logits_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    probs_loss = keras.losses.SparseCategoricalCrossentropy()
    assert grasp_temperature("auto", logits_loss) == GRASP_LOGIT_TEMPERATURE == 200.0
    assert grasp_temperature("auto", probs_loss) == 1.0
    assert grasp_temperature("auto", lambda y, p: keras.ops.mean(p)) == 1.0
    assert grasp_temperature(3, logits_loss) == 3.0
    model = keras_sparse.sparsify(mlp((4, 5, 3)), 0.0, "uniform", keep_dense=None)
    x, y = data(d=4)
    auto = pruning.grasp_scores(model, (x, y), logits_loss)
    explicit = pruning.grasp_scores(model, (x, y), logits_loss, temperature=200.0)
    plain = pruning.grasp_scores(model, (x, y), logits_loss, temperature=1.0)
    for k in auto:
        np.testing.assert_array_equal(auto[k], explicit[k])
    assert any(not np.allclose(auto[k], plain[k]) for k in auto)


@pytest.mark.full
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "hot", True, None])
def test_grasp_rejects_bad_temperature_before_changing_masks(bad):
    model = keras_sparse.sparsify(mlp((4, 5, 3)), 0.0, "uniform", keep_dense=None)
    before = pruning.get_masks(model)
    x, y = data(d=4)
    with pytest.raises(ValueError, match="temperature"):
        pruning.grasp(model, (x, y), 0.5, loss=XENT, temperature=bad)
    after = pruning.get_masks(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def _linear_net(activation=None):
    inputs = keras.Input((5,))
    x = keras.layers.Dense(4, use_bias=False, activation=activation, name="a")(inputs)
    x = keras.layers.Dense(3, use_bias=False, activation=activation, name="b")(x)
    return keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="c")(x))


@pytest.mark.parametrize("activation", [None, "relu"])
def test_synflow_conserves_flow_layerwise_and_neuronwise(activation):
    model = keras_sparse.sparsify(_linear_net(activation), 0.0, "uniform", keep_dense=None)
    scores = pruning.synflow_scores(model)
    w = {n: np.abs(model.get_layer(n).layer.kernel.numpy().astype(np.float64)) for n in "abc"}
    r = (np.ones(5) @ w["a"] @ w["b"] @ w["c"]).sum()
    for name in "abc":  # network-wise: every layer cut carries the total flow R
        np.testing.assert_allclose(scores[f"{name}/kernel"].sum(), r, rtol=1e-5)
    # neuron-wise: flow into each hidden neuron equals flow out of it
    np.testing.assert_allclose(scores["a/kernel"].sum(0), scores["b/kernel"].sum(1), rtol=1e-5)
    np.testing.assert_allclose(scores["b/kernel"].sum(0), scores["c/kernel"].sum(1), rtol=1e-5)


@pytest.mark.full
def test_synflow_iterative_schedule_sparsity_signs_and_bn_state():
    model = mlp(bn=True)
    sparse = keras_sparse.sparsify(model, 0.0, "uniform", keep_dense=None)
    before = {v.path: v.numpy().copy() for v in sparse.variables if "mask" not in v.path}
    pruning.synflow(sparse, 0.9, iterations=10)
    assert _active(sparse) == mask_math.num_active(_total(sparse), 0.9)
    masks = pruning.get_masks(sparse)
    for v in sparse.variables:
        if "mask" in v.path:
            continue
        key = f"{v.path.split('/')[0]}/kernel"
        if v.path.endswith("kernel") and key in masks:
            m = masks[key] == 1
            np.testing.assert_array_equal(v.numpy()[m], before[v.path][m])  # signs kept
            assert np.all(v.numpy()[~m] == 0)
        else:
            np.testing.assert_array_equal(v.numpy(), before[v.path])  # BN stats etc.


def test_synflow_one_iteration_equals_one_shot_topk():
    sparse = keras_sparse.sparsify(mlp(), 0.0, "uniform", keep_dense=None)
    scores = pruning.synflow_scores(sparse)
    expected = pruning.masks_from_scores(scores, 0.6, "global")
    pruning.synflow(sparse, 0.6, iterations=1)
    for k, m in pruning.get_masks(sparse).items():
        np.testing.assert_array_equal(m, expected[k])


def test_scoring_restores_batchnorm_statistics():
    sparse = keras_sparse.sparsify(cnn(), 0.0, "uniform", keep_dense=None)
    stats = sparse.get_layer("bn").get_weights()
    x = np.random.default_rng(1).normal(size=(8, 8, 8, 2)).astype("float32")
    pruning.snip(sparse, (x, np.arange(8) % 3), 0.5, loss=XENT)
    for a, b in zip(stats, sparse.get_layer("bn").get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "random"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_every_method_hits_sparsity_and_trains_with_zeros_kept(method, sparsity):
    x, y = data(n=32)
    kwargs = {"data": (x, y), "loss": XENT} if method in ("snip", "grasp") else {}
    if method == "synflow":
        kwargs["iterations"] = 5
    sparse = pruning.prune_at_init(mlp(), method, sparsity, **kwargs)
    total = _total(sparse)
    assert abs(_active(sparse) - mask_math.num_active(total, sparsity)) <= len(pruning.get_masks(sparse))
    sparse.compile("sgd", XENT)
    sparse.fit(x, y, epochs=1, verbose=0)
    for wrapper in keras_sparse.sparse_wrappers(sparse):
        for _, w, m in wrapper.masked_weights:
            assert np.all(w.numpy()[m.numpy() == 0] == 0)


def test_random_layer_scope_uses_erk_budgets():
    sparse = pruning.random_pruning(cnn(), 0.9, distribution="erk", seed=3)
    masks = pruning.get_masks(sparse)
    budgets = keras_sparse.allocation.allocate({k: m.shape for k, m in masks.items()}, 0.9, "erk")
    for k, m in masks.items():
        assert m.sum() == mask_math.num_active(m.size, budgets[k])
    again = pruning.random_pruning(cnn(), 0.9, distribution="erk", seed=3)
    for k, m in pruning.get_masks(again).items():
        np.testing.assert_array_equal(m, masks[k])


def test_existing_zeros_are_never_revived():
    sparse = keras_sparse.sparsify(mlp(), 0.5, "uniform", keep_dense=None, seed=1)
    start = pruning.get_masks(sparse)
    pruning.synflow(sparse, 0.8, iterations=3)
    for k, m in pruning.get_masks(sparse).items():
        assert np.all(m <= start[k])


def _snapshot(model):
    return [v.numpy().copy() for v in model.variables]


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"method": "snip", "sparsity": 0.9}, ValueError, "data=None"),
        ({"method": "grasp", "sparsity": 0.9}, ValueError, "data=None"),
        ({"method": "snip", "sparsity": 1.0, "data": data()}, ValueError, "[0, 1)"),
        ({"method": "snip", "sparsity": -0.1, "data": data()}, ValueError, "[0, 1)"),
        ({"method": "snip", "sparsity": "0.9", "data": data()}, TypeError, "float"),
        ({"method": "snip", "sparsity": 0.9, "data": data(), "scope": "net"}, ValueError, "scope"),
        ({"method": "random", "sparsity": 0.9, "distribution": "zipf"}, ValueError, "distribution"),
        ({"method": "synflow", "sparsity": 0.9, "data": data()}, ValueError, "data-free"),
        ({"method": "magnitude", "sparsity": 0.9}, ValueError, "Accepted"),
        ({"method": "snip", "sparsity": 0.9, "data": 3}, TypeError, "Received: int"),
    ],
)
def test_bad_input_raises_and_leaves_model_unchanged(kwargs, error, text):
    sparse = keras_sparse.sparsify(mlp(), 0.2, "uniform", keep_dense=None, seed=0)
    sparse.compile("sgd", XENT)
    before = _snapshot(sparse)
    with pytest.raises(error, match=text.replace("[", r"\[").replace(")", r"\)")):
        pruning.prune_at_init(sparse, **kwargs)
    for a, b in zip(before, _snapshot(sparse)):
        np.testing.assert_array_equal(a, b)


def test_missing_loss_on_uncompiled_model_is_clear():
    with pytest.raises(ValueError, match="needs a loss"):
        pruning.snip(mlp(), data(), 0.9)


def test_compiled_loss_is_used_by_default():
    model = mlp()
    model.compile("sgd", "sparse_categorical_crossentropy")
    sparse = pruning.snip(model, data(), 0.5)
    assert _active(sparse) == mask_math.num_active(_total(sparse), 0.5)


def test_dataset_and_iterable_data():
    x, y = data(n=32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    a = pruning.snip_scores(keras_sparse.sparsify(mlp(), 0.0, "uniform", keep_dense=None),
                            ds, XENT, num_batches=2)
    keras.utils.set_random_seed(0)
    assert all(np.all(np.isfinite(v)) for v in a.values())
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16])]
    b = pruning.snip_scores(keras_sparse.sparsify(mlp(), 0.0, "uniform", keep_dense=None),
                            iter(batches), XENT, num_batches=None)
    assert set(a) == set(b)
