"""`model.fit` callbacks for sparse models.

`SparsityLogger` is the base: it finds the model's `SparseWrapper` layers and
writes the current sparsity into `logs`, so it shows in the progress bar, in
`History`, and (through Keras's own `keras.callbacks.TensorBoard`, listed
after it) in TensorBoard. Mask-updating algorithms subclass it: they decide
when to act from `optimizer.iterations`, change masks, call
`refresh_sparsity()` and add their own figures through `extra_logs()`.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_sparse.sparsify import sparse_wrappers

__all__ = ["SparsityLogger"]


@keras.saving.register_keras_serializable(package="keras_sparse")
class SparsityLogger(keras.callbacks.Callback):
    """Logs the sparsity of a sparse model during `model.fit`.

    Adds `sparsity` (zeros over all masked weights, from the masks) to the
    logs of every batch and epoch. With `per_layer=True` it also adds
    `sparsity/<layer>/<weight>` for every masked weight; put this callback
    before `keras.callbacks.TensorBoard` in the list and those scalars appear
    in TensorBoard.

    Args:
        per_layer: also log one scalar per masked weight.

    Raises:
        ValueError: at `on_train_begin`, if the model has no `SparseWrapper`.

    Example:

    >>> model.fit(x, y, callbacks=[
    ...     keras_sparse.callbacks.SparsityLogger(per_layer=True),
    ...     keras.callbacks.TensorBoard("logs"),
    ... ])
    """

    def __init__(self, per_layer: bool = False):
        super().__init__()
        if not isinstance(per_layer, bool):
            raise TypeError(f"`per_layer` must be a bool. Received: {per_layer!r}.")
        self.per_layer = per_layer
        self._wrappers = []
        self._sparsity_logs: dict[str, float] = {}

    @property
    def wrappers(self):
        """The model's `SparseWrapper` layers (found at `on_train_begin`)."""
        return self._wrappers

    def on_train_begin(self, logs=None):
        self._wrappers = sparse_wrappers(self.model)
        if not self._wrappers:
            raise ValueError(
                f"{type(self).__name__} needs a sparse model, but model "
                f"{self.model.name!r} has no SparseWrapper layer. Use "
                "`keras_sparse.sparsify(model, sparsity)` first."
            )
        self.refresh_sparsity()

    def refresh_sparsity(self) -> None:
        """Recomputes the logged sparsity from the masks (after a mask change)."""
        total = active = 0
        values = {}
        for wrapper in self._wrappers:
            for name, _, mask in wrapper.masked_weights:
                size = int(np.prod(mask.shape))
                ones = float(keras.ops.convert_to_numpy(keras.ops.sum(mask)))
                total += size
                active += ones
                values[f"sparsity/{wrapper.name}/{name}"] = 1.0 - ones / size
        logs = {"sparsity": 1.0 - active / total if total else 0.0}
        if self.per_layer:
            logs.update(values)
        self._sparsity_logs = logs

    def extra_logs(self) -> dict[str, float]:
        """Figures a subclass adds to every batch and epoch log."""
        return {}

    def _write(self, logs):
        if logs is not None:
            logs.update(self._sparsity_logs)
            logs.update(self.extra_logs())

    def on_train_batch_end(self, batch, logs=None):
        self._write(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._write(logs)

    def get_config(self):
        return {"per_layer": self.per_layer}


# ---------------------------------------------------------------------------
# Dynamic sparse training callbacks.
# ---------------------------------------------------------------------------

from keras_sparse import algorithms as _algorithms  # noqa: E402
from keras_sparse.gradients import GradientCapture  # noqa: E402

__all__ += [
    "DSR", "DeepR", "DynamicSparseTraining", "GMP", "GraNet", "GraNetST",
    "MEST", "NeurRev", "RigL", "RigLITOP", "SET",
]


@keras.saving.register_keras_serializable(package="keras_sparse")
class DynamicSparseTraining(SparsityLogger):
    """Runs a sparse-training algorithm (mask updater) during `model.fit`.

    At the end of every batch it reads `model.optimizer.iterations`; when the
    algorithm's schedule has an update step in the steps just run (works
    with `steps_per_execution > 1` and after resuming), it lets the algorithm
    update the masks, then logs `sparsity`, `drop_fraction`, `regrown`,
    `itop_rate`, `churn` (the share of the connections grown at the previous
    update that this one dropped), `churn_mean` (the same over every update
    of this `fit`: all such drops over all such growths) and `awakened` for
    NeurRev; with `per_layer=True` also `<figure>/<layer>/<weight>`. Put it before `keras.callbacks.TensorBoard`
    to see these in TensorBoard.

    Dense gradients for grow criteria are the ones of the user's own training
    step at the update step, captured inside `optimizer.apply` (see
    `keras_sparse.gradients`): no extra data and no extra pass.

    Saving and resuming: the algorithm's state that is not derivable from
    the weights and `optimizer.iterations` (NeurRev's reference weights, the
    ITOP set, DSR's threshold, Deep-R's signs, GMP/GraNet's starting
    sparsity) is written into the model's `SparseWrapper` layers at every
    update, so `model.save`, `ModelCheckpoint` and
    `keras.callbacks.BackupAndRestore` carry it; randomness is derived from
    `(seed, step)`. A new callback on a reloaded or restored model (same
    arguments) continues exactly as an uninterrupted run, in either order
    relative to `BackupAndRestore` in the callback list: the state is read
    back before the first batch, after every `on_train_begin` has run, and
    masks change at batch ends, before any epoch-end save.

    Non-finite values: an update whose weights or captured gradients hold
    NaN/Inf is skipped with a `RuntimeWarning` (or raises, with the
    algorithm's `on_nonfinite="raise"`); masks and weights stay as they
    were, training goes on, and `skipped_updates` (count in this `fit`)
    appears in the logs.

    Args:
        algorithm: an `keras_sparse.algorithms.Updater`, name or config dict.
        total_steps: total training steps, to resolve fractional start/stop
            steps; default `epochs * steps_per_epoch` from `fit`.
        per_layer: also log per-layer figures.

    Raises:
        ValueError: at `on_train_begin`, before any mask changes: model not
            sparsified, stop step beyond training, unknown training length,
            structure incompatible with a weight, method-specific problems.

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.9, seed=0)
    >>> sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss)
    >>> sparse.fit(x, y, epochs=10, callbacks=[
    ...     keras_sparse.callbacks.DynamicSparseTraining("rigl")])
    """

    def __init__(self, algorithm="rigl", total_steps: int | None = None, per_layer: bool = False):
        super().__init__(per_layer=per_layer)
        self.algorithm = _algorithms.get(algorithm)
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1
        ):
            raise ValueError(f"`total_steps` must be an int >= 1 or None. Received: {total_steps!r}.")
        self.total_steps = total_steps
        self._capture = None
        self._targets = []
        self._synced = False
        self._last_seen = 0
        self._dst_logs: dict[str, float] = {}
        self._churn_totals = (0.0, 0.0)

    def _iterations(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _resolve_total(self) -> int | None:
        if self.total_steps is not None:
            return self.total_steps
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        if epochs and steps:
            return int(epochs) * int(steps)
        return None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # raises if the model is not sparsified
        total = self._resolve_total()
        if total is None and any(isinstance(v, float) for v in (self.algorithm.start_step, self.algorithm.stop_step)):
            raise ValueError(
                "The number of training steps is unknown (dataset of unknown "
                "length), so fractional start/stop steps cannot be resolved. "
                "Pass `total_steps=` to the callback or `steps_per_epoch=` to fit."
            )
        self._targets = [
            _algorithms.Target(f"{w.name}/{name}", weight, mask, w.sparsity_of(name),
                               state=w.training_state(name))
            for w in self.wrappers
            for name, weight, mask in w.masked_weights
        ]
        # Validates before any mask changes. Saved state is read again before
        # the first batch: a BackupAndRestore listed after this callback
        # restores the model only in its own on_train_begin.
        self.algorithm.setup(self._targets, total)
        self._total = total
        self._churn_totals = (0.0, 0.0)
        self._synced = False
        self._last_seen = self._iterations()
        if self.algorithm.needs_gradients:
            self._capture = GradientCapture(
                self.model, [t.weight for t in self._targets], self.algorithm.update_interval
            )
            self._capture.install()

    def on_train_batch_begin(self, batch, logs=None):
        if not self._synced:
            self.algorithm.setup(self._targets, self._total)
            self.algorithm.save_state(self._targets)
            self.refresh_sparsity()
            self._last_seen = self._iterations()
            self._synced = True

    def on_train_batch_end(self, batch, logs=None):
        step = self._iterations()
        t = self.algorithm.schedule.last_update_in(self._last_seen, step, self._total)
        self._last_seen = step
        if t is not None:
            grads = self._capture.gradients(t) if self._capture is not None else None
            stats = self.algorithm.update(t, self._targets, grads, self.model.optimizer)
            if stats:
                self.refresh_sparsity()
                self._dst_logs = self._summarize(stats)
            if self.algorithm.skipped_updates:
                self._dst_logs["skipped_updates"] = float(self.algorithm.skipped_updates)
        super().on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        if self._capture is not None:
            self._capture.uninstall()
            self._capture = None

    def _summarize(self, stats):
        out = {}
        if not stats:
            return out
        sizes = {t.key: int(np.prod(t.mask.shape)) for t in self._targets}
        total = sum(sizes.values())
        out["drop_fraction"] = float(np.mean([s["drop_fraction"] for s in stats.values()]))
        out["regrown"] = float(sum(s["regrown"] for s in stats.values()))
        out["itop_rate"] = float(sum(s["itop_rate"] * sizes[k] for k, s in stats.items()) / total)
        grown = sum(s.get("churn_grown", 0.0) for s in stats.values())
        dropped = sum(s.get("churn_dropped", 0.0) for s in stats.values())
        self._churn_totals = (self._churn_totals[0] + grown, self._churn_totals[1] + dropped)
        if grown:
            out["churn"] = float(dropped / grown)
        elif "churn" in self._dst_logs:
            out["churn"] = self._dst_logs["churn"]
        if self._churn_totals[0]:
            out["churn_mean"] = float(self._churn_totals[1] / self._churn_totals[0])
        if any("awakened" in s for s in stats.values()):
            out["awakened"] = float(sum(s.get("awakened", 0.0) for s in stats.values()))
        if self.per_layer:
            for key, s in stats.items():
                for name in ("drop_fraction", "regrown", "itop_rate", "churn", "awakened"):
                    if name in s:
                        out[f"{name}/{key}"] = float(s[name])
        return out

    def extra_logs(self):
        return dict(self._dst_logs)

    def get_config(self):
        return {
            "algorithm": {"class_name": type(self.algorithm).__name__, "config": self.algorithm.get_config()},
            "total_steps": self.total_steps,
            "per_layer": self.per_layer,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _named(algorithm_cls, doc_name):
    class Named(DynamicSparseTraining):
        __doc__ = (
            f"`model.fit` callback running `keras_sparse.algorithms.{algorithm_cls.__name__}`.\n\n"
            "    Args:\n"
            "        total_steps: see `DynamicSparseTraining`.\n"
            "        per_layer: also log per-layer figures.\n"
            f"        **kwargs: arguments of `keras_sparse.algorithms.{algorithm_cls.__name__}`.\n\n"
            "    Example:\n\n"
            f"    >>> model.fit(x, y, callbacks=[keras_sparse.callbacks.{doc_name}(seed=0)])\n"
        )

        def __init__(self, total_steps=None, per_layer=False, **kwargs):
            super().__init__(algorithm_cls(**kwargs), total_steps=total_steps, per_layer=per_layer)

        def get_config(self):
            return {"total_steps": self.total_steps, "per_layer": self.per_layer,
                    **self.algorithm.get_config()}

    Named.__name__ = Named.__qualname__ = doc_name
    return keras.saving.register_keras_serializable(package="keras_sparse", name=doc_name)(Named)


SET = _named(_algorithms.SET, "SET")
RigL = _named(_algorithms.RigL, "RigL")
RigLITOP = _named(_algorithms.RigLITOP, "RigLITOP")
MEST = _named(_algorithms.MEST, "MEST")
NeurRev = _named(_algorithms.NeurRev, "NeurRev")
DSR = _named(_algorithms.DSR, "DSR")
DeepR = _named(_algorithms.DeepR, "DeepR")
GMP = _named(_algorithms.GMP, "GMP")
GraNet = _named(_algorithms.GraNet, "GraNet")
GraNetST = _named(_algorithms.GraNetST, "GraNetST")
