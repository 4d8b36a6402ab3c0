"""Exact resume: an interrupted-and-resumed run ends where an uninterrupted one does.

Covers `keras.callbacks.BackupAndRestore` (kill + rerun with the same backup
dir) and `ModelCheckpoint` + `keras.models.load_model` (no custom_objects,
safe_mode on). Masks come from `sparsify`, then are changed mid-training by a
"mask-changing operation" at an epoch end. ToST ghost gates (GhostGate alpha,
annealed by a callback) must survive too. DST callbacks, with their algorithm
state, are covered for every algorithm in `test_algorithms_resume.py`.
"""

import keras
import numpy as np
import pytest

import keras_sparse
from testing import Interrupt, KillAt, all_masked_entries_zero

EPOCHS = 4
MASK_EPOCH = 1  # mask-changing op runs at the end of this epoch


def _op_random_pruning(model, epoch):
    keras_sparse.pruning.random_pruning(model, 0.9, scope="layer", seed=1000 + epoch)


def _op_none(model, epoch):
    pass


MASK_OPS = {"none": _op_none, "random_pruning": _op_random_pruning}


class MaskOpAndAnneal(keras.callbacks.Callback):
    """Changes masks at MASK_EPOCH and anneals the ghost gate each epoch.

    Acts from the epoch index Keras passes in, which is restored on resume,
    so no update is repeated or skipped.
    """

    def __init__(self, op):
        super().__init__()
        self.op = op

    def on_epoch_begin(self, epoch, logs=None):
        for gate in keras_sparse.tost.ghost_layers(self.model, keras_sparse.tost.GhostGate):
            gate.alpha.assign(1.0 - epoch / EPOCHS)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == MASK_EPOCH:
            MASK_OPS[self.op](self.model, epoch)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(48, 10)).astype("float32"), rng.integers(0, 3, 48).astype("int32")


def _model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((10,))
    h = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    g = keras.layers.Dense(16, activation="relu", name="fc2")(h)
    g = keras_sparse.tost.GhostGate(alpha=1.0, name="ghost")([g, h])
    outputs = keras.layers.Dense(3, name="logits")(g)
    sparse = keras_sparse.sparsify(keras.Model(inputs, outputs), 0.75, distribution="erk", seed=5)
    sparse.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return sparse


def _state(model):
    masks = keras_sparse.pruning.get_masks(model)
    # by position: paths can differ after load_model, the order cannot.
    weights = {f"{i}:{v.name}": v.numpy() for i, v in enumerate(model.weights)}
    # optimizer slot names get re-prefixed on load (cosmetic): index only.
    opt = {i: v.numpy() for i, v in enumerate(model.optimizer.variables)}
    return masks, weights, opt


def _assert_same(a, b, atol=1e-6):
    masks_a, weights_a, opt_a = a
    masks_b, weights_b, opt_b = b
    assert masks_a.keys() == masks_b.keys()
    for key in masks_a:
        np.testing.assert_array_equal(masks_a[key], masks_b[key], err_msg=key)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        np.testing.assert_allclose(weights_a[key], weights_b[key], atol=atol, err_msg=key)
    assert sorted(opt_a) == sorted(opt_b)
    for key in opt_a:
        np.testing.assert_allclose(opt_a[key], opt_b[key], atol=atol, err_msg=key)


def _fit(model, callbacks, initial_epoch=0):
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=EPOCHS, initial_epoch=initial_epoch,
              shuffle=False, verbose=0, callbacks=callbacks)


_REFERENCE = {}


def _reference(op):
    if op not in _REFERENCE:
        keras.utils.clear_session()
        model = _model()
        _fit(model, [MaskOpAndAnneal(op)])
        _REFERENCE[op] = _state(model)
    return _REFERENCE[op]


@pytest.mark.parametrize("op", sorted(MASK_OPS))
@pytest.mark.parametrize(
    "kill_epoch", [pytest.param(1, marks=pytest.mark.slow), 2, pytest.param(3, marks=pytest.mark.slow)])
