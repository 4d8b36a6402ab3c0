"""`model.fit` callbacks for sparse models.

`SparsityLogger` is the base: it finds the model's `SparseWrapper` layers and
writes the current sparsity into `logs`, so it shows in the progress bar, in
`History`, and (through Keras's own `keras.callbacks.TensorBoard`, listed
after it) in TensorBoard. Mask-updating algorithms subclass it: they decide
when to act from `optimizer.iterations`, change masks, call
`refresh_sparsity()` and add their own figures through `extra_logs()`.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Sequence

import keras
import numpy as np

from keras_sparse.report import model_parameter_count
from keras_sparse.model_view import masked_weights, sparse_wrappers, sparsity_counts

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
        records = [r for w in self._wrappers for r in masked_weights(w)]
        values = {f"sparsity/{r.key}": sparsity_counts([r]).sparsity for r in records}
        pruned, total = sparsity_counts(records)
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
            _algorithms.Target(r.key, r.weight, r.mask, r.wrapper.sparsity_of(r.name),
                               state=r.wrapper.training_state(r.name), block_size=r.wrapper.block_size)
            for r in masked_weights(self.model)
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


# ---------------------------------------------------------------------------
# Named callbacks: `DynamicSparseTraining` with one algorithm and its
# arguments written out, so `help()` and `inspect.signature` show them.
# ---------------------------------------------------------------------------

__all__ += ["Chase"]

# Args lines shared by the named callbacks; a class documents an argument
# itself where its meaning or default differs.
_SHARED_ARGS = {
    "update_interval": "optimizer steps between mask updates.",
    "start_step": "first update step (int) or fraction of training (float).",
    "stop_step": "last update step (int) or fraction of training (float).",
    "drop_fraction": "initial fraction of the active weights dropped per update, in (0, 1).",
    "drop_fraction_decay": '`"cosine"`, `"constant"` or `"stagewise"` (halved at 50% and\n'
                           "            75% of the update span).",
    "structure": '`"unstructured"`, `"block"` or `"n:m"`\n'
                 "            (`keras_sparse.masks.STRUCTURES`); the masks keep it (blocks: each\n"
                 "            layer's `block_size` from `sparsify`).",
    "seed": "non-negative int; randomness comes from `(seed, step, weight index)`,\n"
            "            so a resumed run draws what an uninterrupted one draws.",
    "on_nonfinite": 'when a weight or captured gradient holds NaN/Inf: `"skip"` (warn,\n'
                    "            count it in `skipped_updates`, change nothing) or `\"raise\"`\n"
                    "            (`FloatingPointError`, nothing changed).",
    "sparsity": "final sparsity over the masked weights, in [0, 1).",
    "distribution": '`"global"` (one magnitude ranking over all layers) or a per-layer\n'
                    '            allocation of `keras_sparse.allocation` (`"uniform"`, `"er"`, `"erk"`).',
    "schedule": "a `keras_sparse.schedules.UpdateSchedule` of update steps, injected instead of\n"
                "            the one built from `update_interval`, `start_step` and `stop_step`.",
    "fraction_schedule": "the drop-fraction schedule, injected (a `keras_sparse.schedules` object,\n"
                         "            `(step, start, stop) -> float`); default: the algorithm's own.",
    "fraction_span": '`"updates"` (the fraction schedule runs over the update span) or `"training"`\n'
                     "            (over all of training); default None: the algorithm's own.",
    "total_steps": "total optimizer steps over all `fit` calls, to resolve fractional\n"
                   "            start/stop steps; default: from `fit` (see `DynamicSparseTraining`).",
    "per_layer": "also log per-layer figures.",
}
def _named_callback(algorithm_cls: type, **fragments: str):
    """Class decorator of the named callbacks.

    Sets `algorithm_class`, completes the docstring's `Args:` and registers
    the class for `.keras` loading under its own name. In the docstring the
    line `{shared_args}` becomes one `_SHARED_ARGS` line per parameter of
    `__init__` that the class does not document itself, in signature order;
    `{name}` lines become `fragments[name]`.
    """

    def decorate(cls):
        cls.algorithm_class = algorithm_cls
        doc = cls.__doc__
        for name, text in fragments.items():
            doc = doc.replace("{" + name + "}", text)
        shared = [f"        {name}: {_SHARED_ARGS[name]}"
                  for name in inspect.signature(cls.__init__).parameters
                  if name in _SHARED_ARGS and f"        {name}:" not in doc]
        cls.__doc__ = doc.replace("        {shared_args}", "\n".join(shared))
        return keras.saving.register_keras_serializable(package="keras_sparse", name=cls.__name__)(cls)

    return decorate


class _NamedCallback(DynamicSparseTraining):
    """`DynamicSparseTraining` running one algorithm class, built from keyword arguments.

    A subclass writes out every argument of its algorithm in `__init__` and
    passes them on with `super().__init__(**_arguments(locals()))`; its
    config is the callback's arguments and the algorithm's, flat.
    """

    algorithm_class: type = _algorithms.Updater

    def __init__(self, *, total_steps: int | None = None, per_layer: bool = False, **algorithm_args):
        super().__init__(self.algorithm_class(**algorithm_args), total_steps=total_steps,
                         per_layer=per_layer)

    def get_config(self):
        return {**self.algorithm.get_config(), "total_steps": self.total_steps, "per_layer": self.per_layer}

    @classmethod
    def from_config(cls, config):
        return cls(**_algorithms.base.with_fraction_schedule(config))


def _arguments(frame_locals: dict) -> dict:
    """The arguments of a named callback's `__init__`, from its `locals()`."""
    return {k: v for k, v in frame_locals.items() if k not in ("self", "__class__")}


