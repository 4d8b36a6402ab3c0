"""Sparse-training algorithms: policy, engine, and the registry.

Writing a new algorithm means writing a *policy*: what each mask update
drops and grows. Everything else is the *engine*'s job
(`keras_sparse.algorithms.engine.Engine`): reading the variables once,
the NaN/Inf policy, running weights on threads, assigning masks and
weights, resetting the optimizer moments of new connections
(`keras_sparse.algorithms.optimizer_state`), saving and restoring state
with the model, and the statistics the callback logs.

A policy overrides only the hooks of `Policy` that differ from SET's
(drop by magnitude, grow at random, drop `drop_fraction * n_active` and
grow as many). Every hook receives an explicit, frozen context
(`keras_sparse.algorithms.context`):

- `counts(ctx)`: `(n_drop, n_grow)` per weight;
- `drop_scores(ctx, i)` / `grow_scores(ctx, i, rng)`: higher keeps /
  grows first;
- `prepare(ctx)`: per-update values the other hooks read from
  `ctx.scratch` (computed once, on the engine's thread);
- `finish(ctx, i, weight, mask, grown)`: a last per-weight step, returning
  a `LayerResult` with the method's own statistics and state;
- `finish_model(ctx, results)`: a model-level step over all weights;
- `fresh_state(ctx)` / `start(ctx)`: persistent per-weight state and
  checks at the start of a run (`ctx.state` holds the restored state).

`Algorithm` binds a policy to an engine and to its injected schedules (an
`UpdateSchedule` saying when, a drop-fraction schedule saying how much);
`Updater` is the base of the SET family (constant sparsity, drop and
grow), `keras_sparse.algorithms.gradual.Pruner` that of the pruners (GMP,
GraNet: sparsity rises over training).

Example:

>>> class RandomDrop(keras_sparse.algorithms.Updater):
...     def drop_scores(self, ctx, i):
...         return keras_sparse.masks.seed_for(self.seed, ctx.step, i, 7).random(
...             ctx.weights[i].shape)
>>> model.fit(x, y, callbacks=[
...     keras_sparse.callbacks.DynamicSparseTraining(RandomDrop(update_interval=10))])

Follows google-research/jaxpruner's design (`base_updater.py`: scores
separate from the state and the injected `sparsity_schedule`). Mask math
lives in `keras_sparse.masks`, schedules in `keras_sparse.schedules`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_sparse import masks as mask_math
from keras_sparse import schedules
from keras_sparse.algorithms.context import LayerResult, SetupContext, Target, UpdateContext
from keras_sparse.algorithms.engine import FRACTION_SPANS, Engine

__all__ = [
    "Algorithm", "LayerResult", "Policy", "SetupContext", "Target", "UpdateContext", "Updater",
    "get", "register", "registered_names",
]

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: registers an updater under snake_case `name` and with Keras saving."""

    def decorate(cls):
        cls.registered_name = name
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="keras_sparse.algorithms", name=cls.__name__)(cls)

    return decorate


def registered_names() -> list[str]:
    """Names accepted by `get`."""
    return sorted(_REGISTRY)


def get(identifier: Any) -> Algorithm:
    """An updater from a name, a config dict or an instance (like `keras.regularizers.get`).

    Args:
        identifier: `"rigl"`, `{"class_name": "rigl", "config": {...}}` (the
            class name `"RigL"` works too), or an `Algorithm` instance
            (`Updater`, `Pruner` or a custom subclass).

    Returns:
        An `Algorithm`.

    Raises:
        ValueError: unknown name.
        TypeError: anything else.

    Example:

    >>> keras_sparse.algorithms.get("rigl")
    >>> keras_sparse.algorithms.get({"class_name": "set", "config": {"drop_fraction": 0.5}})
    """
    if isinstance(identifier, Algorithm):
        return identifier
    config: dict = {}
    if isinstance(identifier, dict):
        if "class_name" not in identifier:
            raise ValueError(
                "An algorithm config dict needs a 'class_name' key. Received: "
                f"{identifier!r}. Accepted names: {registered_names()}."
            )
        config = dict(identifier.get("config") or {})
        identifier = identifier["class_name"]
    if isinstance(identifier, str):
        by_class = {cls.__name__: cls for cls in _REGISTRY.values()}
        cls = _REGISTRY.get(identifier) or by_class.get(identifier)
        if cls is None:
            raise ValueError(
                f"Unknown sparse-training algorithm {identifier!r}. Accepted "
                f"names: {registered_names()}."
            )
        return cls.from_config(config)
    raise TypeError(
        "Could not interpret algorithm identifier: expected a name, a config "
        f"dict or an Updater. Received: {identifier!r} of type "
        f"{type(identifier).__name__}. Accepted names: {registered_names()}."
    )


