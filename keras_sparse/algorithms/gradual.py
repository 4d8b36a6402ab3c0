"""Pruners: gradual magnitude pruning (GMP), GraNet and GraNet-ST.

Pruners raise the sparsity over training, on a sparsity schedule, instead
of keeping it constant as the SET family (`keras_sparse.algorithms.dst`)
does; they share the engine (`keras_sparse.algorithms.engine`) and take
no `drop_fraction`.
"""

from __future__ import annotations

import numpy as np

from keras_sparse import allocation
from keras_sparse import masks as mask_math
from keras_sparse._parallel import map_weights
from keras_sparse.algorithms.base import Algorithm, register
from keras_sparse.schedules import CosineDecay, CubicSparsity, UpdateSchedule, validate_floor, validate_fraction

__all__ = ["GMP", "GraNet", "GraNetST", "Pruner"]


class Pruner(Algorithm):
    """Base of the pruners: the sparsity follows a schedule to a target.

    Takes `Algorithm`'s arguments (when to update, structure, seed,
    `on_nonfinite`, injected schedules) and no drop fraction: how much each
    update prunes comes from the subclass's sparsity schedule through its
    `counts`. A pruner that also regrows (GraNet) injects its regrowth rate
    as the drop-fraction schedule (`ctx.drop_fraction`).
    """