@_named_callback(_algorithms.SET)
class SET(_NamedCallback):
    """`model.fit` callback running SET (`keras_sparse.algorithms.SET`).

    Sparse Evolutionary Training: at every update each masked weight drops
    its smallest-magnitude active entries and grows as many at random (zero
    init, optimizer moments reset). RigL's schedule defaults, so methods
    compare on equal terms.

    Args:
        {shared_args}

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.9, seed=0)
    >>> sparse.fit(x, y, epochs=10, callbacks=[keras_sparse.callbacks.SET(seed=0)])

    Reference:
        Mocanu et al., "Scalable training of artificial neural networks with
        adaptive sparse connectivity inspired by network science", Nature
        Communications 2018.
    """

    def __init__(self, *, update_interval: int = 100, start_step: int | float = 0, stop_step: int | float = 0.75,
                 drop_fraction: float = 0.3, drop_fraction_decay: str = "cosine", structure: str = "unstructured",
                 seed: int = 0, on_nonfinite: str = "skip", schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None, per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.RigL)
class RigL(_NamedCallback):
    """`model.fit` callback running RigL (`keras_sparse.algorithms.RigL`).

    SET with growth by dense-gradient magnitude; the gradients are the ones
    of the training step at the update step (`keras_sparse.gradients`).
    Defaults are google-research/rigl's.

    Args:
        {shared_args}

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.9, "erk", seed=0)
    >>> sparse.fit(x, y, epochs=10, callbacks=[
    ...     keras_sparse.callbacks.RigL(update_interval=100, seed=0)])

    Reference:
        Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """

    def __init__(self, *, update_interval: int = 100, start_step: int | float = 0,
                 stop_step: int | float = 0.75, drop_fraction: float = 0.3, drop_fraction_decay: str = "cosine",
                 structure: str = "unstructured", seed: int = 0, on_nonfinite: str = "skip",
                 schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None, per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.RigLITOP)
