"""The machinery every sparse-training algorithm shares.

`Engine` runs a policy (`keras_sparse.algorithms.base.Policy`): it reads the
weights, masks and gradients once per update, applies the NaN/Inf policy,
builds the `UpdateContext`, runs the policy's per-weight prune-and-grow on a
thread pool, assigns the results to the variables, resets the optimizer
slots of new connections (`optimizer_state.reset_slots`), keeps the
persistent state (restored at `setup`, saved after every update) and the
statistics (ITOP rate, churn, the policy's own figures).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_sparse import masks as mask_math
from keras_sparse._parallel import map_weights
from keras_sparse.algorithms.context import LayerResult, SetupContext, Target, UpdateContext
from keras_sparse.algorithms.optimizer_state import reset_slots

__all__ = ["Engine"]

FRACTION_SPANS = ("updates", "training")


def _read_weight_and_mask(target: Target) -> tuple[np.ndarray, np.ndarray]:
    """`(weight, float32 mask)` of `target` as NumPy arrays."""
    return (keras.ops.convert_to_numpy(target.weight),
            np.asarray(keras.ops.convert_to_numpy(target.mask), np.float32))


class Engine:
    """Runs one algorithm's mask updates on a model's masked weights.

    Args:
        policy: the `keras_sparse.algorithms.base.Algorithm` whose hooks
            decide what changes. The engine reads its injected schedules
            (`schedule`, `fraction_schedule`, `fraction_span`), `structure`,
            `seed` and `on_nonfinite`.

    Attributes:
        total_steps, bounds: the run's planned length and update span.
        stats: per-weight figures of the last update.
        skipped_updates: updates skipped for NaN/Inf since `setup`.
        ever_active, last_grown: per weight, the ITOP set and the new
            connections of the previous update (bool arrays).
        policy_state: per weight, the policy's persistent state slots.
        policy_stat_names: names of the policy's own figures (from
            `LayerResult.stats`) in the last update.
    """

    def __init__(self, policy):
        self.policy = policy
        self.total_steps: int | None = None
        self.bounds: tuple[int, int] | None = None
        self.stats: dict[str, dict[str, float]] = {}
        self.skipped_updates = 0
        self.ever_active: list[np.ndarray] = []
        self.last_grown: list[np.ndarray] = []
        self.policy_state: list[dict[str, np.ndarray]] = []
        self.policy_stat_names: tuple[str, ...] = ()
        self.structures: tuple[mask_math.Structure, ...] = ()

    @property
    def structure(self) -> str:
        return self.policy.structure

    @property
    def seed(self) -> int:
        return self.policy.seed

    @property
    def name(self) -> str:
        return type(self.policy).__name__

    # ------------------------------------------------------------ setup
    def setup(self, targets: Sequence[Target], total_steps: int | None) -> SetupContext:
        """Validates, restores saved state, and lets the policy start a run."""
        self.policy.check_run(total_steps)
        if not targets:
            raise ValueError(
                f"{self.name} needs a sparsified model (no masked "
                "weights found). Use `keras_sparse.sparsify(model, sparsity)`."
            )
        self.total_steps = total_steps
        self.bounds = self.policy.schedule.bounds(total_steps)
        # Each weight keeps the policy's structure with its wrapper's block
        # size; a weight that cannot be grouped stays unstructured (as
        # `sparsify` made it).
        structures = tuple(
            mask_math.weight_structure(self.structure, t.mask.shape, t.block_size)
            for t in targets)
        for t, structure in zip(targets, structures):
            self._check_structure_of_mask(t, structure)
        self.structures = structures
        current = [keras.ops.convert_to_numpy(t.mask) > 0 for t in targets]
        saved = self.restore(targets, "ever_active", current)
        self.ever_active = [c | (s > 0) for c, s in zip(current, saved)]
        # New connections of the previous update, for the churn statistic.
        saved = self.restore(targets, "last_grown", [np.zeros(c.shape, np.uint8) for c in current])
        self.last_grown = [s > 0 for s in saved]
        weights, masks = zip(*[_read_weight_and_mask(t) for t in targets])
        ctx = SetupContext(tuple(targets), weights, masks, total_steps, self.bounds,
                           structures=self.structures)
        fresh = self.policy.fresh_state(ctx)
        slots = sorted({slot for f in fresh for slot in f})
        restored = {slot: self.restore(targets, slot, [f[slot] for f in fresh]) for slot in slots}
        self.policy_state = [{slot: restored[slot][i] for slot in slots} for i in range(len(targets))]
        ctx = dataclasses.replace(ctx, state=tuple(self.policy_state))
        self.policy.start(ctx)
        self.stats = {}
        self.skipped_updates = 0
        return ctx

    def _check_structure_of_mask(self, target: Target, structure: mask_math.Structure) -> None:
        mask = np.asarray(keras.ops.convert_to_numpy(target.mask))
        if not mask_math.keeps_structure(mask, structure):
            how = f"`structure={self.structure!r}`"
            if structure.kind == "block":
                how += f", `block_size={structure.block_size}`"
            raise ValueError(
                f"Mask of {target.key!r} is not {'made of ' * (structure.kind == 'block')}"
                f"{structure.describe()}; sparsify with {how} "
                f"to use an updater with structure={self.structure!r}."
            )

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
                    f"Saved {self.name} state {slot!r} of weight "
                    f"{t.key!r} has shape {saved.shape}, expected "
                    f"{value.shape}: the saved training state does not match "
                    "this model."
                )
            out.append(saved.astype(value.dtype))
        return out

    def persistent_state(self, index: int) -> dict[str, np.ndarray]:
        """What is saved for weight `index`: the ITOP set, the last growth, the policy's slots."""
        return {"ever_active": self.ever_active[index].astype(np.uint8),
                "last_grown": self.last_grown[index].astype(np.uint8),
                **self.policy_state[index]}

    def save_state(self, targets: Sequence[Target]) -> None:
        """Writes `persistent_state` into each target's `state` (if it has one)."""
        for i, t in enumerate(targets):
            if t.state is not None:
                t.state.update(self.persistent_state(i))

    def drop_fraction_at(self, step: int) -> float:
        """The injected fraction schedule at `step` (0.0 without one)."""
        schedule = self.policy.fraction_schedule
        if schedule is None:
            return 0.0
        if self.policy.fraction_span == "training":
            return schedule(step, 0, self.total_steps)
        start, stop = self.bounds
        return schedule(step, start, stop)

    # ----------------------------------------------------------- update
    def update(self, step: int, targets: Sequence[Target], grads: Sequence[np.ndarray] | None = None,
               optimizer: Any = None) -> dict[str, dict[str, float]]:
        """Runs one mask update on every target; see `Updater.update`."""
        policy = self.policy
        if policy.needs_gradients and grads is None:
            raise ValueError(f"{self.name} needs dense gradients at update steps.")
        total_size = sum(int(np.prod(t.mask.shape)) for t in targets)
        weights, masks = map(list, zip(*map_weights(_read_weight_and_mask, targets, total_size))) \
            if targets else ([], [])
        grads = list(grads) if grads is not None else [None] * len(targets)
        bad = self._nonfinite(targets, weights, grads)
        if bad:
            message = (
                f"{self.name}: the mask update at step {step} was "
                f"skipped because of NaN/Inf in {', '.join(bad)}; masks, "
                "weights and the algorithm's state are unchanged."
            )
            if self.policy.on_nonfinite == "raise":
                raise FloatingPointError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            self.skipped_updates += 1
            self.stats = {}
            return {}
        ctx = UpdateContext(step, tuple(weights), tuple(masks), tuple(grads),
                            self.drop_fraction_at(step), self.seed, self.structure,
                            self.structures, tuple(self.policy_state), optimizer)
        ctx = dataclasses.replace(ctx, scratch=dict(policy.prepare(ctx)))
        plan = policy.counts(ctx)

        # The per-weight prune-and-grow, its statistics and the conversion of
        # the results to tensors are independent across weights (each has
        # its own rng and reads only the context), so large updates run them
        # on a thread pool (NumPy and TensorFlow release the GIL); variables
        # and state change only below, in order, on this thread. Results do
        # not depend on threads.
        def new_mask_and_weight(i):
            m, (n_drop, _) = masks[i], plan[i]
            result, regrown = self._prune_and_grow_one(ctx, i, plan[i])
            new_m = result.mask
            ever_active = self.ever_active[i] | (new_m > 0)
            active, size = np.count_nonzero(m), new_m.size
            previous = self.last_grown[i]
            churn_grown = int(np.count_nonzero(previous))
            churn_dropped = int(np.count_nonzero(previous & (m > 0) & (new_m == 0)))
            stats = {
                "sparsity": 1.0 - np.count_nonzero(new_m) / size,
                "drop_fraction": float(n_drop) / active if active else 0.0,
                "regrown": float(np.count_nonzero(regrown)),
                "itop_rate": np.count_nonzero(ever_active) / size,
                "churn_grown": float(churn_grown),
                "churn_dropped": float(churn_dropped),
                **result.stats,
            }
            if churn_grown:
                stats["churn"] = churn_dropped / churn_grown
            return (keras.ops.convert_to_tensor(result.weight, weights[i].dtype),
                    keras.ops.convert_to_tensor(new_m, "float32"), regrown, ever_active, stats,
                    result)

        results = list(map_weights(new_mask_and_weight, range(len(targets)), total_size))
        # A model-level step (Chase's channel removal and global regrowth),
        # on this thread, before any variable changes.
        for i, layer in policy.finish_model(ctx, [r[5] for r in results]).items():
            results[i] = self._replace_result(ctx, i, results[i], layer)
        stats = {}
        names: set[str] = set()
        for i, (t, (new_w, new_m, regrown, ever_active, weight_stats, result)) in enumerate(
                zip(targets, results)):
            t.mask.assign(new_m)
            t.weight.assign(new_w)
            reset = regrown if result.new_connections is None else np.maximum(regrown, result.new_connections)
            reset_slots(optimizer, t.weight, reset)
            self.ever_active[i] = ever_active
            self.last_grown[i] = np.asarray(regrown) > 0
            self.policy_state[i] = {**self.policy_state[i], **result.state}
            if t.state is not None:
                t.state.update(self.persistent_state(i))
            stats[t.key] = weight_stats
            names.update(result.stats)
        self.policy_stat_names = tuple(sorted(names))
        self.stats = stats
        return stats

    @staticmethod
    def _replace_result(ctx: UpdateContext, i: int, record: tuple, layer: LayerResult) -> tuple:
        """`record` of weight `i` with the model-level step's result `layer`.

        The ITOP set keeps what was active after prune-and-grow; the
        connections of the previous update (`last_grown`) stay those of
        prune-and-grow.
        """
        _, _, regrown, ever_active, stats, result = record
        size = layer.mask.size
        ever_active = ever_active | (layer.mask > 0)
        stats = {**stats, **layer.stats, "sparsity": 1.0 - np.count_nonzero(layer.mask) / size,
                 "itop_rate": float(np.count_nonzero(ever_active) / size)}
        if layer.new_connections is not None:
            stats["regrown"] = stats.get("regrown", 0.0) + float(layer.new_connections.sum())
        return (keras.ops.convert_to_tensor(layer.weight, ctx.weights[i].dtype),
                keras.ops.convert_to_tensor(layer.mask, "float32"), regrown, ever_active, stats,
                dataclasses.replace(layer, stats={**result.stats, **layer.stats},
                                    state={**result.state, **layer.state}))

    def _prune_and_grow_one(self, ctx: UpdateContext, i: int,
                            counts: tuple[int, int]) -> tuple[LayerResult, np.ndarray]:
        """`(policy result, regrown)` of weight `i`; changes no variable and no state."""
        w, m = ctx.weights[i], ctx.masks[i]
        n_drop, n_grow = counts
        if n_drop == 0 and n_grow == 0:
            new_m, grown = m, np.zeros_like(m)
        else:
            rng = mask_math.seed_for(self.seed, ctx.step, i)
            new_m, grown = mask_math.prune_and_grow(
                m,
                self.policy.drop_scores(ctx, i) if n_drop else None,
                self.policy.grow_scores(ctx, i, rng) if n_grow else None,
                n_drop, n_grow, ctx.structures[i],
            )
        # New connections are grown entries that were inactive before this
        # update; an entry dropped and re-grown in the same update is not
        # new and keeps its value and moments (as in RigL's reference code,
        # which only re-initializes `grown & ~old_mask`).
        grown = grown * (1.0 - m)
        new_w = w * new_m
        new_w *= 1.0 - grown
        result = self.policy.finish(ctx, i, new_w, new_m, grown)
        return result, grown * result.mask

    def _nonfinite(self, targets, weights, grads) -> list[str]:
        """Names of the weights and used gradients that hold NaN or Inf."""
        bad = [f"weight {t.key!r}" for t, w in zip(targets, weights) if not np.all(np.isfinite(w))]
        if self.policy.needs_gradients:
            bad += [f"gradient of {t.key!r}" for t, g in zip(targets, grads)
                    if g is not None and not np.all(np.isfinite(g))]
        return bad

    # ------------------------------------------------------- statistics
    def policy_statistics(self, stats: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
        """The policy's own figures of an update (default: the last), summed over weights."""
        stats = self.stats if stats is None else stats
        names = sorted({n for s in stats.values() for n in s} & set(self.policy_stat_names))
        return {n: float(sum(s.get(n, 0.0) for s in stats.values())) for n in names}

    def churn(self) -> float | None:
        """See `Updater.churn`."""
        grown = sum(s.get("churn_grown", 0.0) for s in self.stats.values())
        dropped = sum(s.get("churn_dropped", 0.0) for s in self.stats.values())
        return dropped / grown if grown else None

    def itop_rate(self) -> float:
        """See `Updater.itop_rate`."""
        total = sum(e.size for e in self.ever_active)
        return float(sum(e.sum() for e in self.ever_active)) / total if total else 0.0