def validate_real(value, what: str, minimum: float = 0.0, inclusive: bool = True) -> float:
    """Checks that `value` is a finite real number `>= minimum` (`> minimum` if not inclusive).

    Returns:
        `value` as a Python float.

    Raises:
        TypeError: not a real number (bools and strings included).
        ValueError: NaN, infinite, or below the bound.
    """
    sign = ">=" if inclusive else ">"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"`{what}` must be a finite float {sign} {minimum:g}. Received: {value!r} "
            f"of type {type(value).__name__}."
        )
    v = float(value)
    if not np.isfinite(v) or (v < minimum if inclusive else v <= minimum):
        raise ValueError(f"`{what}` must be a finite float {sign} {minimum:g}. Received: {value!r}.")
    return v


_DECAYS = ("cosine", "constant", "stagewise")
_ON_NONFINITE = ("skip", "raise")


class Policy:
    """What a mask update changes: scores and counts, from an explicit context.

    The defaults are SET's: drop the lowest weight magnitudes, grow at
    random, `round(ctx.drop_fraction * n_active)` of each. Hooks read only
    their context and the policy's hyperparameters; they return results
    and never set attributes for another hook (the per-weight hooks may
    run on worker threads). Persistent per-weight state lives in
    `ctx.state` and changes through `LayerResult.state`.

    Attributes:
        needs_gradients: whether `ctx.grads` must hold dense gradients.
        structures: the mask structures this policy keeps.
    """

    needs_gradients = False
    registered_name = "policy"
    # Mask structures this algorithm keeps (`keras_sparse.masks.STRUCTURES`).
    structures: tuple[str, ...] = mask_math.STRUCTURES

    # ------------------------------------------------------- run start
    def check_run(self, total_steps: int | None) -> None:
        """Rejects a training length the policy cannot run (first thing in `setup`)."""

    def fresh_state(self, ctx: SetupContext) -> list[dict[str, np.ndarray]]:
        """Per weight, the persistent state slots of a fresh run (saved with the model).

        A slot saved in the model's training state replaces the fresh value
        (same shape required). Only state that cannot be re-derived from the
        weights, masks and step belongs here.
        """
        return [{} for _ in ctx.targets]

    def start(self, ctx: SetupContext) -> None:
        """Checks the model and derives per-run values; `ctx.state` is restored.

        Raises:
            ValueError: a model the policy cannot run, before any mask changes.
        """

    # ---------------------------------------------------------- update
    def prepare(self, ctx: UpdateContext) -> Mapping[str, Any]:
        """Per-update values for the other hooks (`ctx.scratch`). Default: none."""
        return {}

    def counts(self, ctx: UpdateContext) -> list[tuple[int, int]]:
        """`(n_drop, n_grow)` per weight. Default: drop fraction of active, conserve."""
        out = []
        for m in ctx.masks:
            n = int(round(ctx.drop_fraction * float(m.sum())))
            out.append((n, n))
        return out

    def drop_scores(self, ctx: UpdateContext, index: int) -> np.ndarray:
        """Higher keeps. Default: weight magnitude."""
        return np.abs(ctx.weights[index])

    def grow_scores(self, ctx: UpdateContext, index: int, rng: np.random.Generator) -> np.ndarray:
        """Higher grows first. Default (SET): uniformly random."""
        return rng.random(ctx.weights[index].shape)

    def finish(self, ctx: UpdateContext, index: int, weight: np.ndarray, mask: np.ndarray,
               grown: np.ndarray) -> LayerResult:
        """Last per-weight step after prune-and-grow. Default: keep the result.

        Args:
            ctx: the update's context.
            index: the weight.
            weight: its values after prune-and-grow (new connections at 0).
            mask: its new mask.
            grown: 1.0 where a new connection was grown.

        Returns:
            A `LayerResult` (weight, mask, statistics, changed state).
        """
        return LayerResult(weight, mask)

    def finish_model(self, ctx: UpdateContext, results: Sequence[LayerResult]) -> dict[int, LayerResult]:
        """A model-level step after every weight's `finish` (on the engine's thread).

        For what needs all weights at once (Chase's channel removal and
        global regrowth). Variables are assigned after it.

        Args:
            ctx: the update's context (weights and masks from before the update).
            results: per weight, its `finish` result.

        Returns:
            `{index: LayerResult}` for the weights it changes (default: none).
        """
        return {}


