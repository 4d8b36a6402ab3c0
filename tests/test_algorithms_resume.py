"""Exact resume of dynamic sparse training, for every registered algorithm.

An interrupted run (killed by an exception at the start of an epoch) and
resumed in a fresh model must end with the masks, weights, optimizer state
and algorithm state of an uninterrupted run with the same seed, with every
mask update done exactly once:

- `keras.callbacks.BackupAndRestore`: a new model built from code (same
  seeds), a new callback, the same backup directory; both callback orders.
- `model.save` / `ModelCheckpoint` + `keras.models.load_model` (no
  custom_objects, safe_mode on) and `fit(initial_epoch=k)` with a new callback.

The algorithm state (NeurRev's theta*, the ITOP set, DSR's threshold,
Deep-R's signs, GMP/GraNet's starting sparsity) travels in
`SparseWrapper.training_state`; randomness comes from (seed, step).
"""

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg
from testing import Interrupt, KillAt, all_masked_entries_zero

METHODS = alg.registered_names()
EPOCHS = 4
STEPS = 3  # per epoch: 48 samples, batch 16
INTERVAL = 2  # updates at steps 2, 4, ..., 12 (stop_step=1.0)
UPDATE_STEPS = list(range(INTERVAL, EPOCHS * STEPS + 1, INTERVAL))


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(48, 6, 6, 2)).astype("float32"), rng.integers(0, 3, 48).astype("int32")


def _start_sparsity(method):
    return {"gmp": 0.0, "granet": 0.0, "granet_st": 0.5}.get(method, 0.75)


def _model(method):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    sparse = ks.sparsify(keras.Model(inputs, outputs), _start_sparsity(method),
                         distribution="uniform", keep_dense=None, seed=5)
    # no XLA: compiling dominates these few-step fits on CPU
    sparse.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    return sparse


def _callback(method, updates=None):
    config = {"update_interval": INTERVAL, "stop_step": 1.0, "seed": 3}
    if method in ("gmp", "granet", "granet_st"):
        config["sparsity"] = 0.8
    if method == "deep_r":
        config["temperature"] = 1e-3  # exercises the (seed, step) noise stream
    callback = ks.callbacks.DynamicSparseTraining({"class_name": method, "config": config})
    if updates is not None:  # record the step of every update actually run
        algorithm = callback.algorithm
        original = algorithm.update

        def update(step, *args, **kwargs):
            updates.append(step)
            return original(step, *args, **kwargs)

        algorithm.update = update
    return callback


def _fit(model, callbacks, initial_epoch=0):
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=EPOCHS, initial_epoch=initial_epoch,
              shuffle=False, verbose=0, callbacks=callbacks)


def _training_state(model):
    return {f"{w.name}/{name}": {k: np.asarray(v) for k, v in w.training_state(name).items()}
            for w in ks.sparse_wrappers(model) for name, _, _ in w.masked_weights}


def _state(model):
    return {
        "masks": ks.pruning.get_masks(model),
        # by position: variable paths can differ after load_model
        "weights": [v.numpy() for v in model.weights],
        "optimizer": [v.numpy() for v in model.optimizer.variables],
        "training": _training_state(model),
    }


def _assert_same(a, b, atol=1e-5):
    assert a["masks"].keys() == b["masks"].keys()
    for key in a["masks"]:
        np.testing.assert_array_equal(a["masks"][key], b["masks"][key], err_msg=key)
    for group in ("weights", "optimizer"):
        assert len(a[group]) == len(b[group])
        for i, (u, v) in enumerate(zip(a[group], b[group])):
            np.testing.assert_allclose(u, v, atol=atol, err_msg=f"{group}[{i}]")
    assert a["training"].keys() == b["training"].keys()
    for key, slots in a["training"].items():
        assert slots.keys() == b["training"][key].keys(), key
        for slot, value in slots.items():
            np.testing.assert_allclose(value, b["training"][key][slot], atol=atol,
                                       err_msg=f"{key}:{slot}")


_REFERENCE = {}


def _reference(method):
    """Masks, weights and state of the uninterrupted run (cached per method)."""
    if method not in _REFERENCE:
        keras.utils.clear_session()
        updates = []
        model = _model(method)
        _fit(model, [_callback(method, updates)])
        assert updates == UPDATE_STEPS
        _REFERENCE[method] = _state(model)
    return _REFERENCE[method]


