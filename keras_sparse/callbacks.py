"""`model.fit` callbacks for sparse models.

`SparsityLogger` is the base: it finds the model's `SparseWrapper` layers and
writes the current sparsity into `logs`, so it shows in the progress bar, in
`History`, and (through Keras's own `keras.callbacks.TensorBoard`, listed
after it) in TensorBoard. Mask-updating algorithms subclass it: they decide
when to act from `optimizer.iterations`, change masks, call
`refresh_sparsity()` and add their own figures through `extra_logs()`.
"""

from __future__ import annotations

import warnings
import weakref

import keras
import numpy as np

from keras_sparse.report import model_parameter_count
from keras_sparse.sparsify import sparse_wrappers

__all__ = ["SparsityLogger"]


@keras.saving.register_keras_serializable(package="keras_sparse")
class SparsityLogger(keras.callbacks.Callback):
    """Logs the sparsity of a sparse model during `model.fit`.

    Adds two figures, from the masks, to the logs of every batch and epoch:
    `model_sparsity`, the pruned entries over *all* parameters of the model
    (what the model's size and compute actually shrink by; layers left dense
    and biases count as dense), and `masked_sparsity`, the pruned entries over
    the masked weights only (what `sparsify`'s `sparsity` targets). The two
    differ when large layers stay dense (`keep_dense`, unsupported layer
    types). With `per_layer=True` it also adds `sparsity/<layer>/<weight>`
    for every masked weight; put this callback before
    `keras.callbacks.TensorBoard` in the list and those scalars appear in
    TensorBoard.

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
        self._model_params = 0
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
        self._model_params = model_parameter_count(self.model)
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
        pruned = total - active
        logs = {
            "model_sparsity": pruned / self._model_params if self._model_params else 0.0,
            "masked_sparsity": pruned / total if total else 0.0,
        }
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


class _FitRecord:
    """What keras_sparse remembers about the last DST `fit` of one model.

    `params` is the `params` dict Keras hands to every callback of one `fit`
    (one object per `fit`), `owner` a weak reference to the DST callback that
    claimed that `fit`, `horizon` the training length it planned.
    """

    def __init__(self):
        self.params = None
        self.owner = None
        self.horizon = None
        self.warned_extension = False


# Keyed weakly by model; the values hold no reference to the model.
_FITS: weakref.WeakKeyDictionary[keras.Model, _FitRecord] = weakref.WeakKeyDictionary()

# Fewer planned mask updates than this draw a warning at the start of `fit`.
MIN_UPDATES = 3


def _describe(callback) -> str:
    name, algorithm = type(callback).__name__, type(callback.algorithm).__name__
    return name if name == algorithm else f"{name}({algorithm})"


@keras.saving.register_keras_serializable(package="keras_sparse")
class DynamicSparseTraining(SparsityLogger):
    """Runs a sparse-training algorithm (mask updater) during `model.fit`.

    At the end of every batch it reads `model.optimizer.iterations`; when the
    algorithm's schedule has an update step in the steps just run (works
    with `steps_per_execution > 1` and after resuming), it lets the algorithm
    update the masks, then logs `sparsity`, `drop_fraction`, `regrown`,
    `itop_rate`, `churn` (the share of the connections grown at the previous
    update that this one dropped), `churn_mean` (the same over every update
    of this `fit`: all such drops over all such growths) and the
    algorithm's own figures (`Algorithm.policy_statistics`, e.g. NeurRev's
    `awakened`); with `per_layer=True` also `<figure>/<layer>/<weight>`. Put it before `keras.callbacks.TensorBoard`
    to see these in TensorBoard.

    Dense gradients for grow criteria are the ones of the user's own training
    step at the update step, captured inside `optimizer.apply` (see
    `keras_sparse.gradients`): no extra data and no extra pass. The capture
    is removed at `on_train_end` and when an update raises; a capture left
    by a `fit` that ended without `on_train_end` (Ctrl-C, an exception in
    another callback) is replaced by the next DST `fit`, keeping the
    optimizer's state.

    Training length. The schedule counts `optimizer.iterations`, across
    `fit` calls. The planned end of training (which resolves fractional
    `start_step`/`stop_step` and the drop-fraction decay) is `total_steps`
    when given; otherwise it is fixed before the first batch from what `fit`
    says: `epochs * steps_per_epoch`, which keeps `initial_epoch` and
    `BackupAndRestore` resumes exact; but when the optimizer has already run
    past the epochs before `initial_epoch` (a repeated `fit`, e.g.
    `for _ in range(4): model.fit(x, y, epochs=1, callbacks=[cb])`), the
    current step plus the steps of this `fit`. Where that moves the end of
    training (a repeated `fit`, or a longer plan than the model's previous
    DST `fit`), a `UserWarning` (once per model) suggests `total_steps=`:
    fractional steps then move with the horizon. Before the first batch a
    `UserWarning` with the numbers also says when no mask update can happen
    in this `fit`, when the planned training holds fewer than 3, and when
    `steps_per_execution` exceeds `update_interval` (several update steps
    in one execution: only the last of them runs).

    One mask-updating callback per `fit`: a second `DynamicSparseTraining`
    in the same `fit` raises at `on_train_begin`, before any mask changes.

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
        algorithm: a `keras_sparse.algorithms.Algorithm` (`Updater`,
            `Pruner` or a custom policy), name or config dict.
        total_steps: total training steps over all `fit` calls (optimizer
            steps), to resolve fractional start/stop steps; default: see
            "Training length" above. Set it once for loops of
            `fit(epochs=1)`.
        per_layer: also log per-layer figures.

    Raises:
        TypeError, ValueError: invalid arguments, at construction.
        ValueError: at `on_train_begin` (or, for what depends on
            `initial_epoch` and a `BackupAndRestore` restore, before the
            first batch), before any mask changes: model not sparsified, a
            second DST callback in the same `fit`, stop step beyond training
            or not after the start step, unknown training length, structure
            incompatible with a weight, a foreign wrapper on
            `optimizer.apply`, method-specific problems.

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.9, seed=0)
    >>> sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss)
    >>> sparse.fit(x, y, epochs=10, callbacks=[
    ...     keras_sparse.callbacks.DynamicSparseTraining("rigl")])
    """

    def __init__(self, algorithm="rigl", total_steps: int | None = None, per_layer: bool = False):
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer))
        ):
            raise TypeError(
                "`total_steps` must be an int >= 1 (optimizer steps of the whole "
                f"training) or None. Received: {total_steps!r} of type {type(total_steps).__name__}."
            )
        if total_steps is not None and total_steps < 1:
            raise ValueError(
                "`total_steps` must be an int >= 1 (optimizer steps of the whole "
                f"training) or None. Received: {total_steps!r}."
            )
        super().__init__(per_layer=per_layer)
        self.algorithm = _algorithms.get(algorithm)
        self.total_steps = None if total_steps is None else int(total_steps)
        self._capture = None
        self._targets = []
        self._synced = False
        self._last_seen = 0
        self._first_epoch = None
        self._total = None
        self._dst_logs: dict[str, float] = {}
        self._churn_totals = (0.0, 0.0)

    def _iterations(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _fit_length(self) -> tuple[int, int] | None:
        """`(epochs, steps_per_epoch)` of this `fit`, or None when unknown."""
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        if epochs and steps:
            return int(epochs), int(steps)
        return None

    def _plan(self) -> tuple[int | None, bool]:
        """`(total_steps, repeated)`: the planned end of training, and whether
        this `fit` continues past what its own epochs account for.

        Before the first epoch begins `initial_epoch` is unknown; the steps
        already run stand in for it (a resume's iterations match its epoch).
        """
        if self.total_steps is not None:
            return self.total_steps, False
        length = self._fit_length()
        if length is None:
            return None, False
        epochs, steps = length
        it = self._iterations()
        first = self._first_epoch
        if first is None:
            first = it // steps if it < epochs * steps else 0
        if it >= (first + 1) * steps:
            return it + max(epochs - first, 0) * steps, True
        return epochs * steps, False

    def _resolve_total(self) -> int | None:
        return self._plan()[0]

    # ------------------------------------------------------------ one fit
    def _claim_fit(self) -> None:
        """Marks this callback as the model's mask updater for this `fit`.

        Raises:
            ValueError: another DST callback claimed this same `fit` (all
                callbacks of one `fit` share one `params` object; a claim
                left by an interrupted earlier `fit` has another one).
        """
        record = _FITS.get(self.model)
        if record is None:
            record = _FITS[self.model] = _FitRecord()
        other = record.owner() if record.owner is not None else None
        if (self.params is not None and record.params is self.params
                and other is not None and other is not self):
            raise ValueError(
                "Two mask-updating callbacks in one `fit`: "
                f"{_describe(other)} and {_describe(self)}. Each would rewrite the "
                "masks and the saved training state of the same SparseWrapper "
                "layers. Accepted: one keras_sparse dynamic sparse training "
                "callback per `fit` (SparsityLogger may be added alongside)."
            )
        record.params, record.owner = self.params, weakref.ref(self)

    def _release(self) -> None:
        """Removes this callback's gradient capture and its claim on the `fit`."""
        if self._capture is not None:
            self._capture.uninstall()
            self._capture = None
        record = _FITS.get(self.model) if self.model is not None else None
        if record is not None and record.owner is not None and record.owner() is self:
            record.params = record.owner = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # raises if the model is not sparsified
        self._claim_fit()
        if self._capture is not None:  # left by an interrupted fit of this callback
            self._capture.uninstall()
            self._capture = None
        self._first_epoch = None
        if callable(getattr(self.algorithm, "bind_model", None)):
            self.algorithm.bind_model(self.model)  # algorithms that read the graph (Chase)
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

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = int(epoch)  # fit's initial_epoch (after any restore)

    def on_train_batch_begin(self, batch, logs=None):
        if not self._synced:
            try:
                total, repeated = self._plan()
                self.algorithm.setup(self._targets, total)
                self._total = total
                self.algorithm.save_state(self._targets)
                self.refresh_sparsity()
                self._last_seen = self._iterations()
                self._synced = True
                self._warn_about_plan(repeated)
            except BaseException:
                self._release()
                raise

    def on_train_batch_end(self, batch, logs=None):
        step = self._iterations()
        try:
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
        except BaseException:
            # fit ends without on_train_end: leave the optimizer as it was.
            self._release()
            raise
        super().on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        self._release()

    # ------------------------------------------------------------ warnings
    def _warn_about_plan(self, repeated: bool) -> None:
        """Warns (before the first batch) about a plan that silently does little."""
        name, total = _describe(self), self._total
        record = _FITS.get(self.model)
        previous = record.horizon if record is not None else None
        if record is not None:
            record.horizon = total
        extended = self.total_steps is None and total is not None and (
            repeated or (previous is not None and total > previous))
        if extended and not record.warned_extension:
            record.warned_extension = True
            was = f"{previous} steps planned by the previous DST fit of this model" \
                if previous is not None else f"{self._fit_length()[0]} epoch(s) of this fit"
            warnings.warn(
                f"{name}: this fit starts at optimizer step {self._iterations()} and "
                f"extends the planned end of training to step {total} (was: {was}); "
                "fractional start/stop steps and the drop-fraction decay follow the "
                "moving end. For training spread over several fit calls, pass the "
                "whole length once: "
                f"`{type(self).__name__}(total_steps=...)`. Warned once per model.",
                UserWarning, stacklevel=2)
        length = self._fit_length()
        schedule = self.algorithm.schedule
        interval = self.algorithm.update_interval
        it = self._iterations()
        first = self._first_epoch or 0
        end = it + max(length[0] - first, 0) * length[1] if length else total
        if end is None:
            return  # unknown length and int steps: nothing to plan against
        start, stop = schedule.bounds(total)
        in_fit = schedule.count_updates(it, end, total)
        where = (f"updates happen every update_interval={interval} steps at steps t with "
                 f"start_step={start} < t <= stop_step={stop}")
        planned_total = f"planned training: {total} steps" if total is not None else "training length unknown"
        if in_fit == 0:
            reason = ("training is already past stop_step" if it >= stop
                      else "update_interval is longer than the run" if interval > end - it
                      else "no multiple of update_interval falls in the window")
            warnings.warn(
                f"{name}: no mask update can happen in this fit ({reason}): it runs "
                f"optimizer steps {it + 1} to {end} ({end - it} steps), and {where} "
                f"({planned_total}). The masks stay as they are. Use a smaller "
                "update_interval, a later stop_step, or pass total_steps=.",
                UserWarning, stacklevel=2)
            return
        if total is not None:
            planned = schedule.count_updates(0, total, total)
            if planned < MIN_UPDATES:
                warnings.warn(
                    f"{name}: only {planned} mask update(s) in the planned training of "
                    f"{total} steps ({where}); fewer than {MIN_UPDATES} updates leaves "
                    "the masks nearly static. Use a smaller update_interval or a later "
                    "stop_step.", UserWarning, stacklevel=2)
        spe = getattr(self.model, "steps_per_execution", 1)
        if isinstance(spe, (int, np.integer)) and spe > interval and length:
            done = _updates_run(schedule, total, it, first, length, int(spe))
            warnings.warn(
                f"{name}: steps_per_execution={spe} > update_interval={interval}: "
                "several update steps fall in one execution and only the last of "
                f"them runs, so this fit makes {done} mask update(s) instead of "
                f"{in_fit} ({where}). Use steps_per_execution <= update_interval "
                "(ideally a divisor of it), or a larger update_interval.",
                UserWarning, stacklevel=2)

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
        # The algorithm's own figures (NeurRev's `awakened`, ...), summed over weights.
        out.update(self.algorithm.policy_statistics(stats))
        if self.per_layer:
            names = ("drop_fraction", "regrown", "itop_rate", "churn", *self.algorithm.policy_stat_names)
            for key, s in stats.items():
                for name in names:
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


def _updates_run(schedule, total, it, first_epoch, length, spe, limit=2_000_000) -> int:
    """Mask updates a `fit` makes when the callback sees `iterations` once per execution.

    Executions of `spe` steps restart at each epoch (the last one shorter);
    an execution holding several update steps runs one update.
    """
    epochs, steps = length
    n_epochs = max(epochs - first_epoch, 0)
    per_epoch = -(-steps // spe)
    if n_epochs * per_epoch > limit:  # estimate: at most one update per execution
        return min(schedule.count_updates(it, it + n_epochs * steps, total), n_epochs * per_epoch)
    start, stop = schedule.bounds(total)
    ends_in_epoch = np.minimum(np.arange(1, per_epoch + 1) * spe, steps)
    ends = (it + np.arange(n_epochs)[:, None] * steps + ends_in_epoch[None, :]).ravel()
    previous = np.concatenate([[it], ends[:-1]])
    lo, hi = np.maximum(previous, max(start, 0)), np.minimum(ends, stop)
    k = schedule.interval
    return int(np.count_nonzero((hi > lo) & (hi // k > lo // k)))


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

        def __init__(self, *, total_steps=None, per_layer=False, **kwargs):
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


__all__ += ["Chase"]


@keras.saving.register_keras_serializable(package="keras_sparse", name="Chase")
class Chase(DynamicSparseTraining):
    """`model.fit` callback running `keras_sparse.algorithms.Chase`.

    RigL plus gradual removal of the channels with the lowest unmasked mean
    magnitude, with the freed non-zeros reallocated across the model (see
    `keras_sparse.algorithms.Chase`). Binds the model's graph to the
    algorithm at `on_train_begin`, then runs as `DynamicSparseTraining`;
    also logs `channel_sparsity` (removed over eligible channels) and
    `channels_removed`.

    Args:
        channel_sparsity: final fraction of eligible channels removed, in [0, 1).
        min_channel_ratio: per-layer floor factor, in [0, 1].
        update_interval: steps between updates.
        start_step: first update step (int) or fraction of training.
        stop_step: last update step (int) or fraction of training.
        drop_fraction: RigL's initial drop fraction, in (0, 1).
        drop_fraction_decay: `"cosine"`, `"constant"` or `"stagewise"`.
        structure: only `"unstructured"` (Chase removes whole channels).
        seed: non-negative int.
        on_nonfinite: `"skip"` or `"raise"`.
        total_steps: see `DynamicSparseTraining`.
        per_layer: also log per-layer figures.

    Example:

    >>> sparse.fit(x, y, epochs=10, callbacks=[
    ...     keras_sparse.callbacks.Chase(channel_sparsity=0.5, seed=0)])
    >>> small = keras_sparse.strip(sparse, remove_channels=True)

    Reference:
        Yin et al., "Dynamic Sparsity Is Channel-Level Sparsity Learner",
        NeurIPS 2023.
    """

    def __init__(self, channel_sparsity: float = 0.5, min_channel_ratio: float = 0.5,
                 update_interval: int = 100, start_step: int | float = 0,
                 stop_step: int | float = 0.75, drop_fraction: float = 0.3,
                 drop_fraction_decay: str = "cosine", structure: str = "unstructured",
                 seed: int = 0, on_nonfinite: str = "skip",
                 total_steps: int | None = None, per_layer: bool = False):
        algorithm = _algorithms.Chase(
            channel_sparsity=channel_sparsity, min_channel_ratio=min_channel_ratio,
            update_interval=update_interval, start_step=start_step, stop_step=stop_step,
            drop_fraction=drop_fraction, drop_fraction_decay=drop_fraction_decay,
            structure=structure, seed=seed, on_nonfinite=on_nonfinite)
        super().__init__(algorithm, total_steps=total_steps, per_layer=per_layer)

    def extra_logs(self):
        return {**super().extra_logs(), **{k: v for k, v in self.algorithm.channel_stats.items()
                                             if k != "reallocated"}}

    def get_config(self):
        return {**self.algorithm.get_config(), "total_steps": self.total_steps, "per_layer": self.per_layer}