@register("gmp")
class GMP(Pruner):
    """Gradual magnitude pruning on Zhu and Gupta's cubic schedule.

    Start from a model sparsified at sparsity 0 (`sparsify(model, 0.0)`:
    masks all ones) or any sparser start; every `update_interval` steps in
    `[start_step, stop_step]` prune by magnitude to
    `s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))**3`, reaching the
    final sparsity at the last update. Nothing is regrown.

    Args:
        sparsity: final sparsity `s_f` over the masked weights, in [0, 1).
        distribution: `"global"` (one magnitude ranking over all layers) or a
            per-layer allocation from `keras_sparse.allocation`
            (`"uniform"`, `"er"`, `"erk"`): each layer follows its own cubic
            schedule to its allocated sparsity.
        update_interval, start_step, stop_step, structure, seed: as `Algorithm`.
        **kwargs: other `Algorithm` arguments (`on_nonfinite`); not
            `drop_fraction`/`drop_fraction_decay` (TypeError).

    Reference:
        Zhu and Gupta, "To prune, or not to prune: exploring the efficacy of
        pruning for model compression", 2017.
    """

    def __init__(self, sparsity: float = 0.9, distribution: str = "global",
                 update_interval: int = 100, start_step=0, stop_step=0.75,
                 structure: str = "unstructured", seed: int = 0, **kwargs):
        unused = sorted(k for k in ("drop_fraction", "drop_fraction_decay") if k in kwargs)
        if unused:
            raise TypeError(
                f"{type(self).__name__} does not take {unused}: how much it prunes "
                "follows the cubic sparsity schedule to `sparsity`. Received: "
                f"{ {k: kwargs[k] for k in unused}!r}."
            )
        super().__init__(update_interval=update_interval, start_step=start_step,
                         stop_step=stop_step, structure=structure, seed=seed, **kwargs)
        self.sparsity = mask_math.validate_sparsity(sparsity)
        accepted = ("global",) + tuple(allocation.DISTRIBUTIONS)
        if distribution not in accepted:
            raise ValueError(f"`distribution` must be one of {list(accepted)}. Received: {distribution!r}.")
        self.distribution = distribution
        # When the sparsity follows the cubic schedule. GMP's updates are
        # exactly these; GraNet keeps updating (regrowing) after them.
        self.prune_schedule = UpdateSchedule(self.update_interval, self.start_step, self.stop_step)

    def get_config(self):
        return {**super().get_config(), "sparsity": self.sparsity, "distribution": self.distribution}

    def fresh_state(self, ctx):
        # The schedule starts from the sparsity at the start of training, not
        # at a resume: the starting non-zero counts are saved with the model.
        return [{"initial_active": np.int64(np.count_nonzero(m))} for m in ctx.masks]

    def start(self, ctx):
        targets, masks = ctx.targets, ctx.masks
        start, stop = self._prune_bounds = self.prune_schedule.bounds(ctx.total_steps)
        # Reach s_f exactly at the last scheduled update.
        self._end = max(stop - stop % self.update_interval, start + 1)
        sizes = np.array([m.size for m in masks], float)
        self._sizes = sizes
        self._initial_active = [int(s["initial_active"]) for s in ctx.state]
        self._initial = [1.0 - a / m.size for a, m in zip(self._initial_active, masks)]
        init_global = 1.0 - sum(self._initial_active) / sizes.sum()
        if init_global > self.sparsity + 1e-6:
            raise ValueError(
                f"{type(self).__name__}: the model is already {init_global:.4f} "
                f"sparse, sparser than the target sparsity={self.sparsity}. "
                "Accepted: a target >= the starting sparsity."
            )
        self._global_schedule = CubicSparsity(min(init_global, self.sparsity), self.sparsity)
        if self.distribution != "global":
            shapes = {t.key: tuple(t.mask.shape) for t in targets}
            final = allocation.allocate(shapes, self.sparsity, self.distribution)
            self._layer_schedules = [
                CubicSparsity(min(s0, final[t.key]), max(final[t.key], s0))
                for s0, t in zip(self._initial, targets)
            ]
        for t, structure in zip(targets, ctx.structures):
            mask_math.validate_structure(structure, None, self.sparsity, f"weight {t.key!r}")

    def target_sparsity(self, step: int) -> float:
        """Global target sparsity at `step`."""
        return self._global_schedule(step, self._prune_bounds[0], self._end)

    def prune_counts(self, step, weights, masks, structures=None) -> list[int]:
        """Entries each weight prunes to follow the cubic schedule.

        `structures`: per weight, the `keras_sparse.masks.Structure` kept
        (default: the algorithm's `structure` for every weight).
        """
        start = self._prune_bounds[0]
        if structures is None:
            structures = [mask_math.as_structure(self.structure)] * len(masks)
        if self.distribution == "global":
            keep = mask_math.num_active(int(self._sizes.sum()), self.target_sparsity(step))
            excess = int(sum(float(m.sum()) for m in masks)) - keep
            if excess <= 0:
                return [0] * len(masks)
            magnitudes = map_weights(np.abs, weights, int(self._sizes.sum()))
            return mask_math.global_drop_counts(masks, magnitudes, excess, structures)
        out = []
        for sched, m, structure in zip(self._layer_schedules, masks, structures):
            keep = mask_math.num_active(m.size, sched(step, start, self._end))
            out.append(max(0, int(m.sum()) - keep) // structure.unit * structure.unit)
        return out

    def counts(self, ctx):
        return [(n, 0) for n in self.prune_counts(ctx.step, ctx.weights, ctx.masks, ctx.structures)]


@register("granet")
class GraNet(GMP):
    """GraNet: gradual magnitude pruning plus zero-cost neuroregeneration.

    Every `update_interval` steps from `start_step`: until `stop_step`, prune
    by magnitude to the cubic schedule's sparsity (as `GMP`; by default
    *globally*, one magnitude ranking over all layers, as the paper); then,
    until `regrow_stop_step`, neuroregeneration: each layer drops
    `r(t) * n_active` more of its smallest weights and regrows as many by
    dense-gradient magnitude (zero init, moments reset), so the sparsity
    stays on schedule. After `stop_step` the sparsity stays at its target
    and only prune-and-regrow runs. `r(t)` decays by cosine from
    `regeneration_rate` at `start_step` to `regeneration_rate_min` at
    `regrow_stop_step`. The gradient is the one the training step already
    computed ("zero-cost"). Dense-to-sparse: `sparsify(model, 0.0)` first
    (masks all ones).

    Defaults follow the reference code (Shiweiliuiiiiiii/GraNet,
    `CIFAR/sparselearning/core.py`): `Masking.step` (lines 343-347) calls
    `pruning` (global magnitude, lines 367-401; `GraNet_uniform` is the
    per-layer variant, lines 415-455) and then `truncate_weights`
    (per-layer magnitude death and gradient regrowth, lines 537-563) every
    `update_frequency` steps until the end of training, while `pruning`
    only changes the sparsity up to its final prune iteration (line 378).
    The regrowth rate is `CosineDecay(prune_rate, len(train_loader) *
    epochs)` (`CIFAR/main.py` line 274), a `CosineAnnealingLR` with
    `eta_min=0.005` (core.py lines 27-30), i.e. cosine over all of training
    down to 0.005; `--prune-rate` defaults to 0.5 (core.py line 12). The
    README's CIFAR commands train 160 epochs with the default
    `--final-prune-epoch 110` (core.py line 23), so the prune stop defaults
    to 110 / 160 = 0.6875 of training and the regrowth runs to the end
    (`regrow_stop_step=1.0`). The reference updates every 1000 steps on
    CIFAR (`--update-frequency 1000`); keras_sparse keeps RigL's 100 as
    the default for every method.

    Args:
        sparsity: final sparsity.
        regeneration_rate: initial r, in (0, 1) (default 0.5, GraNet's prune rate).
        stop_step: last step (int) or fraction of training (float) at which
            the sparsity changes (default 0.6875).
        regrow_stop_step: last step or fraction of training of the
            prune-and-regrow updates (default 1.0: until the end); must not
            be before `stop_step`.
        regeneration_rate_min: the value r decays to at `regrow_stop_step`,
            in [0, regeneration_rate] (default 0.005).
        distribution: `"global"` (default: the paper's global magnitude
            pruning) or a per-layer allocation (`"uniform"`, `"er"`,
            `"erk"`), the reference's `GraNet_uniform`-style variant.
        **kwargs: other `GMP` arguments.

    Raises:
        TypeError, ValueError: invalid arguments (at construction), or a
            `regrow_stop_step` before `stop_step` (in `setup`).

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.0)
    >>> sparse.fit(x, y, epochs=10, callbacks=[
    ...     keras_sparse.callbacks.GraNet(sparsity=0.95, seed=0)])

    Reference:
        Liu et al., "Sparse Training via Boosting Pruning Plasticity with
        Neuroregeneration", NeurIPS 2021.
    """

    needs_gradients = True

    def __init__(self, sparsity: float = 0.9, regeneration_rate: float = 0.5,
                 stop_step: int | float = 0.6875, regrow_stop_step: int | float = 1.0,
                 regeneration_rate_min: float = 0.005, **kwargs):
        validate_fraction(regeneration_rate, "regeneration_rate")
        # Updates run until the regrowth stops (`default_schedule`); the
        # sparsity schedule (`prune_schedule`) ends at `stop_step`.
        self.regrow_stop_step = regrow_stop_step
        super().__init__(sparsity=sparsity, stop_step=stop_step, **kwargs)
        validate_floor(regeneration_rate_min, "regeneration_rate_min", regeneration_rate, "regeneration_rate")
        self.regeneration_rate = regeneration_rate
        self.regeneration_rate_min = float(regeneration_rate_min)

    def default_schedule(self):
        """Every `update_interval` steps from `start_step` to `regrow_stop_step`."""
        return UpdateSchedule(self.update_interval, self.start_step, self.regrow_stop_step)

    def default_fraction_schedule(self):
        """r(t): cosine from `regeneration_rate` to `regeneration_rate_min` over the updates."""
        rate = validate_fraction(self.regeneration_rate, "regeneration_rate")
        return CosineDecay(rate, alpha=self.regeneration_rate_min / rate)

    def get_config(self):
        return {**super().get_config(), "regeneration_rate": self.regeneration_rate,
                "regrow_stop_step": self.regrow_stop_step,
                "regeneration_rate_min": self.regeneration_rate_min}

    def check_run(self, total_steps):
        prune_stop = self.prune_schedule.bounds(total_steps)[1]
        regrow_stop = self.schedule.bounds(total_steps)[1]
        if regrow_stop < prune_stop:
            raise ValueError(
                f"{type(self).__name__}: `regrow_stop_step` ({self.regrow_stop_step!r}, "
                f"step {regrow_stop}) is before `stop_step` ({self.stop_step!r}, step "
                f"{prune_stop}). Accepted: a regrowth stop at or after the prune stop."
            )

    def grow_scores(self, ctx, index, rng):
        return np.abs(ctx.grads[index])

    def regeneration_rate_at(self, step: int) -> float:
        """r(t): the share of each layer's active weights dropped and regrown at `step`."""
        return self.drop_fraction_at(step)

    def counts(self, ctx):
        masks = ctx.masks
        prune = self.prune_counts(ctx.step, ctx.weights, masks, ctx.structures)
        rate = ctx.drop_fraction
        out = []
        for n, m, structure in zip(prune, masks, ctx.structures):
            unit = structure.unit
            regen = int(round(rate * (float(m.sum()) - n))) // unit * unit
            out.append((n + regen, regen))
        return out


@register("granet_st")
class GraNetST(GraNet):
    """GraNet-ST: GraNet from a sparse start (sparse-to-sparse).

    Start from a sparse model (e.g. `sparsify(model, 0.5, "erk")`, the
    paper's initial sparsity) and prune gradually to `sparsity` with
    neuroregeneration. Arguments as `GraNet`.

    Raises:
        ValueError: at `on_train_begin` if the model starts dense.
    """

    def start(self, ctx):
        super().start(ctx)
        if self._global_schedule.initial_sparsity <= 0.0:
            raise ValueError(
                "GraNetST starts from a sparse model, but the masks are all "
                "ones. Sparsify first, e.g. `keras_sparse.sparsify(model, 0.5)`, "
                "or use GraNet for dense-to-sparse."
            )
