"""keras_sparse.algorithms.Chase and keras_sparse.callbacks.Chase."""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse.algorithms import Chase, Target

L = keras.layers


def _cnn():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 3, padding="same", name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(16, name="d1")(x)
    x = L.ReLU()(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def _depthwise_net():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 1, name="pw1")(inputs)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 1, name="pw2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def _resnet():
    return ks.models.cifar_resnet(depth=8, input_shape=(8, 8, 3), num_classes=3, width=4)


def _targets(model):
    return [Target(f"{w.name}/{name}", weight, mask, w.sparsity_of(name), state=w.training_state(name))
            for w in ks.sparse_wrappers(model) for name, weight, mask in w.masked_weights]


def _masks(model):
    return {t.key: np.array(keras.ops.convert_to_numpy(t.mask)) for t in _targets(model)}


def _active(model):
    return int(sum(m.sum() for m in _masks(model).values()))


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


def _run_updates(model, algorithm, steps, total_steps, seed=0):
    """Calls `update` directly with synthetic dense gradients; yields after each."""
    targets = _targets(model)
    algorithm.bind_model(model)
    algorithm.setup(targets, total_steps)
    rng = np.random.default_rng(seed)
    for step in steps:
        grads = [rng.normal(size=tuple(t.weight.shape)) for t in targets]
        algorithm.update(step, targets, grads)
        yield step, targets


@pytest.mark.parametrize("build", [_cnn, _depthwise_net, _resnet])
def test_invariants_exact_sparsity_channels_only_removed(build):
    sparse = ks.sparsify(build(), 0.8, seed=0)
    budget = _active(sparse)
    chase = Chase(channel_sparsity=0.5, update_interval=10, stop_step=100, seed=0)
    removed_before = None
    for _step, targets in _run_updates(sparse, chase, range(10, 101, 10), total_steps=100):
        assert _active(sparse) == budget  # exact overall sparsity, budget conserved
        removed = chase.removed_channels()
        if removed_before is not None:
            for name, r in removed.items():
                assert np.all(r >= removed_before[name])  # channels only go
        removed_before = removed
        for t, forbidden in zip(targets, chase._forbidden):
            mask = keras.ops.convert_to_numpy(t.mask)
            weight = keras.ops.convert_to_numpy(t.weight)
            assert not np.any(mask[forbidden > 0])  # never regrown
            assert not np.any(weight[forbidden > 0])
    # The cubic schedule reaches the target at the last update.
    total = sum(len(r) for r in removed_before.values())
    assert sum(int(r.sum()) for r in removed_before.values()) == round(0.5 * total)
    # A removed channel is masked in its producer and in its consumers.
    masks = _masks(sparse)
    for name, r in removed_before.items():
        kernel = masks[f"{name}/kernel"]
        assert not np.any(kernel[..., r])
    if build is _resnet:  # channels merged by an Add are not Chase's (reference: layer2split)
        assert sorted(removed_before) == ["stage1_block1_1_conv", "stage2_block1_1_conv",
                                          "stage3_block1_1_conv"]
    strip_small = ks.strip(sparse, remove_channels=True)
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(strip_small(x), sparse(x), atol=1e-5, rtol=1e-5)
    assert strip_small.count_params() < ks.strip(sparse).count_params()


def test_depthwise_slices_follow_removed_channels():
    sparse = ks.sparsify(_depthwise_net(), 0.7, seed=0)
    chase = Chase(channel_sparsity=0.5, min_channel_ratio=0.0, update_interval=10, stop_step=20)
    for _ in _run_updates(sparse, chase, [10, 20], total_steps=20):
        pass
    removed = chase.removed_channels()["pw1"]
    assert removed.any()
    dw = _masks(sparse)["dw/kernel"]  # (3, 3, 8, 2)
    assert not np.any(dw[:, :, removed, :])
    pw2 = _masks(sparse)["pw2/kernel"]  # (1, 1, 16, 8): inputs c * 2 + j
    assert not np.any(pw2[:, :, np.repeat(removed, 2), :])


def test_umm_ranking_hand_computed():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, name="h"), L.Dense(2, name="out")])
    sparse = ks.sparsify(model, 0.0, distribution={"h": 0.0, "out": 0.0}, seed=0)
    h = next(w for w in ks.sparse_wrappers(sparse) if w.name == "h")
    kernel = np.array([[1.0, 0.5, 2.0, 0.1],
                       [5.0, 0.5, 0.0, 0.1],
                       [0.0, 0.5, 0.0, 0.1]], "float32")
    mask = np.array([[1, 1, 1, 1],
                     [0, 1, 1, 1],   # the 5.0 is masked: counts as 0
                     [1, 1, 1, 1]], "float32")
    _, weight, mask_var = h.masked_weights[0]
    weight.assign(kernel)
    mask_var.assign(mask)
    # UMM = sum |w * m| / 3: c0 1/3, c1 0.5, c2 2/3, c3 0.1. (The mean over
    # active entries only would rank c0 (1.0) above c1 (0.5).)
    chase = Chase(channel_sparsity=0.5, min_channel_ratio=0.0, update_interval=10, stop_step=100)
    targets = _targets(sparse)
    chase.bind_model(sparse)
    chase.setup(targets, 100)
    weights = [keras.ops.convert_to_numpy(t.weight) for t in targets]
    masks = [keras.ops.convert_to_numpy(t.mask) for t in targets]
    assert chase.channel_target(100) == 2
    assert chase.select_channels(100, weights, masks) == [(0, 3), (0, 0)]
    assert chase.channel_target(50) == round(0.5 * (1 - 0.5 ** 3) * 4)


