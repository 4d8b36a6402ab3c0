"""Dense-to-sparse gradual pruning: GMP, GraNet and GraNet-ST."""

from __future__ import annotations

import keras
import numpy as np

from keras_sparse import allocation
from keras_sparse import masks as mask_math
from keras_sparse._parallel import map_weights
from keras_sparse.algorithms.base import Updater, register
from keras_sparse.schedules import CosineDecay, CubicSparsity, validate_fraction

__all__ = ["GMP", "GraNet", "GraNetST"]


@register("gmp")
class GMP(Updater):
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
        update_interval, start_step, stop_step, structure, seed: as `Updater`.
        **kwargs: other `Updater` arguments (`on_nonfinite`); not
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

    def get_config(self):
        config = super().get_config()
        for k in ("drop_fraction", "drop_fraction_decay"):
            config.pop(k)
        return {**config, "sparsity": self.sparsity, "distribution": self.distribution}

    def setup(self, targets, total_steps):
        super().setup(targets, total_steps)
        start, stop = self.bounds
        # Reach s_f exactly at the last scheduled update.
        self._end = max(stop - stop % self.update_interval, start + 1)
        masks = [keras.ops.convert_to_numpy(t.mask) for t in targets]
        sizes = np.array([m.size for m in masks], float)
        self._sizes = sizes
        # The schedule starts from the sparsity at the start of training, not
        # at a resume: the starting non-zero counts are saved with the model.
        self._initial_active = [int(a) for a in self.restore(
            targets, "initial_active", [np.int64(np.count_nonzero(m)) for m in masks])]
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
        for t, m in zip(targets, masks):
            if self.structure == "n:m" and self.sparsity < 0.5:
                mask_math.validate_structure("n:m", m.shape, self.sparsity, f"weight {t.key!r}")

    def persistent_state(self, index):
        return {**super().persistent_state(index), "initial_active": np.int64(self._initial_active[index])}

    def target_sparsity(self, step: int) -> float:
        """Global target sparsity at `step`."""
        return self._global_schedule(step, self.bounds[0], self._end)

    def prune_counts(self, step, weights, masks) -> list[int]:
        """Entries each weight prunes to follow the cubic schedule."""
        start = self.bounds[0]
        unit = mask_math.group_size(self.structure)
        if self.distribution == "global":
            keep = mask_math.num_active(int(self._sizes.sum()), self.target_sparsity(step))
            excess = int(sum(float(m.sum()) for m in masks)) - keep
            if excess <= 0:
                return [0] * len(masks)
            magnitudes = map_weights(np.abs, weights, int(self._sizes.sum()))
            return mask_math.global_drop_counts(masks, magnitudes, excess, self.structure)
        out = []
        for sched, m in zip(self._layer_schedules, masks):
            keep = mask_math.num_active(m.size, sched(step, start, self._end))
            out.append(max(0, int(m.sum()) - keep) // unit * unit)
        return out

    def counts(self, step, weights, masks, grads):
        return [(n, 0) for n in self.prune_counts(step, weights, masks)]


@register("granet")
class GraNet(GMP):
    """GraNet: gradual global magnitude pruning plus zero-cost neuroregeneration.

    Every `update_interval` steps: prune globally by magnitude to the cubic
    schedule's sparsity (as `GMP`), then neuroregeneration: each layer drops
    `r(t) * n_active` more of its smallest weights and regrows as many by
    dense-gradient magnitude (zero init, moments reset), so the sparsity
    stays on schedule. `r(t)` is cosine-decayed from `regeneration_rate`.
    The gradient is the one the training step already computed ("zero-cost").
    Dense-to-sparse: `sparsify(model, 0.0)` first (masks all ones).

    Args:
        sparsity: final sparsity.
        regeneration_rate: initial r, in (0, 1) (default 0.5, GraNet's
            death rate).
        distribution: `"global"` (GraNet) or a per-layer allocation.
        **kwargs: `GMP` arguments.

    Reference:
        Liu et al., "Sparse Training via Boosting Pruning Plasticity with
        Neuroregeneration", NeurIPS 2021.
    """

    needs_gradients = True

    def __init__(self, sparsity: float = 0.9, regeneration_rate: float = 0.5, **kwargs):
        rate = validate_fraction(regeneration_rate, "regeneration_rate")
        super().__init__(sparsity=sparsity, **kwargs)
        self.regeneration_rate = regeneration_rate
        self._regen = CosineDecay(rate)

    def get_config(self):
        return {**super().get_config(), "regeneration_rate": self.regeneration_rate}

    def grow_scores(self, index, weight, mask, grad, rng):
        return np.abs(grad)

    def counts(self, step, weights, masks, grads):
        prune = self.prune_counts(step, weights, masks)
        rate = self._regen(step, self.bounds[0], self.bounds[1])
        unit = mask_math.group_size(self.structure)
        out = []
        for n, m in zip(prune, masks):
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

    def setup(self, targets, total_steps):
        super().setup(targets, total_steps)
        if self._global_schedule.initial_sparsity <= 0.0:
            raise ValueError(
                "GraNetST starts from a sparse model, but the masks are all "
                "ones. Sparsify first, e.g. `keras_sparse.sparsify(model, 0.5)`, "
                "or use GraNet for dense-to-sparse."
            )
