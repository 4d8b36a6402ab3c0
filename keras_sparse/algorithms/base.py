"""Base updater and registry of sparse-training algorithms.

Follows google-research/jaxpruner's design: a base class owns the one
prune-and-grow step; subclasses only change the drop scores, the grow scores
or how many entries each weight drops and grows. Mask math lives in
`keras_sparse.masks`, schedules in `keras_sparse.schedules`, optimizer slots
in `keras_sparse.algorithms.optimizer_state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np

from keras_sparse import masks as mask_math
from keras_sparse import schedules
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


def get(identifier: Any) -> "Updater":
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
    """

    key: str
    weight: Any
    mask: Any
    sparsity: float


_DECAYS = ("cosine", "constant", "stagewise")


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
        seed: integer seed; randomness comes from `(seed, step, weight index)`.

    Raises:
        TypeError, ValueError: invalid arguments (at construction), or a
            model they do not fit (in `setup`, before any mask changes).
    """

    needs_gradients = False
    registered_name = "updater"

    def __init__(
        self,
        update_interval: int = 100,
        start_step: int | float = 0,
        stop_step: int | float = 0.75,
        drop_fraction: float = 0.3,
        drop_fraction_decay: str = "cosine",
        structure: str = "unstructured",
        seed: int = 0,
    ):
        self.update_interval = update_interval
        self.start_step = start_step
        self.stop_step = stop_step
        self.drop_fraction = drop_fraction
        self.drop_fraction_decay = drop_fraction_decay
        self.structure = mask_math.validate_structure(structure)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise TypeError(f"`seed` must be a non-negative int. Received: {seed!r}.")
        self.seed = int(seed)
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
        self._ever_active: list[np.ndarray] = []

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
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"

    # ------------------------------------------------------- lifecycle
    def setup(self, targets: Sequence[Target], total_steps: int | None) -> None:
        """Validates the model and schedule, and initializes per-weight state.

        Called by the callback at `on_train_begin`, before any mask changes.

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
        self._ever_active = [keras.ops.convert_to_numpy(t.mask) > 0 for t in targets]
        self.stats = {}

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
            `{key: {"sparsity", "drop_fraction", "regrown", "itop_rate", ...}}`.
        """
        if self.needs_gradients and grads is None:
            raise ValueError(f"{type(self).__name__} needs dense gradients at update steps.")
        weights = [keras.ops.convert_to_numpy(t.weight) for t in targets]
        masks = [np.asarray(keras.ops.convert_to_numpy(t.mask), np.float32) for t in targets]
        grads = list(grads) if grads is not None else [None] * len(targets)
        self.before_update(step, weights, masks, grads)
        plan = self.counts(step, weights, masks, grads)
        stats = {}
        for i, t in enumerate(targets):
            w, m, g = weights[i], masks[i], grads[i]
            n_drop, n_grow = plan[i]
            rng = mask_math.seed_for(self.seed, step, i)
            active = float(m.sum())
            if n_drop == 0 and n_grow == 0:
                new_m, grown = m, np.zeros_like(m)
            else:
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
            regrown = grown * new_m
            t.mask.assign(np.asarray(new_m, np.float32))
            t.weight.assign(np.asarray(new_w, w.dtype))
            reset_slots(optimizer, t.weight, regrown)
            self._ever_active[i] |= new_m > 0
            size = new_m.size
            stats[t.key] = {
                "sparsity": 1.0 - float(new_m.sum()) / size,
                "drop_fraction": float(n_drop) / active if active else 0.0,
                "regrown": float(regrown.sum()),
                "itop_rate": np.count_nonzero(self._ever_active[i]) / size,
                **extra,
            }
        self.stats = stats
        return stats

    def itop_rate(self) -> float:
        """Fraction of all masked entries that have ever been active (Liu et al. 2021)."""
        total = sum(e.size for e in self._ever_active)
        return float(sum(e.sum() for e in self._ever_active)) / total if total else 0.0