class RigLITOP(_NamedCallback):
    """`model.fit` callback running RigL-ITOP (`keras_sparse.algorithms.RigLITOP`).

    RigL's prune-and-grow on In-Time Over-Parameterization's schedule: a
    long update interval, a larger drop fraction cosine-decayed over all of
    training to a small floor, no stop at 75%. Defaults are the reference
    code's (see `keras_sparse.algorithms.RigLITOP`).

    Args:
        update_interval: optimizer steps between mask updates; on budgets
            much shorter than the paper's pass a proportionally shorter one.
        stop_step: last update step or fraction of training (1.0: until the end).
        drop_fraction_min: the cosine's floor, in [0, drop_fraction] (only
            used with `"cosine"`).
        {shared_args}

    Example:

    >>> itop = keras_sparse.callbacks.RigLITOP(update_interval=400, seed=0)
    >>> sparse.fit(x, y, epochs=25, callbacks=[itop])

    Reference:
        Liu et al., "Do We Actually Need Dense Over-Parameterization?
        In-Time Over-Parameterization in Sparse Training", ICML 2021.
    """

    def __init__(self, *, update_interval: int = 4000, start_step: int | float = 0, stop_step: int | float = 1.0,
                 drop_fraction: float = 0.5, drop_fraction_decay: str = "cosine", drop_fraction_min: float = 0.005,
                 structure: str = "unstructured", seed: int = 0, on_nonfinite: str = "skip",
                 schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None, per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.MEST)
class MEST(_NamedCallback):
    """`model.fit` callback running MEST+EM (`keras_sparse.algorithms.MEST`).

    Elastic Mutation: in stage k each update drops the share
    `(lower_bound[k] - upper_bound) / (1 - upper_bound)` of each weight's
    active entries with the lowest `|W| + gradient_weight * |grad W|` and
    regrows as many at random (zero init). Stages are fractions of training,
    so the training length must be known.

    Args:
        gradient_weight: lambda in the removal score, >= 0 (0: magnitude only,
            as the reference scripts).
        lower_bound: per-stage prune-to sparsities, non-increasing, each in
            [upper_bound, 1); None: `(0.92, 0.91, 0.9)`.
        upper_bound: grow-to sparsity in [0, 1), one value or a list of equal
            values; None: 0.9.
        stage_boundaries: where stages 2, 3, ... start, as fractions of
            training, strictly increasing in (0, 1); None: `(0.5625, 0.75)`.
        drop_fraction: legacy (non-EM) variant only, not combined with the
            bounds: the generic schedule's drop fraction (None: 0.3 there).
        drop_fraction_decay: legacy variant only (None: `"stagewise"` there).
        {shared_args}

    Example:

    >>> sparse.fit(x, y, epochs=160, callbacks=[
    ...     keras_sparse.callbacks.MEST(gradient_weight=0.0, seed=0)])

    Reference:
        Yuan et al., "MEST: Accurate and Fast Memory-Economic Sparse Training
        Framework on the Edge", NeurIPS 2021.
    """

    def __init__(self, *, gradient_weight: float = 1.0, lower_bound: Sequence[float] | float | None = None,
                 upper_bound: Sequence[float] | float | None = None,
                 stage_boundaries: Sequence[float] | None = None, drop_fraction: float | None = None,
                 drop_fraction_decay: str | None = None, update_interval: int = 100,
                 start_step: int | float = 0, stop_step: int | float = 0.75, structure: str = "unstructured",
                 seed: int = 0, on_nonfinite: str = "skip", schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None,
                 per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.NeurRev)