def _first_run(method, callbacks, kill_epoch, updates):
    model = _model(method)
    with pytest.raises(Interrupt):
        _fit(model, [_callback(method, updates), *callbacks, KillAt(kill_epoch)])
    return model


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", ["dst_first", "backup_first"])
def _backup_callbacks(method, backup, order, updates):
    dst, bar = _callback(method, updates), keras.callbacks.BackupAndRestore(backup)
    return [dst, bar] if order == "dst_first" else [bar, dst]


@pytest.mark.full
@pytest.mark.parametrize("method", METHODS)
def test_backup_and_restore_two_kills_match_uninterrupted(tmp_path, method):
    """Killed at epoch 1 and again at epoch 3, each run a fresh model from
    code; the callback order alternates between runs (either order works).

    Epoch 1 resumes at step 3, one step after an update, so NeurRev's theta*
    and Deep-R's signs differ from the weights at the resume point."""
    reference = _reference(method)
    backup = str(tmp_path / "backup")
    updates = []
    for kill_epoch, order in ((1, "dst_first"), (3, "backup_first")):
        keras.utils.clear_session()
        with pytest.raises(Interrupt):
            _fit(_model(method), [*_backup_callbacks(method, backup, order, updates), KillAt(kill_epoch)])
        assert updates == [s for s in UPDATE_STEPS if s <= kill_epoch * STEPS]
    keras.utils.clear_session()
    resumed = _model(method)
    _fit(resumed, _backup_callbacks(method, backup, "dst_first", updates))
    assert updates == UPDATE_STEPS  # none repeated, none skipped
    assert int(resumed.optimizer.iterations.numpy()) == EPOCHS * STEPS
    _assert_same(_state(resumed), reference)
    assert all_masked_entries_zero(resumed)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("order", ["dst_first", "backup_first"])
@pytest.mark.parametrize("kill_epoch", [1, 2, 3])
def test_backup_and_restore_resume_matches_uninterrupted(tmp_path, method, order, kill_epoch):
    reference = _reference(method)
    backup = str(tmp_path / "backup")
    updates = []
    with pytest.raises(Interrupt):
        _fit(_model(method), [*_backup_callbacks(method, backup, order, updates), KillAt(kill_epoch)])
    assert updates == [s for s in UPDATE_STEPS if s <= kill_epoch * STEPS]
    keras.utils.clear_session()
    resumed = _model(method)  # a fresh process: model from code, masks re-drawn
    _fit(resumed, _backup_callbacks(method, backup, order, updates))
    assert updates == UPDATE_STEPS
    _assert_same(_state(resumed), reference)
    assert all_masked_entries_zero(resumed)


@pytest.mark.full
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kill_epoch", [3, pytest.param(1, marks=pytest.mark.slow),
                                        pytest.param(2, marks=pytest.mark.slow)])
