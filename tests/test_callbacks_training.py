"""Invariants of every algorithm during model.fit, over structure x layer type."""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg

from testing import algorithm, data, make_model, sparse_model


@pytest.mark.parametrize("method", ["set", "rigl", "neurrev", "granet_st", "mest", "dsr"])
def test_grown_weights_zero_and_moments_reset(method):
    model = sparse_model(method, "unstructured")
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # build Adam slots with nonzero moments
    opt = model.optimizer
    ts = [alg.Target(f"{w.name}/{n}", v, m, w.sparsity_of(n))
          for w in ks.sparse_wrappers(model) for n, v, m in w.masked_weights]
    a = algorithm(method, "unstructured")
    a.setup(ts, 1000)
    before = [t.mask.numpy().copy() for t in ts]
    grads = [np.random.default_rng(1).random(t.weight.shape).astype("float32") for t in ts]
    a.update(2, ts, grads, opt)
    any_grown = False
    for t, old in zip(ts, before):
        new = t.mask.numpy()
        grown = (new == 1) & (old == 0)
        any_grown |= bool(grown.any())
        assert np.all(t.weight.numpy()[grown] == 0.0)
        for slot in alg.optimizer_state.optimizer_slots(opt, t.weight):
            assert np.all(slot.numpy()[grown] == 0.0)
    assert any_grown


@pytest.mark.full
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_same_seed_same_masks(method):
    def run():
        model = sparse_model(method, "unstructured")
        x, y = data()
        model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[ks.callbacks.DynamicSparseTraining(algorithm(method, "unstructured", seed=5))])
        return [m.numpy() for w in ks.sparse_wrappers(model) for _, _, m in w.masked_weights]

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.full
def test_steps_per_execution_updates_on_schedule():
    updates = []

    class Spy(alg.RigL):
        def update(self, step, *args, **kwargs):
            updates.append(step)
            return super().update(step, *args, **kwargs)

    model = sparse_model("rigl", "unstructured", spe=3, jit=True)  # XLA path
    x, y = data(160)  # 10 steps per epoch, 2 epochs = 20 steps
    cb = ks.callbacks.DynamicSparseTraining(Spy(update_interval=4, stop_step=1.0))
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[cb], verbose=0)
    assert updates == [4, 8, 12, 16, 20]
    assert int(model.optimizer.iterations.numpy()) == 20


@pytest.mark.full
def test_resume_continues_schedule_from_iterations():
    updates = []

    class Spy(alg.SET):
        def update(self, step, *args, **kwargs):
            updates.append(step)
            return super().update(step, *args, **kwargs)

    model = sparse_model("set", "unstructured")
    x, y = data(64)  # 4 steps per epoch
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    cb = ks.callbacks.DynamicSparseTraining(Spy(update_interval=3, stop_step=12), total_steps=12)
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[cb], verbose=0)
    assert updates == [6, 9, 12]


@pytest.mark.full
def test_logs_have_dst_figures():
    model = sparse_model("neurrev", "unstructured")
    x, y = data()
    cb = ks.callbacks.NeurRev(update_interval=2, per_layer=True, drop_fraction_decay="constant")
    h = model.fit(x, y, batch_size=16, epochs=1, callbacks=[cb], verbose=0)
    for key in ("model_sparsity", "masked_sparsity", "drop_fraction", "regrown", "itop_rate", "awakened"):
        assert key in h.history, key
    for prefix in ("regrown/dense", "itop_rate/conv2d", "awakened/dense", "drop_fraction/conv2d"):
        assert any(k.startswith(prefix) for k in h.history), prefix


# ----------------------------------------------------------- bad input
def _fit(model, cb, epochs=1):
    x, y = data(32)
    model.fit(x, y, batch_size=16, epochs=epochs, callbacks=[cb], verbose=0)


def _masks(model):
    return [m.numpy().copy() for w in ks.sparse_wrappers(model) for _, _, m in w.masked_weights]


def test_model_not_sparsified():
    model = make_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="no SparseWrapper"):
        _fit(model, ks.callbacks.RigL())


def test_stop_step_beyond_training_fails_before_mask_change():
    model = sparse_model("rigl", "unstructured")
    before = _masks(model)
    with pytest.raises(ValueError, match="beyond the end of training"):
        _fit(model, ks.callbacks.RigL(update_interval=1, stop_step=1000))
    for a, b in zip(before, _masks(model)):
        np.testing.assert_array_equal(a, b)


def test_neurrev_negative_relaxed_sparsity():
    model = sparse_model("neurrev", "unstructured")
    with pytest.raises(ValueError, match="s - p must be >= 0"):
        _fit(model, ks.callbacks.NeurRev(p=0.9))


def test_block_structure_on_random_masks_and_ungroupable_layers():
    model = ks.sparsify(make_model(), 0.8, distribution="uniform", keep_dense=None, seed=0)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Unstructured random masks are not 1x4 blocks.
    with pytest.raises(ValueError, match="not made of 1x4 blocks"):
        _fit(model, ks.callbacks.SET(structure="block"))
    keras.utils.set_random_seed(0)
    odd = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    # A weight that cannot be grouped falls back to unstructured, with a note.
    with pytest.warns(UserWarning, match=r"shape \(5, 3\) cannot be made of 1x4 blocks.*unstructured"):
        sparse = ks.sparsify(odd, 0.8, structure="block", keep_dense=None)
    wrapper = ks.sparse_wrappers(sparse)[0]
    assert wrapper.structure_of("kernel") == ks.masks.Structure("unstructured")
    assert int(wrapper.kernel_mask.numpy().sum()) == ks.masks.num_active(15, 0.8)


def test_gradual_target_below_start_sparsity():
    model = sparse_model("set", "unstructured")  # 0.8 sparse
    with pytest.raises(ValueError, match="sparser than the target"):
        _fit(model, ks.callbacks.GMP(sparsity=0.5))


def test_granet_st_needs_sparse_start():
    model = sparse_model("gmp", "unstructured")  # dense start
    with pytest.raises(ValueError, match="GraNetST starts from a sparse model"):
        _fit(model, ks.callbacks.GraNetST(sparsity=0.8))