def test_min_channel_ratio_keeps_a_floor_per_layer():
    sparse = ks.sparsify(_cnn(), 0.8, seed=0)
    chase = Chase(channel_sparsity=0.75, min_channel_ratio=1.0, update_interval=10, stop_step=10)
    for _ in _run_updates(sparse, chase, [10], total_steps=10):
        pass
    for r in chase.removed_channels().values():
        assert (~r).sum() >= int(len(r) * 0.25)


def test_bad_arguments_raise_before_any_mask_changes():
    with pytest.raises(ValueError, match="channel_sparsity"):
        Chase(channel_sparsity=1.0)
    with pytest.raises(TypeError, match="channel_sparsity"):
        Chase(channel_sparsity="half")
    with pytest.raises(ValueError, match="min_channel_ratio"):
        Chase(min_channel_ratio=1.5)
    with pytest.raises(ValueError, match="unstructured"):
        Chase(structure="block")
    with pytest.raises(ValueError, match="update_interval"):
        ks.callbacks.Chase(update_interval=0)
    sparse = ks.sparsify(_cnn(), 0.8, seed=0)
    sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = _masks(sparse)
    x, y = _data(16)
    with pytest.raises(ValueError, match="stop_step"):  # past training: rejected in setup
        sparse.fit(x, y, epochs=1, verbose=0, callbacks=[ks.callbacks.Chase(
            update_interval=1, stop_step=10_000)])
    for key, m in _masks(sparse).items():
        np.testing.assert_array_equal(m, before[key])


def test_without_a_graph_or_eligible_layer_it_warns_and_runs_as_rigl():
    sparse = ks.sparsify(_cnn(), 0.8, seed=0)
    chase = Chase(update_interval=1)
    with pytest.warns(UserWarning, match="bind_model"):
        chase.setup(_targets(sparse), 10)
    assert chase.removed_channels() == {}
    # Only the output layer is masked: no channel Chase may remove.
    tiny = ks.sparsify(keras.Sequential([keras.Input((8, 8, 3)), L.Flatten(), L.Dense(3)]), 0.5, seed=0)
    tiny.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    budget = _active(tiny)
    x, y = _data(16)
    with pytest.warns(UserWarning, match="no layer whose output channels"):
        tiny.fit(x, y, epochs=1, verbose=0, callbacks=[ks.callbacks.DynamicSparseTraining(
            Chase(update_interval=1))])
    assert _active(tiny) == budget


def test_config_round_trip():
    algorithm = Chase(channel_sparsity=0.3, min_channel_ratio=0.25, update_interval=7, seed=3)
    again = ks.algorithms.get({"class_name": "chase", "config": algorithm.get_config()})
    assert isinstance(again, Chase) and again.get_config() == algorithm.get_config()
    assert ks.algorithms.get("chase").channel_sparsity == 0.5
    callback = ks.callbacks.Chase(channel_sparsity=0.3, update_interval=7, total_steps=50, per_layer=True)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert isinstance(restored, ks.callbacks.Chase)
    assert restored.get_config() == callback.get_config()
    assert restored.algorithm.get_config() == callback.algorithm.get_config()


def _fit(seed):
    keras.utils.set_random_seed(0)
    sparse = ks.sparsify(_cnn(), 0.8, seed=0)
    sparse.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    callback = ks.callbacks.Chase(channel_sparsity=0.5, update_interval=2, seed=seed)
    history = sparse.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[callback])
    return sparse, history


def test_fit_is_deterministic_and_strips_to_a_smaller_model():
    first, history = _fit(seed=4)
    second, _ = _fit(seed=4)
    a, b = _masks(first), _masks(second)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert history.history["channel_sparsity"][-1] == pytest.approx(0.5, abs=0.05)
    assert history.history["masked_sparsity"][-1] == pytest.approx(0.8, abs=0.01)
    small = ks.strip(first, remove_channels=True)
    x, _ = _data(4, seed=1)
    np.testing.assert_allclose(small(x), first(x), atol=1e-5, rtol=1e-5)
    assert small.count_params() < ks.strip(first).count_params()


def test_resume_reads_removed_channels_back():
    sparse = ks.sparsify(_cnn(), 0.8, seed=0)
    chase = Chase(channel_sparsity=0.5, update_interval=10, stop_step=100)
    for _ in _run_updates(sparse, chase, [10, 20, 30], total_steps=100):
        pass
    removed = chase.removed_channels()
    fresh = Chase(channel_sparsity=0.5, update_interval=10, stop_step=100)
    fresh.bind_model(sparse)
    fresh.setup(_targets(sparse), 100)
    for name, r in fresh.removed_channels().items():
        np.testing.assert_array_equal(r, removed[name])
