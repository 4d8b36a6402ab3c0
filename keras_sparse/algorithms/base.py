"""Base updater and registry of sparse-training algorithms.

Follows google-research/jaxpruner's design: a base class owns the one
prune-and-grow step; subclasses only change the drop scores, the grow scores
or how many entries each weight drops and grows. Mask math lives in
`keras_sparse.masks`, schedules in `keras_sparse.schedules`, optimizer slots
in `keras_sparse.algorithms.optimizer_state`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any
from collections.abc import MutableMapping, Sequence

import keras
import numpy as np

from keras_sparse import masks as mask_math
from keras_sparse import schedules
from keras_sparse._parallel import map_weights
from keras_sparse.algorithms.optimizer_state import reset_slots

__all__ = ["Target", "Updater", "get", "register", "registered_names"]

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


def get(identifier: Any) -> Updater:
    """An updater from a name, a config dict or an instance (like `keras.regularizers.get`).

    Args:
        identifier: `"rigl"`, `{"class_name": "rigl", "config": {...}}` (the
            class name `"RigL"` works too), or an `Updater` instance.

    Returns:
        An `Updater`.

    Raises:
        ValueError: unknown name.
        TypeError: anything else.

    Example:

    >>> keras_sparse.algorithms.get("rigl")
    >>> keras_sparse.algorithms.get({"class_name": "set", "config": {"drop_fraction": 0.5}})
    """
    if isinstance(identifier, Updater):
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
        return cls(**config)
    raise TypeError(
        "Could not interpret algorithm identifier: expected a name, a config "
        f"dict or an Updater. Received: {identifier!r} of type "
        f"{type(identifier).__name__}. Accepted names: {registered_names()}."
    )


@dataclass
class Target:
    """One masked weight an updater manages.

    Attributes:
        key: `"<layer>/<weight>"`, used in logs.
        weight: the kernel variable.
        mask: its mask variable.
        sparsity: the wrapper's configured sparsity for it.
        state: where the updater persists this weight's training state
            (`SparseWrapper.training_state(name)`, saved with the model), or
            None to keep it in memory only.
    """

    key: str
    weight: Any
    mask: Any
    sparsity: float
    state: MutableMapping[str, Any] | None = None


def _read_weight_and_mask(target: Target) -> tuple[np.ndarray, np.ndarray]:
    """`(weight, float32 mask)` of `target` as NumPy arrays."""
    return (keras.ops.convert_to_numpy(target.weight),
            np.asarray(keras.ops.convert_to_numpy(target.mask), np.float32))


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


class Updater:
    """Base of all sparse-training algorithms: SET's prune-and-grow.

    At every scheduled step, each masked weight drops the
    `drop_fraction(step) * n_active` active entries with the lowest
    `drop_scores` and grows as many with the highest `grow_scores`; the count
    of active entries of each weight is conserved exactly. Grown weights
    start at 0.0 and their optimizer moments are reset.

    Args:
        update_interval: steps between mask updates (RigL: 100).
        start_step: first update step (int) or fraction of training.
        stop_step: last update step (int) or fraction of training (RigL: 0.75).
        drop_fraction: initial fraction of active weights dropped per update,
            in (0, 1) (RigL: 0.3).
        drop_fraction_decay: `"cosine"` (RigL), `"constant"` or
            `"stagewise"` (halved at 50% and 75% of the update span).
        structure: `"unstructured"`, `"block"` or `"n:m"`
            (`keras_sparse.masks.STRUCTURES`); masks keep it.
        seed: integer seed; randomness comes from `(seed, step, weight index)`,
            so a resumed run draws what an uninterrupted one draws.
        on_nonfinite: what an update does when a weight or a captured
            gradient holds NaN/Inf: `"skip"` (default: warn, count it in
            `skipped_updates`, change nothing) or `"raise"`
            (`FloatingPointError`, nothing changed).

    State that is not derivable from the weights, masks and
    `optimizer.iterations` (the ITOP set here; NeurRev's reference weights,
    DSR's threshold, ... in subclasses) lives in memory and is written to
    each target's `state` (the wrapper's `training_state`) by `save_state`
    and after every update; `setup` reads it back, so a run resumed from a
    `.keras` file or a `BackupAndRestore` checkpoint continues exactly.
    Subclasses list what they persist in `persistent_state`.

    Raises:
        TypeError, ValueError: invalid arguments (at construction), or a
            model they do not fit (in `setup`, before any mask changes).
    """

    needs_gradients = False
    registered_name = "updater"
    # Mask structures this algorithm keeps (`keras_sparse.masks.STRUCTURES`).
    structures: tuple[str, ...] = mask_math.STRUCTURES

    def __init__(
        self,
        update_interval: int = 100,
        start_step: int | float = 0,
        stop_step: int | float = 0.75,
        drop_fraction: float = 0.3,
        drop_fraction_decay: str = "cosine",
        structure: str = "unstructured",
        seed: int = 0,
        on_nonfinite: str = "skip",
    ):
        if on_nonfinite not in _ON_NONFINITE:
            raise ValueError(
                f"`on_nonfinite` must be one of {list(_ON_NONFINITE)}. "
                f"Received: {on_nonfinite!r}."
            )
        self.on_nonfinite = on_nonfinite
        self.update_interval = update_interval
        self.start_step = start_step
        self.stop_step = stop_step
        self.drop_fraction = drop_fraction
        self.drop_fraction_decay = drop_fraction_decay
        self.structure = mask_math.validate_structure(structure)
        if self.structure not in self.structures:
            raise ValueError(
                f"{type(self).__name__} accepts structure in {list(self.structures)}. "
                f"Received: structure={structure!r}."
            )
        self.seed = mask_math.validate_seed(seed)
        self.schedule = schedules.UpdateSchedule(update_interval, start_step, stop_step)
        if drop_fraction_decay not in _DECAYS:
            raise ValueError(
                f"`drop_fraction_decay` must be one of {list(_DECAYS)}. "
                f"Received: {drop_fraction_decay!r}."
            )
        self.fraction_schedule = {
            "cosine": schedules.CosineDecay,
            "constant": schedules.ConstantFraction,
            "stagewise": schedules.StagewiseDecay,
        }[drop_fraction_decay](drop_fraction)
        self.total_steps: int | None = None
        self.stats: dict[str, dict[str, float]] = {}
        self.skipped_updates = 0
        self._ever_active: list[np.ndarray] = []
        self._last_grown: list[np.ndarray] = []

    # ----------------------------------------------------------- config
    def get_config(self) -> dict:
        return {
            "update_interval": self.update_interval,
            "start_step": self.start_step,
            "stop_step": self.stop_step,
            "drop_fraction": self.drop_fraction,
            "drop_fraction_decay": self.drop_fraction_decay,
            "structure": self.structure,
            "seed": self.seed,
            "on_nonfinite": self.on_nonfinite,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"

    # ------------------------------------------------------- lifecycle
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
        if not targets:
            raise ValueError(
                f"{type(self).__name__} needs a sparsified model (no masked "
                "weights found). Use `keras_sparse.sparsify(model, sparsity)`."
            )
        self.total_steps = total_steps
        self.bounds = self.schedule.bounds(total_steps)
        for t in targets:
            mask = np.asarray(keras.ops.convert_to_numpy(t.mask))
            mask_math.validate_structure(self.structure, mask.shape, None, f"weight {t.key!r}")
            self._check_structure_of_mask(t.key, mask)
        current = [keras.ops.convert_to_numpy(t.mask) > 0 for t in targets]
        saved = self.restore(targets, "ever_active", current)
        self._ever_active = [c | (s > 0) for c, s in zip(current, saved)]
        # New connections of the previous update, for the churn statistic.
        saved = self.restore(targets, "last_grown", [np.zeros(c.shape, np.uint8) for c in current])
        self._last_grown = [s > 0 for s in saved]
        self.stats = {}
        self.skipped_updates = 0

    # ------------------------------------------------------------ state
    def restore(self, targets: Sequence[Target], slot: str, fresh: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per target, the saved value of `slot`, or `fresh[i]` where none is saved.

        A saved value is cast to the dtype of `fresh[i]` and must have its shape.

        Raises:
            ValueError: a saved value of the wrong shape (a file that does not
                match the model), before any mask changes.
        """
        out = []
        for t, value in zip(targets, fresh):
            value = np.asarray(value)
            saved = None if t.state is None else t.state.get(slot)
            if saved is None:
                out.append(value)
                continue
            saved = np.asarray(saved)
            if saved.shape != value.shape:
                raise ValueError(
                    f"Saved {type(self).__name__} state {slot!r} of weight "
                    f"{t.key!r} has shape {saved.shape}, expected "
                    f"{value.shape}: the saved training state does not match "
                    "this model."
                )
            out.append(saved.astype(value.dtype))
        return out

    def persistent_state(self, index: int) -> dict[str, np.ndarray]:
        """What `save_state` writes for weight `index`, by slot name.

        Subclasses add their own slots to the base's (`{**super()..., ...}`).
        Only state that `setup` cannot re-derive from the weights, masks and
        step belongs here.
        """
        return {"ever_active": self._ever_active[index].astype(np.uint8),
                "last_grown": self._last_grown[index].astype(np.uint8)}

    def save_state(self, targets: Sequence[Target]) -> None:
        """Writes `persistent_state` into each target's `state` (if it has one)."""
        for i, t in enumerate(targets):
            if t.state is not None:
                t.state.update(self.persistent_state(i))

    def _check_structure_of_mask(self, key: str, mask: np.ndarray) -> None:
        if self.structure == "block":
            units = mask_math.to_blocks(mask)
            if np.any((units > 0) & (units < 1)):
                raise ValueError(
                    f"Mask of {key!r} is not made of 1x4 blocks; sparsify with "
                    "`structure='block'` to use an updater with structure='block'."
                )
        elif self.structure == "n:m":
            if np.any(mask_math._grouped(mask).sum(axis=-2) > mask_math.N_OF_M):
                raise ValueError(
                    f"Mask of {key!r} is not 2:4 sparse; sparsify with "
                    "`structure='n:m'` to use an updater with structure='n:m'."
                )

    def drop_fraction_at(self, step: int) -> float:
        start, stop = self.bounds
        return self.fraction_schedule(step, start, stop)

    # ----------------------------------------------------- what differs
    def drop_scores(self, index: int, weight: np.ndarray, mask: np.ndarray, grad: np.ndarray | None) -> np.ndarray:
        """Higher keeps. Default: weight magnitude."""
        return np.abs(weight)

    def grow_scores(self, index: int, weight: np.ndarray, mask: np.ndarray,
                    grad: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """Higher grows first. Default (SET): uniformly random."""
        return rng.random(weight.shape)

    def counts(self, step: int, weights: list, masks: list, grads: list) -> list[tuple[int, int]]:
        """`(n_drop, n_grow)` per weight. Default: drop fraction of active, conserve."""
        fraction = self.drop_fraction_at(step)
        out = []
        for m in masks:
            n = int(round(fraction * float(m.sum())))
            out.append((n, n))
        return out

    def after_prune_and_grow(self, index, step, weight, mask, grown, grad):
        """Hook run on each weight after prune-and-grow; returns `(weight, mask, extra_stats)`."""
        return weight, mask, {}

    def before_update(self, step, weights, masks, grads) -> None:
        """Hook run once per update before any weight changes."""

    # ----------------------------------------------------------- update
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
            nothing in this weight).
        """
        if self.needs_gradients and grads is None:
            raise ValueError(f"{type(self).__name__} needs dense gradients at update steps.")
        total_size = sum(int(np.prod(t.mask.shape)) for t in targets)
        weights, masks = map(list, zip(*map_weights(_read_weight_and_mask, targets, total_size))) \
            if targets else ([], [])
        grads = list(grads) if grads is not None else [None] * len(targets)
        bad = self._nonfinite(targets, weights, grads)
        if bad:
            message = (
                f"{type(self).__name__}: the mask update at step {step} was "
                f"skipped because of NaN/Inf in {', '.join(bad)}; masks, "
                "weights and the algorithm's state are unchanged."
            )
            if self.on_nonfinite == "raise":
                raise FloatingPointError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            self.skipped_updates += 1
            self.stats = {}
            return {}
        self.before_update(step, weights, masks, grads)
        plan = self.counts(step, weights, masks, grads)
        # The per-weight prune-and-grow, its statistics and the conversion of
        # the results to tensors are independent across weights (each has
        # its own rng and state slot), so large updates run them on a thread
        # pool (NumPy and TensorFlow release the GIL); variables change only
        # below, in order, on this thread. Results do not depend on threads.
        def new_mask_and_weight(i):
            m, (n_drop, _) = masks[i], plan[i]
            new_w, new_m, regrown, extra = self._prune_and_grow_one(
                step, i, weights[i], m, grads[i], plan[i])
            ever_active = self._ever_active[i] | (new_m > 0)
            active, size = np.count_nonzero(m), new_m.size
            previous = self._last_grown[i]
            churn_grown = int(np.count_nonzero(previous))
            churn_dropped = int(np.count_nonzero(previous & (m > 0) & (new_m == 0)))
            stats = {
                "sparsity": 1.0 - np.count_nonzero(new_m) / size,
                "drop_fraction": float(n_drop) / active if active else 0.0,
                "regrown": float(np.count_nonzero(regrown)),
                "itop_rate": np.count_nonzero(ever_active) / size,
                "churn_grown": float(churn_grown),
                "churn_dropped": float(churn_dropped),
                **extra,
            }
            if churn_grown:
                stats["churn"] = churn_dropped / churn_grown
            return (keras.ops.convert_to_tensor(new_w, weights[i].dtype),
                    keras.ops.convert_to_tensor(new_m, "float32"), regrown, ever_active, stats)

        results = map_weights(new_mask_and_weight, range(len(targets)), total_size)
        stats = {}
        for i, (t, (new_w, new_m, regrown, ever_active, weight_stats)) in enumerate(zip(targets, results)):
            t.mask.assign(new_m)
            t.weight.assign(new_w)
            reset_slots(optimizer, t.weight, regrown)
            self._ever_active[i] = ever_active
            self._last_grown[i] = np.asarray(regrown) > 0
            if t.state is not None:
                t.state.update(self.persistent_state(i))
            stats[t.key] = weight_stats
        self.stats = stats
        return stats

    def _prune_and_grow_one(self, step, i, w, m, g, counts):
        """`(new_weight, new_mask, regrown, extra_stats)` of weight `i`; changes no variable."""
        n_drop, n_grow = counts
        if n_drop == 0 and n_grow == 0:
            new_m, grown = m, np.zeros_like(m)
        else:
            rng = mask_math.seed_for(self.seed, step, i)
            new_m, grown = mask_math.prune_and_grow(
                m,
                self.drop_scores(i, w, m, g) if n_drop else None,
                self.grow_scores(i, w, m, g, rng) if n_grow else None,
                n_drop, n_grow, self.structure,
            )
        # New connections are grown entries that were inactive before this
        # update; an entry dropped and re-grown in the same update is not
        # new and keeps its value and moments (as in RigL's reference code,
        # which only re-initializes `grown & ~old_mask`).
        grown = grown * (1.0 - m)
        new_w = w * new_m
        new_w *= 1.0 - grown
        new_w, new_m, extra = self.after_prune_and_grow(i, step, new_w, new_m, grown, g)
        return new_w, new_m, grown * new_m, extra

    def _nonfinite(self, targets, weights, grads) -> list[str]:
        """Names of the weights and used gradients that hold NaN or Inf."""
        bad = [f"weight {t.key!r}" for t, w in zip(targets, weights) if not np.all(np.isfinite(w))]
        if self.needs_gradients:
            bad += [f"gradient of {t.key!r}" for t, g in zip(targets, grads)
                    if g is not None and not np.all(np.isfinite(g))]
        return bad

    def churn(self) -> float | None:
        """Share of the connections grown at the previous update that the last update dropped.

        Over all weights, from `stats` (the last update); None when the
        previous update grew nothing. A high churn means grown weights are
        dropped before they could train (Liu et al. 2021 argue the update
        interval must be long enough for them to).
        """
        grown = sum(s.get("churn_grown", 0.0) for s in self.stats.values())
        dropped = sum(s.get("churn_dropped", 0.0) for s in self.stats.values())
        return dropped / grown if grown else None

    def itop_rate(self) -> float:
        """Fraction of all masked entries that have ever been active (Liu et al. 2021)."""
        total = sum(e.size for e in self._ever_active)
        return float(sum(e.sum() for e in self._ever_active)) / total if total else 0.0
