"""NaN/Inf at a mask-update step: the update is skipped, nothing changes, training goes on."""

import warnings

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg
from testing import all_masked_entries_zero

METHODS = alg.registered_names()
INTERVAL = 2
BAD_STEP = 4  # the update at this step sees a NaN/Inf weight


def _model(method):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.Dense(8, activation="relu", name="fc")(x))
    start = {"gmp": 0.0, "granet": 0.0, "granet_st": 0.5}.get(method, 0.75)
    sparse = ks.sparsify(keras.Model(inputs, outputs), start, distribution="uniform",
                         keep_dense=None, seed=2)
    sparse.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    return sparse


def _algorithm(method, **extra):
    config = {"update_interval": INTERVAL, "stop_step": 1.0, "seed": 0, **extra}
    if method in ("gmp", "granet", "granet_st"):
        config["sparsity"] = 0.8
    if method == "mest" and "drop_fraction" not in extra:
        # MEST's default elastic stages stop mutating at 75% of training (step 6 of
        # these 8): keep every update of this short run in a mutating stage.
        config["stage_boundaries"] = (0.9, 0.95)
    return alg.get({"class_name": method, "config": config})


def _targets(model):
    return [alg.Target(f"{w.name}/{n}", v, m, w.sparsity_of(n), state=w.training_state(n))
            for w in ks.sparse_wrappers(model) for n, v, m in w.masked_weights]


def _snapshot(targets):
    return ([t.mask.numpy().copy() for t in targets], [t.weight.numpy().copy() for t in targets],
            [{k: np.array(v) for k, v in t.state.items()} for t in targets])


def _assert_unchanged(before, after):
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)  # NaN == NaN here
    for a, b in zip(before[2], after[2]):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def _active_index(mask):
    return tuple(np.argwhere(mask > 0)[0])


class Inject(keras.callbacks.Callback):
    """Before the DST callback: a NaN/Inf in an active kernel entry at BAD_STEP."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.saved = None

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) != BAD_STEP:
            return
        wrapper = ks.sparse_wrappers(self.model)[1]
        kernel, mask = wrapper.layer.kernel, wrapper.kernel_mask
        index = _active_index(mask.numpy())
        value = kernel.numpy()
        self.saved = (kernel, index, value[index])
        value[index] = self.value
        kernel.assign(value)
        self.before = _snapshot(_targets(self.model))


class Repair(keras.callbacks.Callback):
    """After the DST callback: checks the skipped update, puts the entry back."""

    def __init__(self, inject):
        super().__init__()
        self.inject = inject
        self.logged = None

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) != BAD_STEP:
            return
        _assert_unchanged(self.inject.before, _snapshot(_targets(self.model)))
        self.logged = logs.get("skipped_updates")
        kernel, index, original = self.inject.saved
        value = kernel.numpy()
        value[index] = original
        kernel.assign(value)


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_weight_at_update_skips_it_and_training_continues(method):
    model = _model(method)
    callback = ks.callbacks.DynamicSparseTraining(_algorithm(method))
    updates, changed = [], []
    original = callback.algorithm.update

    def update(step, targets, *args, **kwargs):
        before = [t.mask.numpy().copy() for t in targets]
        stats = original(step, targets, *args, **kwargs)
        updates.append((step, bool(stats)))
        changed.append(any(not np.array_equal(b, t.mask.numpy()) for b, t in zip(before, targets)))
        return stats

    callback.algorithm.update = update
    inject = Inject(np.nan if method != "dsr" else np.inf)
    repair = Repair(inject)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5, 5, 2)).astype("float32"), rng.integers(0, 3, 64)
    with pytest.warns(RuntimeWarning, match=f"update at step {BAD_STEP} was skipped .*weight 'fc/kernel'"):
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False,
                            callbacks=[inject, callback, repair])
    assert inject.saved is not None and repair.logged == 1.0
    assert updates == [(s, s != BAD_STEP) for s in range(INTERVAL, 9, INTERVAL)]
    assert history.history["skipped_updates"][-1] == 1.0
    assert np.all(np.isfinite(history.history["loss"]))
    # later updates run (above) and, where this tiny run moves masks at all, move them
    assert any(changed[i] for i, (s, _) in enumerate(updates) if s > BAD_STEP) or method in ("deep_r", "dsr")
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)
    assert all_masked_entries_zero(model)


@pytest.mark.parametrize("method", [m for m in METHODS if alg.get(m).needs_gradients])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_gradient_at_update_is_skipped(method, bad):
    model = _model(method)
    targets = _targets(model)
    algorithm = _algorithm(method)
    algorithm.setup(targets, 100)
    algorithm.save_state(targets)
    before = _snapshot(targets)
    grads = [np.random.default_rng(i).normal(size=t.weight.shape).astype("float32")
             for i, t in enumerate(targets)]
    grads[-1][0, 0] = bad
    with pytest.warns(RuntimeWarning, match="gradient of 'logits/kernel'"):
        assert algorithm.update(INTERVAL, targets, grads, model.optimizer) == {}
    assert algorithm.skipped_updates == 1
    _assert_unchanged(before, _snapshot(targets))
    grads[-1][0, 0] = 0.0  # the same update with finite gradients does run
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert algorithm.update(INTERVAL, targets, grads, model.optimizer)


@pytest.mark.parametrize("method", [m for m in METHODS if not alg.get(m).needs_gradients])
def test_unused_nonfinite_gradient_does_not_skip(method):
    model = _model(method)
    targets = _targets(model)
    algorithm = _algorithm(method)
    algorithm.setup(targets, 100)
    grads = [np.full(t.weight.shape, np.nan, np.float32) for t in targets]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert algorithm.update(INTERVAL, targets, grads, model.optimizer)
    assert algorithm.skipped_updates == 0


def test_on_nonfinite_raise_changes_nothing():
    model = _model("rigl")
    targets = _targets(model)
    algorithm = _algorithm("rigl", on_nonfinite="raise")
    algorithm.setup(targets, 100)
    algorithm.save_state(targets)
    kernel = targets[0].weight
    value = kernel.numpy()
    value[_active_index(targets[0].mask.numpy())] = np.inf
    kernel.assign(value)
    before = _snapshot(targets)
    grads = [np.ones(t.weight.shape, np.float32) for t in targets]
    with pytest.raises(FloatingPointError, match="weight 'conv/kernel'"):
        algorithm.update(INTERVAL, targets, grads, model.optimizer)
    _assert_unchanged(before, _snapshot(targets))


@pytest.mark.parametrize("bad", ["ignore", "", None, 1, True])
def test_bad_on_nonfinite_raises_value_error(bad):
    with pytest.raises(ValueError, match="`on_nonfinite` must be one of \\['skip', 'raise'\\]"):
        alg.RigL(on_nonfinite=bad)
    with pytest.raises(ValueError, match="on_nonfinite"):
        ks.callbacks.GMP(on_nonfinite=bad)


@pytest.mark.parametrize("method", METHODS)
def test_on_nonfinite_round_trips_through_config(method):
    algorithm = _algorithm(method, on_nonfinite="raise")
    assert algorithm.get_config()["on_nonfinite"] == "raise"
    again = alg.get({"class_name": method, "config": algorithm.get_config()})
    assert again.on_nonfinite == "raise"
    callback = ks.callbacks.DynamicSparseTraining(algorithm)
    restored = ks.callbacks.DynamicSparseTraining.from_config(callback.get_config())
    assert restored.algorithm.on_nonfinite == "raise"