class NeurRev(_NamedCallback):
    """`model.fit` callback running NeurRev (`keras_sparse.algorithms.NeurRev`).

    RigL plus Search & Awake: each update relaxes every weight to sparsity
    `s - p`, then prunes `p * size` active negative weights that changed
    least since the previous update, back to `s`. Also logs `awakened`.

    Args:
        p: relaxation as a fraction of each weight's size, capped per weight
            at its sparsity; None: `min(0.1 * (1 - s), s)` per weight. `s - p`
            must be >= 0.
        {shared_args}

    Example:

    >>> sparse.fit(x, y, epochs=10, callbacks=[
    ...     keras_sparse.callbacks.NeurRev(update_interval=100, seed=0)])

    Reference:
        Li et al., "NeurRev: Train Better Sparse Neural Network Practically
        via Neuron Revitalization", ICLR 2024.
    """

    def __init__(self, *, p: float | None = None, update_interval: int = 100, start_step: int | float = 0,
                 stop_step: int | float = 0.75, drop_fraction: float = 0.3, drop_fraction_decay: str = "cosine",
                 structure: str = "unstructured", seed: int = 0, on_nonfinite: str = "skip", schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None,
                 per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.DSR)
class DSR(_NamedCallback):
    """`model.fit` callback running DSR (`keras_sparse.algorithms.DSR`).

    Dynamic Sparse Reparameterization: prune every active weight below one
    global threshold H, adapt H towards `drop_fraction` of the active
    weights, regrow as many at random, allocated across layers in
    proportion to their surviving non-zeros (the total count is conserved).

    Args:
        initial_threshold: H at the first update, > 0 (paper: 0.001).
        tolerance: delta of the threshold rule, in (0, 1) (paper: 0.1).
        drop_fraction: target fraction pruned per update, in (0, 1).
        {shared_args}

    Example:

    >>> sparse.fit(x, y, epochs=10, callbacks=[keras_sparse.callbacks.DSR(seed=0)])

    Reference:
        Mostafa and Wang, "Parameter Efficient Training of Deep Convolutional
        Neural Networks by Dynamic Sparse Reparameterization", ICML 2019.
    """

    def __init__(self, *, initial_threshold: float = 1e-3, tolerance: float = 0.1, drop_fraction: float = 0.3,
                 drop_fraction_decay: str = "constant", update_interval: int = 100, start_step: int | float = 0,
                 stop_step: int | float = 0.75, structure: str = "unstructured", seed: int = 0,
                 on_nonfinite: str = "skip", schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None, per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.DeepR)
class DeepR(_NamedCallback):
    """`model.fit` callback running Deep-R (`keras_sparse.algorithms.DeepR`).

    Every entry keeps a fixed sign; at every update, connections that moved
    against theirs turn dormant and as many are grown at random (zero init;
    a new connection that moves against its sign is dropped at the next
    update). With
    `temperature > 0`, soft-Deep-R Langevin noise is added at updates.

    Args:
        temperature: T of the Langevin noise, >= 0 (0: none).
        drop_fraction: accepted (saved configs) and unused: sign flips decide the drops.
        drop_fraction_decay: accepted and unused, as `drop_fraction`.
        {shared_args}

    Example:

    >>> sparse.fit(x, y, epochs=10, callbacks=[keras_sparse.callbacks.DeepR(seed=0)])

    Reference:
        Bellec et al., "Deep Rewiring: Training very sparse deep networks",
        ICLR 2018.
    """

    def __init__(self, *, temperature: float = 0.0, update_interval: int = 100, start_step: int | float = 0,
                 stop_step: int | float = 0.75, structure: str = "unstructured", seed: int = 0,
                 on_nonfinite: str = "skip", drop_fraction: float = 0.3, drop_fraction_decay: str = "cosine",
                 schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None, per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.GMP)
class GMP(_NamedCallback):
    """`model.fit` callback running gradual magnitude pruning (`keras_sparse.algorithms.GMP`).

    Dense-to-sparse: start from `sparsify(model, 0.0)` (masks all ones) or a
    sparser start; every `update_interval` steps in `[start_step,
    stop_step]` prune by magnitude on Zhu and Gupta's cubic schedule to
    `sparsity`. Nothing is regrown, so there is no drop fraction.

    Args:
        {shared_args}

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.0)
    >>> sparse.fit(x, y, epochs=10, callbacks=[keras_sparse.callbacks.GMP(sparsity=0.9)])

    Reference:
        Zhu and Gupta, "To prune, or not to prune: exploring the efficacy of
        pruning for model compression", 2017.
    """

    def __init__(self, *, sparsity: float = 0.9, distribution: str = "global", update_interval: int = 100,
                 start_step: int | float = 0, stop_step: int | float = 0.75, structure: str = "unstructured",
                 seed: int = 0, on_nonfinite: str = "skip", schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None,
                 per_layer: bool = False):
        super().__init__(**_arguments(locals()))


