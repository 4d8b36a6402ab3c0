"""DST mechanics inside `model.fit`, for every registered method.

- grown weights start at zero and only their optimizer moments are reset
  (method x structure x optimizer);
- the captured dense gradient is the loss gradient of the update step's batch;
- per-layer figures reach `History` and TensorBoard;
- bad input fails at `on_train_begin`, before any mask (or weight) changes;
- a seed fixes the masks of a run.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sparse as ks
from keras_sparse import algorithms as alg
from keras_sparse.algorithms.optimizer_state import optimizer_slots
from testing import METHOD_STRUCTURES, METHODS, algorithm, data, make_model, sparse_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RANDOM_GROWTH = {"set", "mest", "dsr", "deep_r"}  # grow by the seeded rng
OPTIMIZERS = {
    # Large steps so that Deep-R sees sign flips within a few steps.
    "adam": lambda: keras.optimizers.Adam(0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(1.0, momentum=0.9),
}


def masked(model):
    """`(weight, mask)` variables of every masked weight, in a fixed order."""
    return [(v, m) for w in ks.sparse_wrappers(model) for _, v, m in w.masked_weights]


def snapshot(model):
    return [(v.numpy().copy(), m.numpy().copy()) for v, m in masked(model)]


def method_config(method, structure, seed=0, interval=2):
    a = algorithm(method, structure, interval=interval, seed=seed)
    if method == "dsr":
        # H = 0.05 from the start: the tiny model has weights below it at
        # the first update, so DSR really prunes and (randomly) regrows.
        a = alg.DSR(initial_threshold=0.05, update_interval=interval, structure=structure, seed=seed)
    return a


# -------------------------------------------- grown weights and moments
class _BeforeUpdate(keras.callbacks.Callback):
    """Listed before the DST callback: state after the optimizer step, before the mask update."""

    def on_train_batch_end(self, batch, logs=None):
        opt = self.model.optimizer
        self.masks = [m.numpy().copy() for _, m in masked(self.model)]
        self.slots = [[s.numpy().copy() for s in optimizer_slots(opt, v)] for v, _ in masked(self.model)]


class _AfterUpdate(keras.callbacks.Callback):
    """Listed after the DST callback: checks what the mask update just did."""

    def __init__(self, before, method):
        super().__init__()
        self.before = before
        self.method = method
        self.grown = 0
        self.pruned = 0
        self.reset_nonzero_moments = 0  # moments that were nonzero and were reset

    def on_train_batch_end(self, batch, logs=None):
        opt = self.model.optimizer
        for i, (v, m) in enumerate(masked(self.model)):
            old, new, w = self.before.masks[i], m.numpy(), v.numpy()
            grown = (new == 1) & (old == 0)
            pruned = (new == 0) & (old == 1)
            self.grown += int(grown.sum())
            self.pruned += int(pruned.sum())
            assert np.all(w[new == 0] == 0.0), "pruned weights must be exactly 0"
            assert np.all(w[grown] == 0.0), "grown weights must start at 0"
            slots = optimizer_slots(opt, v)
            assert len(slots) == len(self.before.slots[i]) >= 1
            for s, s_old in zip(slots, self.before.slots[i]):
                s = s.numpy()
                assert np.all(s[grown] == 0.0), "moments of grown entries must be reset"
                # Every other entry keeps its moments. Chase removes channels
                # after RigL's step: an entry RigL regrew (moments reset) may
                # end in a removed channel, so its pruned entries are exempt.
                kept = ~grown & (new == 1) if self.method == "chase" else ~grown
                np.testing.assert_array_equal(s[kept], s_old[kept])
                self.reset_nonzero_moments += int(np.count_nonzero(s_old[grown]))


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("method,structure", METHOD_STRUCTURES)
def test_grown_weights_zero_and_moments_reset_during_fit(method, structure, opt_name):
    """After every mask update in fit: new connections are 0 with zero moments, other moments untouched.

    The gradient w.r.t. pruned entries is dense, so Adam/SGD-momentum slots
    there are nonzero before the update; the test requires some of them to
    be reset (not vacuous). GMP only prunes: nothing grows, pruned entries
    stay 0 through the following optimizer steps, no moment is touched.
    """
    model = sparse_model(method, structure, optimizer=OPTIMIZERS[opt_name]())
    x, y = data(160)  # 10 steps; updates at 2, 4, 6, 8 (GraNet regrows at 4 and 6)
    before = _BeforeUpdate()
    after = _AfterUpdate(before, method)
    cb = ks.callbacks.DynamicSparseTraining(method_config(method, structure))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[before, cb, after])
    assert cb.algorithm.stats or method == "deep_r", "no mask update happened"
    if method == "gmp":
        assert after.grown == 0 and after.pruned > 0
    else:
        assert after.grown > 0, "nothing was grown: the check is vacuous"
        assert after.reset_nonzero_moments > 0, "no nonzero moment needed a reset"


# ------------------------------------------------ captured gradients
@pytest.mark.parametrize("jit", [False, True])
def test_captured_gradient_is_the_dense_loss_gradient_of_the_update_batch(jit):
    """The buffer RigL grows from equals d loss / d kernel on the update step's batch.

    From `keras_sparse.gradients`: the capture runs inside `optimizer.apply`
    of the training step that brings `optimizer.iterations` from t - 1 to
    t (an update step), so it holds the gradient of the loss of the t-th
    batch of training (index t - 1; here `shuffle=False`, first epoch) at
    the weights *before* that step's optimizer update, i.e. after the
    previous step and after any earlier mask update. The gradient is dense:
    the mask acts through zeros in the kernel, not in the forward pass, so
    it is non-zero at pruned entries. The reference is computed here with
    `tf.GradientTape` on a restored copy of those weights, without any mask.
    """
    model = sparse_model("rigl", "unstructured", jit=jit)
    x, y = data(96)  # 6 steps of 16; interval 2: updates (and captures) at 2 and 4
    before_step = {}
    captured = {}

    class Snap(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy()) + 1
            before_step[step] = [v.numpy().copy() for v in self.model.weights]

    class Spy(alg.RigL):
        def update(self, step, targets, grads=None, optimizer=None):
            captured[step] = [np.array(g) for g in grads]
            return super().update(step, targets, grads, optimizer)

    rigl = Spy(update_interval=2, drop_fraction_decay="constant", stop_step=1.0)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[Snap(), ks.callbacks.DynamicSparseTraining(rigl)])
    assert sorted(captured) == [2, 4, 6]
    kernels = [v for v, _ in masked(model)]
    masks = [m for _, m in masked(model)]

    def dense_grad(step, batch):
        for v, value in zip(model.weights, before_step[step]):
            v.assign(value)
        xb, yb = x[16 * batch:16 * (batch + 1)], y[16 * batch:16 * (batch + 1)]
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=True))
        return [g.numpy() for g in tape.gradient(loss, kernels)], [m.numpy() for m in masks]

    for t in (2, 4, 6):
        ref, ms = dense_grad(t, t - 1)
        for g, r, m in zip(captured[t], ref, ms):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-8)
            pruned = m == 0
            # Dense: non-zero at pruned entries too (ReLU zeros leave some exact 0s).
            assert np.count_nonzero(g[pruned]) > 0.25 * pruned.sum(), "gradient must be dense"
        # The check tells neighbouring batches and post-step weights apart.
        other_batch, _ = dense_grad(t, t - 2)  # the previous batch
        after_step, _ = dense_grad(t + 1, t - 1) if t + 1 in before_step else (None, None)
        for wrong in (other_batch, after_step):
            if wrong is not None:
                assert any(not np.allclose(g, w_, rtol=1e-3, atol=1e-5)
                           for g, w_ in zip(captured[t], wrong))


# ---------------------------------------------------- per-layer logs
@pytest.mark.parametrize("method", ["neurrev", "dsr"])
def test_per_layer_figures_in_history_and_tensorboard(method, tmp_path):
    model = sparse_model(method, "unstructured")
    x, y = data(96)
    cb = ks.callbacks.DynamicSparseTraining(method_config(method, "unstructured"), per_layer=True)
    h = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[cb, keras.callbacks.TensorBoard(log_dir=str(tmp_path))])
    keys = [f"{w.name}/{name}" for w in ks.sparse_wrappers(model) for name, _, _ in w.masked_weights]
    assert len(keys) == 3  # conv2d, dense, dense_1 kernels
    figures = ["sparsity", "drop_fraction", "regrown", "itop_rate"] + (["awakened"] if method == "neurrev" else [])
    for key, (_, mask) in zip(keys, masked(model)):
        for figure in figures:
            assert f"{figure}/{key}" in h.history, f"{figure}/{key}"
        # The logged per-layer sparsity is the one of the final masks.
        assert h.history[f"sparsity/{key}"][-1] == pytest.approx(1 - mask.numpy().mean())
    for figure in ["model_sparsity", "masked_sparsity"] + figures[1:]:
        assert figure in h.history, figure
    tags = set()
    for event_file in tmp_path.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    for key in keys:
        for figure in figures:
            assert f"epoch_{figure}/{key}" in tags, (f"epoch_{figure}/{key}", sorted(tags))


# ----------------------------------------------------------- bad input
def _state(model):
    return [v.numpy().copy() for v in model.weights]


def _assert_unchanged(model, state):
    for a, b in zip(state, _state(model)):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 0  # not a single step ran


def _odd_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, name="odd"),
                              keras.layers.Dense(4, name="head")])
    # Unstructured masks; "odd/kernel" (input dim 5) cannot be grouped at all.
    sparse = ks.sparsify(model, 0.5, distribution="uniform", keep_dense=None, seed=0)
    sparse.compile("adam", LOSS)
    return sparse


@pytest.mark.parametrize("structure", ["block", "n:m"])
def test_structure_missing_from_masks_fails_before_mask_change(structure):
    model = _odd_model()
    state = _state(model)
    x, y = np.ones((32, 5), np.float32), np.zeros(32, np.int64)
    cb = ks.callbacks.SET(structure=structure, update_interval=1)
    with pytest.raises(ValueError) as e:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    _raised_in(e, "on_train_begin")
    message = str(e.value)
    # "odd/kernel" falls back to unstructured; "head/kernel" (8, 4) could
    # keep the structure, but its random mask does not.
    assert "'head/kernel'" in message and "'odd/kernel'" not in message, message
    assert f"structure={structure!r}" in message
    _assert_unchanged(model, state)
    # No gradient capture was left installed: plain fit still works.
    assert "apply" not in vars(model.optimizer)


def _dense_start():
    return sparse_model("gmp", "unstructured")  # masks all ones


def _sparse_start():
    return sparse_model("set", "unstructured")  # 0.8 sparse


def _unknown_length(model, cb):
    x, y = data(32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16)
    model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[cb])


# name: (model factory, callback factory, message pattern, where it raises).
# Invalid arguments raise when the callback is built (so before fit even
# starts); model-dependent problems in the callback's `on_train_begin`.
BAD = {
    "update_interval": (_sparse_start, lambda: ks.callbacks.RigL(update_interval=0),
                        "update_interval", "construction"),
    "update_interval_float": (_sparse_start, lambda: ks.callbacks.DynamicSparseTraining(
        {"class_name": "set", "config": {"update_interval": 2.5}}), "update_interval", "construction"),
    "drop_fraction_1": (_sparse_start, lambda: ks.callbacks.SET(drop_fraction=1.0), r"\(0, 1\)", "construction"),
    "drop_fraction_0": (_sparse_start, lambda: ks.callbacks.RigL(drop_fraction=0.0), r"\(0, 1\)", "construction"),
    "drop_fraction_neg": (_sparse_start, lambda: ks.callbacks.DSR(drop_fraction=-0.2), r"\(0, 1\)",
                          "construction"),
    "neurrev_s_minus_p": (_sparse_start, lambda: ks.callbacks.NeurRev(p=0.9), "s - p must be >= 0",
                          "on_train_begin"),
    "stop_beyond_training": (_sparse_start, lambda: ks.callbacks.SET(update_interval=1, stop_step=1000),
                             "beyond the end of training", "on_train_begin"),
    "gmp_target_below_start": (_sparse_start, lambda: ks.callbacks.GMP(sparsity=0.5),
                               "sparser than the target", "on_train_begin"),
    "granet_st_dense_start": (_dense_start, lambda: ks.callbacks.GraNetST(sparsity=0.8),
                              "GraNetST starts from a sparse model", "on_train_begin"),
    "block_on_random_masks": (_sparse_start, lambda: ks.callbacks.SET(structure="block"),
                              "not made of 1x4 blocks", "on_train_begin"),
}


def _raised_in(excinfo, where):
    frames = [entry.name for entry in excinfo.traceback]
    if where == "construction":
        assert "fit" not in frames, frames
    else:
        assert where in frames, frames


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_before_any_mask_change(case):
    make, make_cb, match, where = BAD[case]
    model = make()
    state = _state(model)
    x, y = data(32)
    with pytest.raises(ValueError, match=match) as e:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[make_cb()])
    _raised_in(e, where)
    _assert_unchanged(model, state)


def test_fractional_steps_with_unknown_length_fail_before_mask_change():
    model = _sparse_start()
    state = _state(model)
    with pytest.raises(ValueError, match="number of training steps is unknown") as e:
        _unknown_length(model, ks.callbacks.RigL(update_interval=1))
    _raised_in(e, "on_train_begin")
    _assert_unchanged(model, state)


def test_model_not_sparsified_fails_before_any_weight_change():
    model = make_model()
    model.compile("adam", LOSS)
    state = _state(model)
    x, y = data(32)
    with pytest.raises(ValueError, match="no SparseWrapper") as e:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[ks.callbacks.RigL()])
    _raised_in(e, "on_train_begin")
    _assert_unchanged(model, state)


# --------------------------------------------------------- determinism
_RUNS = {}


def _final_masks(method, seed):
    if (method, seed) not in _RUNS:
        model = sparse_model(method, "unstructured", optimizer=OPTIMIZERS["adam"]())
        initial = [m.numpy().copy() for _, m in masked(model)]
        x, y = data(96)
        cb = ks.callbacks.DynamicSparseTraining(method_config(method, "unstructured", seed=seed))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
        assert cb.algorithm.stats, "no mask update happened"
        assert any(not np.array_equal(a, m.numpy()) for a, (_, m) in zip(initial, masked(model))), \
            "masks never changed: the comparison would be vacuous"
        _RUNS[method, seed] = [m.numpy() for _, m in masked(model)]
    return _RUNS[method, seed]


@pytest.mark.full
@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_masks_every_method(method):
    first = _final_masks(method, 5)
    _RUNS.pop((method, 5))
    for a, b in zip(first, _final_masks(method, 5)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.full
@pytest.mark.parametrize("method", METHODS)
def test_different_seed_changes_only_random_growth(method):
    a, b = _final_masks(method, 5), _final_masks(method, 6)
    same = all(np.array_equal(u, v) for u, v in zip(a, b))
    if method in RANDOM_GROWTH:
        assert not same, f"{method} grows at random: another seed must give other masks"
    else:
        assert same, f"{method} has no randomness: the seed must not change its masks"