def with_fraction_schedule(config: dict) -> dict:
    """A copy of an algorithm config with its serialized `fraction_schedule` rebuilt."""
    config = dict(config)
    if isinstance(config.get("fraction_schedule"), dict):
        config["fraction_schedule"] = keras.saving.deserialize_keras_object(config["fraction_schedule"])
    return config


class Algorithm(Policy):
    """A policy bound to the engine and to its schedules: what the callbacks run.

    Args:
        update_interval: steps between mask updates (RigL: 100).
        start_step: first update step (int) or fraction of training.
        stop_step: last update step (int) or fraction of training (RigL: 0.75).
        structure: `"unstructured"`, `"block"` or `"n:m"`
            (`keras_sparse.masks.STRUCTURES`); masks keep it. `"block"`
            keeps each layer's block size (`sparsify(block_size=)`), and a
            weight that `sparsify` left unstructured (it cannot be grouped)
            is updated unstructured.
        seed: integer seed; randomness comes from `(seed, step, weight index)`,
            so a resumed run draws what an uninterrupted one draws.
        on_nonfinite: what an update does when a weight or a captured
            gradient holds NaN/Inf: `"skip"` (default: warn, count it in
            `skipped_updates`, change nothing) or `"raise"`
            (`FloatingPointError`, nothing changed).
        schedule: the `keras_sparse.schedules.UpdateSchedule` of update
            steps; default `default_schedule()`, built from the three
            arguments above (a given schedule sets them).
        fraction_schedule: `(step, start, stop) -> float`, the drop
            fraction each update hands the policy (`ctx.drop_fraction`), a
            `keras_sparse.schedules` object; default
            `default_fraction_schedule()` (built from the subclass's
            arguments). Saved in the config only when given.
        fraction_span: `"updates"` (the fraction schedule runs over
            `[start_step, stop_step]`) or `"training"` (over all of training);
            None: the class's `default_fraction_span`.

    Raises:
        TypeError, ValueError: invalid arguments (at construction), or a
            model they do not fit (in `setup`, before any mask changes).
    """

    default_fraction_span: str = "updates"
    """The `fraction_span` used when none is given."""

    def __init__(
        self,
        update_interval: int = 100,
        start_step: int | float = 0,
        stop_step: int | float = 0.75,
        *,
        structure: str = "unstructured",
        seed: int = 0,
        on_nonfinite: str = "skip",
        schedule: schedules.UpdateSchedule | None = None,
        fraction_schedule: Any = None,
        fraction_span: str | None = None,
    ):
        if on_nonfinite not in _ON_NONFINITE:
            raise ValueError(
                f"`on_nonfinite` must be one of {list(_ON_NONFINITE)}. "
                f"Received: {on_nonfinite!r}."
            )
        if fraction_span is None:
            fraction_span = self.default_fraction_span
        if fraction_span not in FRACTION_SPANS:
            raise ValueError(
                f"`fraction_span` must be one of {list(FRACTION_SPANS)}. Received: {fraction_span!r}."
            )
        if schedule is not None and not isinstance(schedule, schedules.UpdateSchedule):
            raise TypeError(
                "`schedule` must be a keras_sparse.schedules.UpdateSchedule or None. "
                f"Received: {schedule!r} of type {type(schedule).__name__}."
            )
        if fraction_schedule is not None and not callable(fraction_schedule):
            raise TypeError(
                "`fraction_schedule` must be a callable `(step, start, stop) -> float` "
                f"(a keras_sparse.schedules object) or None. Received: {fraction_schedule!r}."
            )
        self.on_nonfinite = on_nonfinite
        if schedule is not None:
            update_interval, start_step, stop_step = schedule.interval, schedule.start, schedule.stop
        self.update_interval = update_interval
        self.start_step = start_step
        self.stop_step = stop_step
        self.structure = mask_math.validate_structure(structure)
        if self.structure not in self.structures:
            raise ValueError(
                f"{type(self).__name__} accepts structure in {list(self.structures)}. "
                f"Received: structure={structure!r}."
            )
        self.seed = mask_math.validate_seed(seed)
        self.fraction_span = fraction_span
        self._given_fraction_schedule = fraction_schedule
        self._fraction_schedule = fraction_schedule
        self.schedule = schedule if schedule is not None else self.default_schedule()
        self.engine = Engine(self)

    # ------------------------------------------------------- schedules
    def default_schedule(self) -> schedules.UpdateSchedule:
        """The update schedule when none is injected: every `update_interval` in `[start, stop]`."""
        return schedules.UpdateSchedule(self.update_interval, self.start_step, self.stop_step)

    def default_fraction_schedule(self):
        """The drop-fraction schedule when none is injected (None: 0.0 at every update)."""
        return None

    @property
    def fraction_schedule(self):
        """The drop-fraction schedule: injected, or `default_fraction_schedule()`."""
        if self._fraction_schedule is None:
            self._fraction_schedule = self.default_fraction_schedule()
        return self._fraction_schedule

    # ----------------------------------------------------------- config
    def get_config(self) -> dict:
        config = {
            "update_interval": self.update_interval,
            "start_step": self.start_step,
            "stop_step": self.stop_step,
            "structure": self.structure,
            "seed": self.seed,
            "on_nonfinite": self.on_nonfinite,
        }
        if self._given_fraction_schedule is not None:
            config["fraction_schedule"] = keras.saving.serialize_keras_object(self._given_fraction_schedule)
            config["fraction_span"] = self.fraction_span
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**with_fraction_schedule(config))

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"

    # ------------------------------------------- the engine, delegated
    def setup(self, targets: Sequence[Target], total_steps: int | None) -> None:
        """Validates the model and schedule, and initializes per-weight state.

        State saved in the targets' `state` (a resumed or reloaded model) is
        read back; missing state starts fresh from the current model.
        Called by the callback at `on_train_begin` and again before the first
        batch (after `BackupAndRestore` may have restored the model), before
        any mask changes.

        Raises:
            ValueError: stop/start past training, structure incompatible with
                a weight shape, or method-specific problems.
        """
        self.engine.setup(targets, total_steps)

    def update(self, step: int, targets: Sequence[Target], grads: Sequence[np.ndarray] | None = None,
               optimizer=None) -> dict[str, dict[str, float]]:
        """Runs one mask update on every target and returns per-weight stats.

        Args:
            step: the optimizer step of this update.
            targets: the masked weights (same list as in `setup`).
            grads: dense gradients per target (needed if `needs_gradients`).
            optimizer: whose moments of regrown entries are reset.

        Returns:
            `{key: {"sparsity", "drop_fraction", "regrown", "itop_rate",
            "churn_grown", "churn_dropped", "churn", ...}}`: `churn_grown`
            is the number of connections grown (new) at the previous update,
            `churn_dropped` how many of them this update dropped, and
            `churn` their ratio (absent when the previous update grew
            nothing in this weight); `...` are the policy's own figures
            (`LayerResult.stats`).
        """
        return self.engine.update(step, targets, grads, optimizer)

    def restore(self, targets: Sequence[Target], slot: str, fresh: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per target, the saved value of `slot`, or `fresh[i]` (see `Engine.restore`)."""
        return self.engine.restore(targets, slot, fresh)

    def persistent_state(self, index: int) -> dict[str, np.ndarray]:
        """What `save_state` writes for weight `index`, by slot name."""
        return self.engine.persistent_state(index)

    def save_state(self, targets: Sequence[Target]) -> None:
        """Writes `persistent_state` into each target's `state` (if it has one)."""
        self.engine.save_state(targets)

    def drop_fraction_at(self, step: int) -> float:
        """The drop-fraction schedule at `step` (after `setup`)."""
        return self.engine.drop_fraction_at(step)

    def state_of(self, slot: str) -> list[np.ndarray]:
        """Per weight, the policy's persistent state `slot` (after `setup`)."""
        return [s[slot] for s in self.engine.policy_state]

    @property
    def total_steps(self) -> int | None:
        return self.engine.total_steps

    @property
    def bounds(self) -> tuple[int, int] | None:
        return self.engine.bounds

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-weight figures of the last update (`{}` after a skipped one)."""
        return self.engine.stats

    @stats.setter
    def stats(self, value):
        self.engine.stats = value

    @property
    def skipped_updates(self) -> int:
        """Updates skipped for NaN/Inf since `setup`."""
        return self.engine.skipped_updates

    @property
    def _ever_active(self) -> list[np.ndarray]:
        return self.engine.ever_active

    @property
    def _last_grown(self) -> list[np.ndarray]:
        return self.engine.last_grown

    @property
    def policy_stat_names(self) -> tuple[str, ...]:
        """Names of the policy's own figures in the last update's stats."""
        return self.engine.policy_stat_names

    def policy_statistics(self, stats: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
        """The policy's own figures (e.g. `awakened`) of an update, summed over weights."""
        return self.engine.policy_statistics(stats)

    def churn(self) -> float | None:
        """Share of the connections grown at the previous update that the last update dropped.

        Over all weights, from `stats` (the last update); None when the
        previous update grew nothing. A high churn means grown weights are
        dropped before they could train (Liu et al. 2021 argue the update
        interval must be long enough for them to).
        """
        return self.engine.churn()

    def itop_rate(self) -> float:
        """Fraction of all masked entries that have ever been active (Liu et al. 2021)."""
        return self.engine.itop_rate()


class Updater(Algorithm):
    """Base of the SET family (constant sparsity): SET's prune-and-grow.

    At every scheduled step, each masked weight drops the
    `drop_fraction(step) * n_active` active entries with the lowest
    `drop_scores` and grows as many with the highest `grow_scores`; the count
    of active entries of each weight is conserved exactly. Grown weights
    start at 0.0 and their optimizer moments are reset.

    Args:
        update_interval, start_step, stop_step: when masks change, as
            `Algorithm` (RigL: every 100 steps until 0.75 of training).
        drop_fraction: initial fraction of active weights dropped per update,
            in (0, 1) (RigL: 0.3).
        drop_fraction_decay: `"cosine"` (RigL), `"constant"` or
            `"stagewise"` (halved at 50% and 75% of the update span); with
            `drop_fraction`, builds the default drop-fraction schedule.
        structure, seed, on_nonfinite: as `Algorithm`.
        **kwargs: `Algorithm`'s injected `schedule`, `fraction_schedule`,
            `fraction_span`.

    State that is not derivable from the weights, masks and
    `optimizer.iterations` (the ITOP set here; NeurRev's reference weights,
    DSR's threshold, ... in subclasses) lives in the engine and is written
    to each target's `state` (the wrapper's `training_state`) by
    `save_state` and after every update; `setup` reads it back, so a run
    resumed from a `.keras` file or a `BackupAndRestore` checkpoint
    continues exactly. Subclasses declare what they persist in
    `fresh_state`.

    Raises:
        TypeError, ValueError: as `Algorithm`; also an invalid drop fraction
            or decay, at construction.
    """

    registered_name = "updater"

    def __init__(
        self,
        update_interval: int = 100,
        start_step: int | float = 0,
        stop_step: int | float = 0.75,
        drop_fraction: float | None = 0.3,
        drop_fraction_decay: str | None = "cosine",
        structure: str = "unstructured",
        seed: int = 0,
        on_nonfinite: str = "skip",
        **kwargs,
    ):
        # None for both: the subclass's `default_fraction_schedule` decides.
        if drop_fraction_decay is not None and drop_fraction_decay not in _DECAYS:
            raise ValueError(
                f"`drop_fraction_decay` must be one of {list(_DECAYS)}. "
                f"Received: {drop_fraction_decay!r}."
            )
        self.drop_fraction = drop_fraction
        self.drop_fraction_decay = drop_fraction_decay
        super().__init__(update_interval, start_step, stop_step, structure=structure, seed=seed,
                         on_nonfinite=on_nonfinite, **kwargs)
        if drop_fraction is not None and drop_fraction_decay is not None:
            self._generic_fraction_schedule()  # validates drop_fraction now

    def _generic_fraction_schedule(self):
        return {
            "cosine": schedules.CosineDecay,
            "constant": schedules.ConstantFraction,
            "stagewise": schedules.StagewiseDecay,
        }[self.drop_fraction_decay](self.drop_fraction)

    def default_fraction_schedule(self):
        """`drop_fraction` decayed by `drop_fraction_decay` over the update span."""
        if self.drop_fraction is None or self.drop_fraction_decay is None:
            return None
        return self._generic_fraction_schedule()

    def get_config(self) -> dict:
        config = super().get_config()
        head = {k: config.pop(k) for k in ("update_interval", "start_step", "stop_step")}
        return {**head, "drop_fraction": self.drop_fraction,
                "drop_fraction_decay": self.drop_fraction_decay, **config}