_GRANET_ARGS = """regeneration_rate: initial share r of each layer's active weights dropped
            and regrown by gradient per update, in (0, 1).
        stop_step: last step (int) or fraction of training (float) at which the
            sparsity changes.
        regrow_stop_step: last step or fraction of training of the
            prune-and-regrow updates (1.0: until the end); not before `stop_step`.
        regeneration_rate_min: what r decays to (cosine) at `regrow_stop_step`,
            in [0, regeneration_rate]."""


@_named_callback(_algorithms.GraNet, granet_args=_GRANET_ARGS)
class GraNet(_NamedCallback):
    """`model.fit` callback running GraNet (`keras_sparse.algorithms.GraNet`).

    Gradual magnitude pruning (as `GMP`, global by default) plus zero-cost
    neuroregeneration: each update also drops `r(t)` of each layer's active
    weights and regrows as many by dense-gradient magnitude. Dense-to-sparse:
    `sparsify(model, 0.0)` first.

    Args:
        {granet_args}
        {shared_args}

    Example:

    >>> dense_start = keras_sparse.sparsify(model, 0.0)
    >>> granet = keras_sparse.callbacks.GraNet(sparsity=0.95, distribution="erk")
    >>> dense_start.fit(x, y, epochs=10, callbacks=[granet])

    Reference:
        Liu et al., "Sparse Training via Boosting Pruning Plasticity with
        Neuroregeneration", NeurIPS 2021.
    """

    def __init__(self, *, sparsity: float = 0.9, regeneration_rate: float = 0.5, stop_step: int | float = 0.6875,
                 regrow_stop_step: int | float = 1.0, regeneration_rate_min: float = 0.005,
                 distribution: str = "global", update_interval: int = 100, start_step: int | float = 0,
                 structure: str = "unstructured", seed: int = 0, on_nonfinite: str = "skip",
                 schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None, per_layer: bool = False):
        super().__init__(**_arguments(locals()))


@_named_callback(_algorithms.GraNetST, granet_args=_GRANET_ARGS)
class GraNetST(GraNet):
    """`model.fit` callback running GraNet-ST (`keras_sparse.algorithms.GraNetST`).

    GraNet from a sparse start (sparse-to-sparse): sparsify first (e.g.
    `sparsify(model, 0.5, "erk")`, the paper's start); a dense start raises
    at `on_train_begin`. Arguments as `GraNet`.

    Args:
        {granet_args}
        {shared_args}

    Example:

    >>> half = keras_sparse.sparsify(model, 0.5, "erk", seed=0)
    >>> half.fit(x, y, epochs=10, callbacks=[keras_sparse.callbacks.GraNetST(sparsity=0.9)])

    Reference:
        Liu et al., "Sparse Training via Boosting Pruning Plasticity with
        Neuroregeneration", NeurIPS 2021.
    """


@_named_callback(_algorithms.Chase)
class Chase(_NamedCallback):
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
        drop_fraction: RigL's initial drop fraction, in (0, 1).
        structure: only `"unstructured"` (Chase removes whole channels).
        {shared_args}

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
                 schedule=None, fraction_schedule=None,
                 fraction_span: str | None = None, total_steps: int | None = None, per_layer: bool = False):
        super().__init__(**_arguments(locals()))

    def extra_logs(self):
        return {**super().extra_logs(), **{k: v for k, v in self.algorithm.channel_stats.items()
                                             if k != "reallocated"}}