def test_backup_and_restore_resume_matches_uninterrupted(tmp_path, op, kill_epoch):
    reference = _reference(op)
    backup = str(tmp_path / "backup")
    model = _model()
    with pytest.raises(Interrupt):
        # Mask-changing callbacks go BEFORE BackupAndRestore: callbacks run in
        # list order, so the backup taken at epoch end includes the update.
        _fit(model, [MaskOpAndAnneal(op), keras.callbacks.BackupAndRestore(backup),
                     KillAt(kill_epoch)])
    keras.utils.clear_session()
    resumed = _model()  # fresh process state: same construction, masks re-drawn
    _fit(resumed, [MaskOpAndAnneal(op), keras.callbacks.BackupAndRestore(backup)])
    _assert_same(_state(resumed), reference)
    assert int(resumed.optimizer.iterations.numpy()) == EPOCHS * 3
    assert all_masked_entries_zero(resumed)


@pytest.mark.full
def test_backup_listed_before_mask_callback_loses_the_update(tmp_path):
    """Documents a pitfall of callbacks that change masks in `on_epoch_end`:
    BackupAndRestore first in the list saves the epoch-end state before such
    a callback runs; a kill right after loses that update. keras_sparse's DST
    callbacks change masks at batch ends, before any epoch-end save, so they
    work in either order (test_algorithms_resume.py)."""
    reference = _reference("random_pruning")
    backup = str(tmp_path / "backup")
    with pytest.raises(Interrupt):
        _fit(_model(), [keras.callbacks.BackupAndRestore(backup),
                        MaskOpAndAnneal("random_pruning"), KillAt(MASK_EPOCH + 1)])
    keras.utils.clear_session()
    resumed = _model()
    _fit(resumed, [keras.callbacks.BackupAndRestore(backup), MaskOpAndAnneal("random_pruning")])
    masks = keras_sparse.pruning.get_masks(resumed)
    assert any(not np.array_equal(masks[k], reference[0][k]) for k in masks)


@pytest.mark.full
@pytest.mark.parametrize("op", sorted(MASK_OPS))
@pytest.mark.parametrize("kill_epoch", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_checkpoint_load_model_resume_matches_uninterrupted(tmp_path, op, kill_epoch):
    reference = _reference(op)
    path = str(tmp_path / "ckpt-{epoch}.keras")
    model = _model()
    with pytest.raises(Interrupt):
        _fit(model, [MaskOpAndAnneal(op), keras.callbacks.ModelCheckpoint(path),
                     KillAt(kill_epoch)])
    keras.utils.clear_session()
    # ModelCheckpoint numbers epochs from 1: ckpt-k holds the end of epoch k-1.
    resumed = keras.models.load_model(str(tmp_path / f"ckpt-{kill_epoch}.keras"))
    assert all_masked_entries_zero(resumed)
    _fit(resumed, [MaskOpAndAnneal(op)], initial_epoch=kill_epoch)
    _assert_same(_state(resumed), reference)


def test_masks_and_ghost_alpha_survive_save_load(tmp_path):
    model = _model()
    x, y = _data()
    keras_sparse.pruning.snip(model, (x, y), 0.85)  # pruning-at-init masks
    gate = model.get_layer("ghost")
    gate.alpha.assign(0.3)  # annealed value differs from config alpha=1.0
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects, safe_mode on
    assert float(loaded.get_layer("ghost").alpha.numpy()) == pytest.approx(0.3)
    masks, loaded_masks = keras_sparse.pruning.get_masks(model), keras_sparse.pruning.get_masks(loaded)
    for key in masks:
        np.testing.assert_array_equal(masks[key], loaded_masks[key])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    # training the loaded model keeps the loaded masks
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for key, mask in keras_sparse.pruning.get_masks(loaded).items():
        np.testing.assert_array_equal(mask, masks[key])
    assert all_masked_entries_zero(loaded)
