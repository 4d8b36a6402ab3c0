"""`keras_sparse.gradients`: the capture on `optimizer.apply` cannot leak.

A `fit` that ends without `on_train_end` (Ctrl-C, an exception in another
callback, the library's own `on_nonfinite="raise"`) must not leave DST
unusable: the next DST `fit` works, with the optimizer's state (iterations,
momentum slots) kept, i.e. without recompiling.
"""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse.algorithms.optimizer_state import optimizer_slots
from keras_sparse.gradients import GradientCapture, installed_capture

from testing import masks_of

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
STEPS = 8  # batches per epoch


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, activation="relu", name="fc")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(x)
    sparse = ks.sparsify(keras.Model(inputs, outputs), 0.7, distribution="uniform",
                         keep_dense=None, seed=0)
    sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS, jit_compile=False)
    return sparse


def _data():
    rng = np.random.default_rng(0)
    return rng.random((8 * STEPS, 6)).astype("float32"), rng.integers(0, 3, 8 * STEPS)


def _fit(model, callbacks, epochs=1):
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks)


class _RaiseAt(keras.callbacks.Callback):
    """Raises `error` at the end of the `at`-th batch (after the DST callback ran)."""

    def __init__(self, error, at=3):
        super().__init__()
        self.error, self.at = error, at

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.at:
            raise self.error


class _NaNAt(keras.callbacks.Callback):
    """Listed before the DST callback: puts a NaN in a kernel at the first update step."""

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == 2:
            kernel = ks.sparse_wrappers(self.model)[0].layer.kernel
            value = kernel.numpy()
            value[0, 0] = np.nan
            kernel.assign(value)


def _interrupt(model, how):
    """A fit with RigL that ends without on_train_end; returns the raised exception type."""
    if how == "keyboard_interrupt":
        callbacks, error = [ks.callbacks.RigL(update_interval=2), _RaiseAt(KeyboardInterrupt())], \
            KeyboardInterrupt
    elif how == "other_callback_error":
        callbacks, error = [ks.callbacks.RigL(update_interval=2), _RaiseAt(RuntimeError("boom"))], \
            RuntimeError
    else:  # the library's own on_nonfinite="raise"
        callbacks, error = [_NaNAt(), ks.callbacks.RigL(update_interval=2, on_nonfinite="raise")], \
            FloatingPointError
    with pytest.raises(error):
        _fit(model, callbacks)
    if how == "nonfinite_raise":  # undo the injected NaN so training can go on
        kernel = ks.sparse_wrappers(model)[0].layer.kernel
        value = kernel.numpy()
        value[0, 0] = 0.0
        kernel.assign(value)


def _next_callback(name, first):
    if name == "same_instance":
        return first
    kwargs = dict(update_interval=2, stop_step=1.0, seed=1)
    if name == "GraNet":
        kwargs["sparsity"] = 0.8  # the model starts 0.7 sparse
    if name == "MEST":
        kwargs["stage_boundaries"] = (0.9, 0.95)  # keep this short run in a mutating stage
    return getattr(ks.callbacks, name)(**kwargs)


@pytest.mark.full
@pytest.mark.parametrize("how", ["keyboard_interrupt", "other_callback_error", "nonfinite_raise"])
def test_interrupted_fit_then_rigl_fit_changes_masks_and_keeps_optimizer_state(how):
    model = _model()
    _interrupt(model, how)
    optimizer = model.optimizer
    iterations = int(optimizer.iterations.numpy())
    assert iterations > 0
    kernel = ks.sparse_wrappers(model)[1].layer.kernel
    momentum = optimizer_slots(optimizer, kernel)[0]
    momentum_before = momentum.numpy().copy()
    assert np.any(momentum_before != 0)
    masks = masks_of(model)

    cb = ks.callbacks.RigL(update_interval=2, stop_step=1.0, seed=1)
    _fit(model, [cb])

    assert model.optimizer is optimizer  # not recompiled
    assert int(optimizer.iterations.numpy()) == iterations + STEPS  # counting went on
    assert optimizer_slots(optimizer, kernel)[0] is momentum  # the same slot variable...
    assert not np.array_equal(momentum.numpy(), momentum_before)  # ...that kept training
    assert cb.algorithm.stats, "no mask update happened"
    assert any(not np.array_equal(a, b) for a, b in zip(masks, masks_of(model)))
    assert installed_capture(optimizer) is None  # removed at on_train_end


@pytest.mark.full
@pytest.mark.parametrize("name", ["RigL", "NeurRev", "GraNet", "MEST", "same_instance"])
def test_any_dst_callback_works_after_a_keyboard_interrupt(name):
    model = _model()
    first = ks.callbacks.RigL(update_interval=2, stop_step=1.0)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, [first, _RaiseAt(KeyboardInterrupt())])
    assert installed_capture(model.optimizer) is not None  # what used to block every later fit
    masks = masks_of(model)
    cb = _next_callback(name, first)
    _fit(model, [cb])
    assert cb.algorithm.stats, "no mask update happened"
    assert any(not np.array_equal(a, b) for a, b in zip(masks, masks_of(model)))
    assert installed_capture(model.optimizer) is None


@pytest.mark.full
def test_capture_is_removed_when_the_update_itself_raises():
    model = _model()
    with pytest.raises(FloatingPointError):
        _fit(model, [_NaNAt(), ks.callbacks.RigL(update_interval=2, on_nonfinite="raise")])
    assert installed_capture(model.optimizer) is None
    assert "apply" not in vars(model.optimizer)


@pytest.mark.full
def test_foreign_wrapper_of_apply_gets_a_clear_error_before_any_mask_change():
    model = _model()
    optimizer = model.optimizer
    original = optimizer.apply

    def my_apply(grads, trainable_variables=None):
        return original(grads, trainable_variables)

    optimizer.apply = my_apply
    masks = masks_of(model)
    with pytest.raises(ValueError, match="did not install") as e:
        _fit(model, [ks.callbacks.RigL(update_interval=2)])
    assert "my_apply" in str(e.value)
    assert vars(optimizer)["apply"] is my_apply  # left alone
    assert all(np.array_equal(a, b) for a, b in zip(masks, masks_of(model)))
    assert int(optimizer.iterations.numpy()) == 0


def test_stale_capture_is_replaced_and_its_late_uninstall_keeps_the_new_one():
    model = _model()
    variables = [v for w in ks.sparse_wrappers(model) for _, v, _ in w.masked_weights]
    old = GradientCapture(model, variables, 2)
    old.install()
    new = GradientCapture(model, variables, 2)
    new.install()
    assert installed_capture(model.optimizer) is new and new.installed and not old.installed
    old.uninstall()  # e.g. the old callback's late clean-up
    assert installed_capture(model.optimizer) is new
    new.uninstall()
    assert installed_capture(model.optimizer) is None and "apply" not in vars(model.optimizer)
