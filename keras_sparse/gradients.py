"""Dense gradients of the training loss for grow criteria, at zero extra cost.

Design choice. Keras callbacks never see the batch, and the training step is
compiled (XLA by default), so capturing the batch itself needs variables of
unknown shape, which XLA rejects. Instead, the gradients the training step
already computes are captured: the gradient of the loss w.r.t. a masked
kernel is dense (the wrapper multiplies the kernel by its mask in the
forward pass through `keras_sparse.layers.sparse_wrapper.masked_forward`,
whose gradient is the identity, so pruned entries receive the gradient
`dL/dW_ij` that RigL ranks). `GradientCapture.install()` wraps `optimizer.apply` (the public method
`train_step` reaches through `apply_gradients`) of the model's optimizer and
forces `model.make_train_function(force=True)`, so the next trace copies the
gradients of the masked weights into non-trainable buffers, but only on the
step just before a scheduled mask update (`tf.cond` on
`optimizer.iterations`, XLA-friendly, no copy on other steps). No extra
forward/backward pass and no second copy of the data are needed: the
gradient is that of the user's own training batch at the update step, as in
RigL. `uninstall()` restores the optimizer and retraces.

Clean-up. Keras calls `on_train_end` only when `fit` returns normally; a
`KeyboardInterrupt`, an exception in any callback or an `on_nonfinite="raise"`
update ends `fit` without it, leaving the wrapper on `optimizer.apply`. The
wrapper therefore carries the capture that installed it
(`installed_capture(optimizer)`), and `install()` replaces a capture left
behind by keras_sparse (no recompile: the optimizer, its iterations and its
slots are untouched; only the training function is retraced). A wrapper of
`optimizer.apply` that keras_sparse did not install is left alone and
refused with an error, since wrapping it again could not be undone safely.

Caveat: with `steps_per_execution = k > interval`, several update steps fall in
one execution; the callback performs one update, with the gradient of the
last of them.

TensorFlow is imported here because this is gradient capture Keras does not
expose (see STYLE.md §1).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = ["GradientCapture", "installed_capture"]

# Attribute on the wrapper function `GradientCapture.install` puts on
# `optimizer.apply`: the capture that installed it.
_OWNER = "_keras_sparse_capture"


def installed_capture(optimizer) -> GradientCapture | None:
    """The keras_sparse `GradientCapture` wrapping `optimizer.apply`, or None.

    Args:
        optimizer: a Keras optimizer.

    Returns:
        The capture whose wrapper is installed on `optimizer` (it may be
        left over from an interrupted `fit`), or None when `optimizer.apply`
        is not wrapped by keras_sparse.
    """
    return getattr(vars(optimizer).get("apply"), _OWNER, None)


def _strategy_scope(model):
    """The scope of the strategy `model` was built under (a no-op scope if none)."""
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return strategy.scope()


class GradientCapture:
    """Captures dense gradients of given variables on chosen optimizer steps.

    Args:
        model: a compiled Keras model.
        variables: the variables whose gradients to keep (masked weights).
        interval: capture on the step that brings `optimizer.iterations` to a
            multiple of `interval`.
    """

    def __init__(self, model: keras.Model, variables, interval: int):
        self.model = model
        self.variables = list(variables)
        self.interval = int(interval)
        self._keys = {id(v): i for i, v in enumerate(self.variables)}
        # Under tf.distribute, `optimizer.apply` runs once per replica with
        # that replica's *local* gradient (the optimizer all-reduces later,
        # inside `apply`). The buffers are therefore sync-on-read SUM
        # variables created in the model's strategy scope: each replica writes
        # its own copy with no communication, and the host read at the update
        # step sums them, i.e. returns the same gradient the optimizer
        # applies (and a single-device run would capture). Outside a strategy
        # they are plain variables.
        with _strategy_scope(model):
            self.buffers = [
                keras.Variable(np.zeros(v.shape, np.float32), trainable=False, name="dense_grad",
                               synchronization="on_read", aggregation="sum")
                for v in self.variables
            ]
            self.captured_step = keras.Variable(
                -1, dtype="int64", trainable=False, name="grad_step",
                synchronization="on_read", aggregation="only_first_replica")
        self._installed = False
        self._wrapper = None

    def install(self) -> None:
        """Wraps `optimizer.apply` and forces the training function to retrace.

        A capture left installed by keras_sparse (an interrupted `fit` that
        never reached `on_train_end`) is replaced; the optimizer's state is
        kept.

        Raises:
            ValueError: the model has no optimizer, or `optimizer.apply` is
                already wrapped by something other than keras_sparse.
        """
        optimizer = self.model.optimizer
        if optimizer is None:
            raise ValueError("The model must be compiled with an optimizer before training.")
        current = vars(optimizer).get("apply")
        if current is not None:
            stale = getattr(current, _OWNER, None)
            if stale is None:
                raise ValueError(
                    "The model's optimizer has its `apply` method replaced by "
                    f"{current!r}, which keras_sparse did not install. keras_sparse "
                    "captures dense gradients by wrapping `optimizer.apply` and "
                    "cannot wrap a foreign wrapper safely. Accepted: an optimizer "
                    "whose `apply` is the class's own method (remove the instance "
                    "attribute with `del optimizer.apply`)."
                )
            if stale is not self:
                stale._detach()
            vars(optimizer).pop("apply", None)
        original = optimizer.apply
        capture = self

        def apply(grads, trainable_variables=None):
            if trainable_variables is not None:
                capture._record(optimizer, grads, trainable_variables)
            return original(grads, trainable_variables)

        setattr(apply, _OWNER, self)
        optimizer.apply = apply
        self._wrapper = apply
        self._installed = True
        self.model.make_train_function(force=True)

    @property
    def installed(self) -> bool:
        """Whether this capture's wrapper is the one on `optimizer.apply` now."""
        optimizer = self.model.optimizer
        return (self._installed and optimizer is not None
                and vars(optimizer).get("apply") is self._wrapper)

    def _detach(self) -> None:
        """Forgets the installation (another capture replaced this one's wrapper)."""
        self._installed = False
        self._wrapper = None

    def uninstall(self) -> None:
        """Restores the optimizer's own `apply` and retraces.

        Does nothing if this capture is not installed, or if another capture
        has replaced its wrapper (that one stays installed).
        """
        if self.installed:
            vars(self.model.optimizer).pop("apply", None)
            self.model.make_train_function(force=True)
        self._detach()

    def _record(self, optimizer, grads, trainable_variables) -> None:
        pairs = []
        for g, v in zip(grads, trainable_variables):
            i = self._keys.get(id(v))
            if i is not None and g is not None:
                pairs.append((i, g))
        if not pairs:
            return
        step = tf.cast(optimizer.iterations, tf.int64) + 1

        def assign():
            for i, g in pairs:
                g = tf.convert_to_tensor(g)  # IndexedSlices (Embedding) to dense
                self.buffers[i].assign(tf.cast(g, self.buffers[i].dtype))
            self.captured_step.assign(step)
            return tf.constant(True)

        tf.cond(tf.equal(step % self.interval, 0), assign, lambda: tf.constant(False))

    def gradients(self, step: int) -> list[np.ndarray]:
        """The captured gradients for update step `step`, as NumPy arrays.

        Raises:
            RuntimeError: nothing was captured on that step (the training
                step does not call `optimizer.apply`/`apply_gradients` with
                the variables, e.g. a custom `train_step`).
        """
        captured = int(keras.ops.convert_to_numpy(self.captured_step))
        if captured != step:
            raise RuntimeError(
                f"No dense gradient was captured for update step {step} (last "
                f"capture: step {captured}). keras_sparse captures gradients in "
                "`optimizer.apply`; a custom `train_step` must call "
                "`self.optimizer.apply_gradients(zip(grads, weights))` (or "
                "`apply`) with the masked weights."
            )
        return [keras.ops.convert_to_numpy(b) for b in self.buffers]