def test_checkpoint_load_model_resume_matches_uninterrupted(tmp_path, method, kill_epoch):
    reference = _reference(method)
    updates = []
    _first_run(method, [keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.keras"))],
               kill_epoch, updates)
    keras.utils.clear_session()
    # ModelCheckpoint numbers epochs from 1: ckpt-k holds the end of epoch k-1.
    resumed = keras.models.load_model(str(tmp_path / f"ckpt-{kill_epoch}.keras"))
    _fit(resumed, [_callback(method, updates)], initial_epoch=kill_epoch)
    assert updates == UPDATE_STEPS
    _assert_same(_state(resumed), reference)


@pytest.mark.parametrize("method", [m if m == "neurrev" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in METHODS])
def test_save_load_model_continue_matches_uninterrupted(tmp_path, method):
    reference = _reference(method)
    updates = []
    model = _first_run(method, [], 2, updates)
    path = str(tmp_path / "interrupted.keras")
    model.save(path)
    keras.utils.clear_session()
    loaded = keras.models.load_model(path)
    assert _training_state(loaded).keys() == _training_state(model).keys()
    _fit(loaded, [_callback(method, updates)], initial_epoch=2)
    assert updates == UPDATE_STEPS
    _assert_same(_state(loaded), reference)


@pytest.mark.full
@pytest.mark.parametrize("method", ["gmp", "dsr"])
def test_resume_without_saved_state_diverges(tmp_path, method):
    """Control: the state matters. Dropping it at the resume point (as before
    it was saved) changes the masks the resumed run ends with."""
    reference = _reference(method)
    _first_run(method, [keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.keras"))], 3, [])
    resumed = keras.models.load_model(str(tmp_path / "ckpt-3.keras"))
    for wrapper in ks.sparse_wrappers(resumed):
        for name, _, _ in wrapper.masked_weights:
            assert wrapper.training_state(name)  # saved and loaded
            wrapper.training_state(name).clear()
    _fit(resumed, [_callback(method)], initial_epoch=3)
    masks = ks.pruning.get_masks(resumed)
    assert any(not np.array_equal(masks[k], reference["masks"][k]) for k in masks)


@pytest.mark.parametrize("method, slot", [("neurrev", "reference"), ("deep_r", "signs"),
                                          ("dsr", "threshold"), ("gmp", "initial_active"),
                                          ("rigl", "ever_active")])
def test_setup_reads_saved_state_not_the_current_model(method, slot):
    model = _model(method)
    callback = _callback(method)
    targets = [alg.Target(f"{w.name}/{n}", v, m, w.sparsity_of(n), state=w.training_state(n))
               for w in ks.sparse_wrappers(model) for n, v, m in w.masked_weights]
    algorithm = callback.algorithm
    algorithm.setup(targets, 100)
    algorithm.save_state(targets)
    saved = {t.key: np.array(t.state[slot]) for t in targets}
    for t in targets:  # the model moves on; the saved state does not
        t.weight.assign(-2.0 * t.weight.numpy() - 0.5 * t.mask.numpy())
    fresh = type(algorithm)(**algorithm.get_config())
    fresh.setup(targets, 100)
    for i, t in enumerate(targets):
        np.testing.assert_array_equal(fresh.persistent_state(i)[slot], saved[t.key], err_msg=t.key)
    for t in targets:
        t.state.clear()
    fresh.setup(targets, 100)  # no saved state: starts from the current model
    if slot in ("reference", "signs"):
        assert any(not np.array_equal(fresh.persistent_state(i)[slot], saved[t.key])
                   for i, t in enumerate(targets))


def _strip_training_state(src, dst):
    """A copy of a .keras file as keras_sparse 0.1.0 wrote it: no state entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith(".weights.h5"):
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "a") as f:
                    names = []
                    f.visit(names.append)
                    doomed = [n for n in names if ":" in n.rsplit("/", 1)[-1]]
                    assert doomed, "the file should hold training state"
                    for name in doomed:
                        del f[name]
                data = buffer.getvalue()
            zout.writestr(item, data)


def test_file_without_training_state_loads_and_trains(tmp_path):
    model = _model("neurrev")
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[_callback("neurrev")])
    src, old = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(src)
    _strip_training_state(src, old)
    loaded = keras.models.load_model(old)
    assert not any(_training_state(loaded).values())
    masks = ks.pruning.get_masks(model)
    for key, mask in ks.pruning.get_masks(loaded).items():
        np.testing.assert_array_equal(mask, masks[key])
    # continues: fresh state from the loaded weights, then saved again
    loaded.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[_callback("neurrev")])
    assert all(s.keys() == {"ever_active", "last_grown", "reference"}
               for s in _training_state(loaded).values())
    assert all_masked_entries_zero(loaded)


def test_static_model_has_no_training_state_and_saves_as_before(tmp_path):
    model = _model("set")
    path = tmp_path / "static.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        names = []
        f.visit(names.append)
    assert not any(":" in n for n in names)
    assert not any(_training_state(keras.models.load_model(path)).values())


def test_training_state_of_unknown_weight_in_file_raises(tmp_path):
    model = _model("set")
    wrapper = ks.sparse_wrappers(model)[0]
    wrapper.training_state("kernel")["ever_active"] = np.ones(wrapper.kernel_mask.shape, np.uint8)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "a") as f:
        group = f[[n for n in _h5_names(f) if n.endswith("kernel:ever_active")][0].rsplit("/", 1)[0]]
        group["bias:ever_active"] = np.ones(3, np.uint8)
    with pytest.raises(ValueError, match="no masked weight 'bias'"):
        _model("set").load_weights(path)


def _h5_names(f):
    names = []
    f.visit(names.append)
    return names


def test_training_state_of_wrong_shape_raises_before_mask_changes():
    model = _model("neurrev")
    masks = ks.pruning.get_masks(model)
    wrapper = ks.sparse_wrappers(model)[0]
    wrapper.training_state("kernel")["reference"] = np.zeros((2, 2), np.float32)
    x, y = _data()
    with pytest.raises(ValueError, match="'reference' of weight 'conv/kernel' has shape"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[_callback("neurrev")])
    for key, mask in ks.pruning.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])


def test_training_state_rejects_unknown_weight_name():
    wrapper = ks.sparse_wrappers(_model("set"))[0]
    with pytest.raises(ValueError, match="no masked weight 'bias'. Accepted names: \\['kernel'\\]"):
        wrapper.training_state("bias")


@pytest.mark.full
def test_tost_callback_resumes_ghost_schedule_with_backup(tmp_path):
    """ToST's gate and Swish beta come from optimizer.iterations and are
    variables: a BackupAndRestore resume ends where an uninterrupted run does."""

    def build():
        keras.utils.set_random_seed(7)
        inputs = keras.Input((10,))
        h = keras.layers.Dense(8, name="fc1")(inputs)
        g = ks.tost.GhostSwish(name="act")(keras.layers.Dense(8, name="fc2")(h))
        g = ks.tost.GhostGate(name="ghost")([g, h])
        model = ks.sparsify(keras.Model(inputs, keras.layers.Dense(3, name="out")(g)), 0.5,
                            distribution="uniform", keep_dense=None, seed=1)
        model.compile(keras.optimizers.Adam(1e-2),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
        return model

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 10)).astype("float32"), rng.integers(0, 3, 48)

    def fit(model, callbacks):
        model.fit(x, y, batch_size=16, epochs=EPOCHS, verbose=0, shuffle=False,
                  callbacks=[ks.tost.ToSTCallback(ghost_fraction=0.9), *callbacks])
        return [v.numpy() for v in model.weights]

    reference = fit(build(), [])
    backup = str(tmp_path / "b")
    with pytest.raises(Interrupt):
        fit(build(), [keras.callbacks.BackupAndRestore(backup), KillAt(2)])
    keras.utils.clear_session()
    resumed = fit(build(), [keras.callbacks.BackupAndRestore(backup)])
    assert len(resumed) == len(reference)  # alpha and beta are among the weights
    for u, v in zip(resumed, reference):
        np.testing.assert_allclose(u, v, atol=1e-5)


_SUBPROCESS_RUN = """
import os, sys
import numpy as np
import keras
import tests.test_algorithms_resume as T

method, backup, out, kill = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class HardKill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == kill:
            os._exit(3)  # no exception handlers, no on_train_end: a real kill


model = T._model(method)
T._fit(model, [T._callback(method), keras.callbacks.BackupAndRestore(backup), HardKill()])
state = T._state(model)
arrays = {f"mask/{k}": v for k, v in state["masks"].items()}
arrays.update({f"weight/{i}": v for i, v in enumerate(state["weights"])})
arrays.update({f"optimizer/{i}": v for i, v in enumerate(state["optimizer"])})
arrays.update({f"training/{k}/{s}": v for k, slots in state["training"].items() for s, v in slots.items()})
np.savez(out, **arrays)
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["neurrev", "dsr", "gmp"])
def test_backup_and_restore_across_processes_with_hard_kill(tmp_path, method):
    """Real processes: the first is killed with os._exit at epoch 1, the
    second rebuilds the model from code and resumes from the backup."""
    import os
    import pathlib
    import subprocess
    import sys

    root = str(pathlib.Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.path.join(root, "tests")]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    backup, out = str(tmp_path / "backup"), str(tmp_path / "state.npz")
    run = [sys.executable, "-c", _SUBPROCESS_RUN, method, backup, out]
    first = subprocess.run(run + ["1"], cwd=root, env=env, capture_output=True, text=True)
    assert first.returncode == 3, first.stderr[-2000:]
    second = subprocess.run(run + ["-1"], cwd=root, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    reference = _reference(method)
    with np.load(out) as saved:
        for key, mask in reference["masks"].items():
            np.testing.assert_array_equal(saved[f"mask/{key}"], mask, err_msg=key)
        for i, value in enumerate(reference["weights"]):
            np.testing.assert_allclose(saved[f"weight/{i}"], value, atol=1e-5)
        for key, slots in reference["training"].items():
            for slot, value in slots.items():
                np.testing.assert_allclose(saved[f"training/{key}/{slot}"], value, atol=1e-5)
