"""The SET family: SET, RigL, RigL-ITOP, MEST+EM, NeurRev, DSR, Deep-R.

Sparse-to-sparse dynamic sparse training at constant sparsity: every
update drops and grows connections (`keras_sparse.algorithms.base.Updater`).
Each class is a policy (scores, counts, per-update hooks on an
`UpdateContext`) run by the shared engine; the pruners, whose sparsity
rises over training, are in `keras_sparse.algorithms.gradual`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np

from keras_sparse import masks as mask_math
from keras_sparse import schedules
from keras_sparse.algorithms.base import LayerResult, Updater, register, validate_real
from keras_sparse.schedules import validate_floor, validate_fraction

__all__ = ["DSR", "DeepR", "MEST", "NeurRev", "RigL", "RigLITOP", "SET"]


@register("set")
class SET(Updater):
    """Sparse Evolutionary Training: drop smallest magnitudes, grow at random.

    Uses RigL's schedule defaults (every 100 steps, drop fraction 0.3 cosine
    decayed, stop at 75% of training) so methods compare on equal terms.
    See `Updater` for the arguments.

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.9, seed=0)
    >>> sparse.fit(x, y, callbacks=[keras_sparse.callbacks.SET(seed=0)])

    Reference:
        Mocanu et al., "Scalable training of artificial neural networks with
        adaptive sparse connectivity inspired by network science", Nature
        Communications 2018.
    """


@register("rigl")
class RigL(SET):
    """RigL: SET with growth by dense-gradient magnitude.

    Dense gradients come from the user's own training step (see
    `keras_sparse.gradients`). The callback also logs the ITOP rate
    (fraction of weights ever active, Liu et al. 2021). Arguments as
    `Updater`; defaults are google-research/rigl's.

    Reference:
        Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """

    needs_gradients = True

    def grow_scores(self, ctx, index, rng):
        return np.abs(ctx.grads[index])


@register("rigl_itop")
class RigLITOP(RigL):
    """RigL-ITOP: RigL with In-Time Over-Parameterization's exploration schedule.

    The same prune-and-grow as `RigL` (drop by magnitude, grow by
    dense-gradient magnitude, zero init), with the ITOP paper's schedule,
    which lets the sparse model explore more parameters over training:
    a long update interval (grown weights train long enough to be judged
    before the next update), a larger drop fraction, cosine-decayed over
    *all* of training down to a small floor, and no stop at 75%.

    Defaults, from the reference code (Shiweiliuiiiiiii/In-Time-Over-
    Parameterization): RigL-ITOP's README command (`--growth gradient
    --death magnitude --update_frequency 4000 --epochs 250 --batch-size 128`,
    CIFAR) gives `update_interval=4000`; `--death-rate` defaults to 0.5
    (`sparselearning/core.py`, `add_sparse_args`), so `drop_fraction=0.5`;
    `main.py` builds `CosineDecay(args.death_rate, len(train_loader) *
    epochs)` and `core.py`'s `CosineDecay` is `CosineAnnealingLR` with
    `eta_min=0.005`, so the drop fraction decays by cosine from 0.5 at step
    0 to `drop_fraction_min=0.005` at the end of training; `Masking.step`
    updates every `update_frequency` steps until the end, so
    `stop_step=1.0`. 4000 steps is about 4% of that 250-epoch run (~98k
    steps); on much shorter budgets pass a proportionally shorter
    `update_interval` (the accuracy benchmark uses 4% of its steps).

    Args:
        update_interval: steps between updates (default 4000).
        stop_step: last update step or fraction of training (default 1.0:
            until the end).
        drop_fraction: initial drop fraction (default 0.5).
        drop_fraction_decay: `"cosine"` (default), `"constant"` or
            `"stagewise"`.
        drop_fraction_min: the cosine's floor, in [0, drop_fraction]
            (default 0.005; only used with `"cosine"`).
        **kwargs: other `Updater` arguments.

    Raises:
        TypeError, ValueError: invalid arguments, e.g. `drop_fraction_min`
            outside [0, drop_fraction].

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.95, "erk", seed=0)
    >>> sparse.fit(x, y, epochs=250, callbacks=[
    ...     keras_sparse.callbacks.RigLITOP(update_interval=4000, seed=0)])

    Reference:
        Liu et al., "Do We Actually Need Dense Over-Parameterization?
        In-Time Over-Parameterization in Sparse Training", ICML 2021.
    """

    def __init__(self, update_interval: int = 4000, stop_step: int | float = 1.0,
                 drop_fraction: float = 0.5, drop_fraction_decay: str = "cosine",
                 drop_fraction_min: float = 0.005, **kwargs):
        super().__init__(update_interval=update_interval, stop_step=stop_step,
                         drop_fraction=drop_fraction, drop_fraction_decay=drop_fraction_decay,
                         **kwargs)
        self.drop_fraction_min = validate_floor(drop_fraction_min, "drop_fraction_min", drop_fraction,
                                                "drop_fraction")

    def default_fraction_schedule(self):
        """Cosine from `drop_fraction` down to `drop_fraction_min` (other decays: as `Updater`)."""
        if self.drop_fraction_decay == "cosine":
            return schedules.CosineDecay(
                self.drop_fraction, alpha=self.drop_fraction_min / float(self.drop_fraction))
        return super().default_fraction_schedule()

    def get_config(self):
        return {**super().get_config(), "drop_fraction_min": self.drop_fraction_min}


@register("mest")
class MEST(Updater):
    """MEST with Elastic Mutation (EM): drop by |W| + lambda |grad W|, grow at random.

    At every update each masked weight drops the `mutation_ratio(step) *
    n_active` active entries with the lowest removal score `|W| + lambda
    |grad W|` and regrows as many at random among its inactive entries
    (new ones start at zero, optimizer moments reset), so its non-zero
    count is conserved exactly. The mutation ratio decays in stages.

    Elastic bounds, as in the reference code (boone891214/MEST,
    `prune_utils/retrain.py::SparseTraining.update_mask` with
    `utils_pr.weight_pruning` / `weight_growing`): training is split into
    stages at `--mask-update-decay-epoch`; in stage k each update prunes the
    layer to the *lower bound* sparsity `lower_bound[k]` (the prune-to
    sparsity) by the removal score, then grows random zero entries back to
    the *upper bound* sparsity (the grow-to sparsity). The reference's bounds
    are absolute sparsities applied to every layer; keras_sparse keeps each
    layer's own sparsity (any allocation: uniform, ERK, ...) and applies the
    same relative mutation: in stage k a layer mutates the fraction
    `(lower_bound[k] - upper_bound) / (1 - upper_bound)` of its active
    weights (its density shrinks by the factor `(1 - lower_bound[k]) /
    (1 - upper_bound)` before regrowing). For a layer whose sparsity equals
    `upper_bound` this is exactly the reference's update. `mutation_ratios`
    holds these fractions. Stage boundaries are fractions of the whole
    training (not of the update span); a step on a boundary belongs to the
    new stage (the reference's `epoch >= decay_epoch`).

    Defaults: the reference's 90% EM script
    (`scripts/resnet32/EM/run_mag_prune_irr_sp_EM.sh`: `--lower-bound
    0.92-0.91-0.9 --upper-bound 0.9-0.9-0.9 --mask-update-decay-epoch 90-120`
    of 160 epochs): stages start at 90/160 = 0.5625 and 120/160 = 0.75 of
    training, mutation ratios 0.2, 0.1 and 0 (no mutation in the last
    stage). Its 95% block (`--lower-bound 0.96-0.955-0.95 --upper-bound
    0.95`) gives the same ratios. The reference updates every 5 epochs;
    keras_sparse keeps `update_interval` (default 100 steps) and
    `stop_step` (default 0.75, where the last stage begins) of `Updater`.

    Documented differences from the reference: MEST's soft memory bound
    ("EM&S", lower bound below the upper bound, exceeding the non-zero
    budget between updates) is not implemented; an entry that is dropped
    and re-drawn by growth in the same update keeps its value (the reference
    re-draws it at zero); the reference scripts leave lambda (`--sp-lmd`) at
    0, and its update runs at the start of an epoch, after
    `optimizer.zero_grad()`, so its gradient term is zero as written;
    keras_sparse uses the dense gradient of the update step's batch and
    keeps its default lambda 1.0 (pass `gradient_weight=0` for the
    reference's magnitude-only removal).

    Legacy (non-EM) variant: passing `drop_fraction` and/or
    `drop_fraction_decay` (configs saved before the elastic bounds existed)
    uses `Updater`'s generic schedule instead (defaults then 0.3 and
    `"stagewise"`: halved at 50% and 75% of the update span); it cannot be
    combined with the bounds.

    Args:
        gradient_weight: lambda in the removal score (default 1.0; >= 0).
        lower_bound: per-stage prune-to sparsities, non-increasing, each in
            [upper_bound, 1) (default `(0.92, 0.91, 0.9)`).
        upper_bound: grow-to sparsity in [0, 1) (default 0.9), one value or
            a list of equal values (the reference's `0.9-0.9-0.9`).
        stage_boundaries: where stages 2, 3, ... start, as fractions of
            training, strictly increasing in (0, 1); `len(lower_bound) - 1`
            entries (default `(0.5625, 0.75)`).
        drop_fraction, drop_fraction_decay: legacy variant, see above.
        **kwargs: other `Updater` arguments.

    Raises:
        TypeError, ValueError: invalid bounds or boundaries (at
            construction); an unknown training length (in `setup`, before
            any mask changes: the stages are fractions of training).

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.9, seed=0)
    >>> sparse.fit(x, y, epochs=160, callbacks=[keras_sparse.callbacks.MEST(seed=0)])

    Reference:
        Yuan et al., "MEST: Accurate and Fast Memory-Economic Sparse Training
        Framework on the Edge", NeurIPS 2021.
    """

    default_lower_bound = (0.92, 0.91, 0.9)
    default_upper_bound = 0.9
    default_stage_boundaries = (0.5625, 0.75)

    def __init__(self, gradient_weight: float = 1.0,
                 lower_bound: Sequence[float] | float | None = None,
                 upper_bound: Sequence[float] | float | None = None,
                 stage_boundaries: Sequence[float] | None = None,
                 drop_fraction: float | None = None, drop_fraction_decay: str | None = None,
                 **kwargs):
        gradient_weight = validate_real(gradient_weight, "gradient_weight")
        self.elastic = drop_fraction is None and drop_fraction_decay is None
        if not self.elastic:
            given = {k: v for k, v in (("lower_bound", lower_bound), ("upper_bound", upper_bound),
                                       ("stage_boundaries", stage_boundaries)) if v is not None}
            if given:
                raise ValueError(
                    "MEST takes either the elastic bounds (lower_bound, upper_bound, "
                    "stage_boundaries) or the legacy drop_fraction/drop_fraction_decay, "
                    f"not both. Received: drop_fraction={drop_fraction!r}, "
                    f"drop_fraction_decay={drop_fraction_decay!r} and {given!r}."
                )
            self.lower_bound = self.upper_bound = self.stage_boundaries = None
            self.mutation_ratios = None
            super().__init__(drop_fraction=0.3 if drop_fraction is None else drop_fraction,
                             drop_fraction_decay="stagewise" if drop_fraction_decay is None
                             else drop_fraction_decay, **kwargs)
        else:
            lower, upper, boundaries = _elastic_bounds(lower_bound, upper_bound, stage_boundaries)
            self.lower_bound, self.upper_bound, self.stage_boundaries = lower, upper, boundaries
            self.mutation_ratios = tuple(round((lo - upper) / (1.0 - upper), 12) for lo in lower)
            # No generic drop fraction: the stages are the schedule, over all of training.
            if kwargs.get("fraction_span") is None:
                kwargs["fraction_span"] = "training"
            super().__init__(drop_fraction=None, drop_fraction_decay=None, **kwargs)
        self.gradient_weight = float(gradient_weight)
        self.needs_gradients = self.gradient_weight > 0

    def default_fraction_schedule(self):
        """EM: the mutation ratio of each stage (`mutation_ratios`); legacy: as `Updater`."""
        if self.elastic:
            return schedules.PiecewiseConstant(self.mutation_ratios, self.stage_boundaries)
        return super().default_fraction_schedule()

    def check_run(self, total_steps):
        if self.elastic and total_steps is None:
            raise ValueError(
                "MEST's Elastic Mutation stages (`stage_boundaries`="
                f"{list(self.stage_boundaries)!r}) are fractions of training, but the "
                "total number of steps is unknown. Pass `total_steps` to the callback "
                "(or fit with a known number of steps)."
            )

    def start(self, ctx):
        if self.elastic:
            stop = ctx.bounds[1]
            late = [k for k, b in enumerate(self.stage_boundaries, 1)
                    if self.mutation_ratios[k] > 0 and b * ctx.total_steps > stop]
            if late:
                warnings.warn(
                    f"MEST: stage(s) {late} (mutation ratios "
                    f"{[self.mutation_ratios[k] for k in late]}) start after `stop_step` "
                    f"(step {stop}), so they never mutate the masks.", UserWarning, stacklevel=2)

    def drop_scores(self, ctx, index):
        weight = ctx.weights[index]
        if self.gradient_weight == 0:
            return np.abs(weight)
        return np.abs(weight) + self.gradient_weight * np.abs(ctx.grads[index])

    def get_config(self):
        def listed(v):
            return None if v is None else list(v)

        return {**super().get_config(), "gradient_weight": self.gradient_weight,
                "lower_bound": listed(self.lower_bound), "upper_bound": self.upper_bound,
                "stage_boundaries": listed(self.stage_boundaries)}


def _elastic_bounds(lower_bound, upper_bound, stage_boundaries):
    """Validated `(lower_bound, upper_bound, stage_boundaries)` of MEST's EM, defaults filled in."""
    accepted = "Accepted: 1 > lower_bound[0] >= lower_bound[1] >= ... >= upper_bound >= 0"
    lower = MEST.default_lower_bound if lower_bound is None else lower_bound
    if isinstance(lower, (int, float, np.integer, np.floating)) and not isinstance(lower, bool):
        lower = (lower,)
    if not isinstance(lower, (list, tuple, np.ndarray)) or len(lower) == 0:
        raise TypeError(
            "`lower_bound` must be a float or a non-empty list of floats in [0, 1) "
            f"(prune-to sparsity per stage). Received: {lower_bound!r}."
        )
    lower = tuple(mask_math.validate_sparsity(v, f"lower_bound[{i}]") for i, v in enumerate(lower))
    upper = MEST.default_upper_bound if upper_bound is None else upper_bound
    if isinstance(upper, (list, tuple, np.ndarray)):
        values = [mask_math.validate_sparsity(v, f"upper_bound[{i}]") for i, v in enumerate(upper)]
        if not values or any(v != values[0] for v in values):
            raise ValueError(
                "`upper_bound` (the grow-to sparsity) must be one value, or a list of "
                "equal values: a varying upper bound changes the non-zero budget "
                "(MEST's EM&S soft memory bound), which keras_sparse does not "
                f"implement. Received: {upper_bound!r}."
            )
        upper = values[0]
    else:
        upper = mask_math.validate_sparsity(upper, "upper_bound")
    below = [i for i, v in enumerate(lower) if v < upper]
    if below:
        raise ValueError(
            f"`lower_bound` {list(lower)!r} has entries below `upper_bound`={upper!r} "
            f"(stage(s) {below}): pruning to a sparsity below the grow-to sparsity is "
            "MEST's EM&S soft memory bound, which keras_sparse does not implement "
            f"(non-zeros are conserved). {accepted}."
        )
    if any(a < b for a, b in zip(lower, lower[1:])):
        raise ValueError(
            "`lower_bound` must not increase from stage to stage (the mutation "
            f"ratio decays towards `upper_bound`). Received: {list(lower)!r}. {accepted}."
        )
    if stage_boundaries is None:  # one stage needs none
        stage_boundaries = () if len(lower) == 1 else MEST.default_stage_boundaries
    boundaries = schedules.validate_boundaries(stage_boundaries, "stage_boundaries")
    if len(boundaries) != len(lower) - 1:
        raise ValueError(
            f"{len(lower)} stages (`lower_bound`={list(lower)!r}) need "
            f"{len(lower) - 1} `stage_boundaries` (fractions of training where stages "
            f"2, 3, ... start). Received: {list(boundaries)!r}."
        )
    return lower, upper, boundaries


@register("neurrev")
class NeurRev(RigL):
    """NeurRev: RigL plus Search & Awake of dormant neurons.

    Every update (Li et al. 2024, Algorithm 1): `delta = |theta - theta*|`
    (change since the previous update); prune-and-grow to the relaxed
    sparsity `s - p` (drop `f * n_active` by magnitude, grow `f * n_active +
    p * size` by gradient); then Search & Awake (Algorithm 2,
    `keras_sparse.masks.search_and_awake`) prunes `p * size` active negative
    weights in ascending `delta` order, back to sparsity `s`; finally
    `theta* = theta`.

    Defaults: RigL's schedule (every 100 steps, drop fraction 0.3 cosine,
    stop at 75%) so NeurRev differs from RigL only by Search & Awake, and,
    per weight, `p = min(r * (1 - s), s)` with `r = relax_ratio = 0.1`:
    10% of each layer's non-zero budget is relaxed and re-pruned at every
    update, whatever the update interval. The paper (Algorithm 1) takes `p`
    as a fixed input, independent of `Delta T_p`, in absolute units (the
    relaxed sparsity is `s - p`); the paper material available to this
    project (Algorithm 1/2 and Table 1) states no numeric value and no
    reference code is published, so `r = 0.1` is keras_sparse's choice,
    expressed per layer so that ERK's dense layers (s = 0) do not relax.
    Earlier versions scaled `r` by `min(1, update_interval / 50)`; that
    scaling is not in the paper and was tuned on the benchmark it was
    scored on, so it was removed (pass `p=` to choose another value).
    Search & Awake removes only *negative* weights and the regrown ones
    start at zero, so each update removes about `2 r` of a layer's active
    negative weights; with updates every few steps from the start of
    training (as in very short budgets) that can empty layers of negative
    weights, so prefer update intervals of tens of steps or more.
    Search & Awake ranks and prunes per weight (the paper's notation is
    over the whole model), and when a weight runs out of active negative
    entries it prunes the rest by magnitude (see
    `keras_sparse.masks.search_and_awake`).
    Logged as `awakened` (a statistic of the policy, `LayerResult.stats`,
    summed over weights by the callback): weights pruned by Search & Awake
    that were negative. `delta` is computed once per update (`prepare`) and
    theta* is persistent state (`fresh_state`, `LayerResult.state`).

    Args:
        p: relaxation as a fraction of each weight's size (absolute, the
            paper's units), capped per weight at that weight's sparsity (a
            dense weight cannot relax); or None for the default above. The
            model's sparsity `s - p` must be >= 0.
        **kwargs: `Updater` arguments.

    Raises:
        ValueError: `p` outside (0, 1), or `s - p < 0` for some weight (at
            `on_train_begin`, before any mask changes).

    Reference:
        Li et al., "NeurRev: Train Better Sparse Neural Network Practically
        via Neuron Revitalization", ICLR 2024.
    """

    # Default p (p=None): this share of each weight's non-zero budget per
    # update, independent of the update interval (see the class docstring).
    relax_ratio = 0.1

    def __init__(self, p: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.p = None if p is None else validate_fraction(p, "p")
        self._relax: list[int] = []

    def get_config(self):
        return {**super().get_config(), "p": self.p}

    def default_ratio(self) -> float:
        """`r` of the default `p = min(r * (1 - s), s)`: share of the non-zero budget per update."""
        return float(self.relax_ratio)

    @property
    def _reference(self) -> list[np.ndarray]:
        """theta*, per weight: the weights at the previous update (persistent state)."""
        return self.state_of("reference")

    def fresh_state(self, ctx):
        # theta* survives save/load: a resumed run measures delta against the
        # weights of the last update, as an uninterrupted one does.
        return [{"reference": w.copy()} for w in ctx.weights]

    def start(self, ctx):
        relax = []
        masks = ctx.masks
        total = sum(m.size for m in masks)
        s_global = 1.0 - sum(float(m.sum()) for m in masks) / total
        if self.p is not None and s_global - self.p < -1e-9:
            raise ValueError(
                f"NeurRev's relaxed sparsity s - p must be >= 0, but the model's "
                f"sparsity is s={s_global:.4f} and p={self.p}. Accepted: "
                f"0 < p <= {s_global:.4f} (or p=None for the default, "
                f"{self.default_ratio():g} * (1 - s) per weight)."
            )
        for mask, structure in zip(masks, ctx.structures):
            s = 1.0 - float(mask.mean())
            # A weight cannot relax below sparsity 0 (ERK leaves some dense).
            p = min(self.default_ratio() * (1.0 - s) if self.p is None else self.p, s)
            n = int(round(p * mask.size)) // structure.unit * structure.unit
            # The relaxed mask must fit the structure (2:4 caps density at 0.5).
            cap = mask_math.capacity(mask, structure)
            relax.append(min(n, cap))
        self._relax = relax

    def prepare(self, ctx):
        return {"delta": [np.abs(w - s["reference"]) for w, s in zip(ctx.weights, ctx.state)]}

    def counts(self, ctx):
        base = super().counts(ctx)
        out = []
        for (n_drop, n_grow), m, relax, structure in zip(base, ctx.masks, self._relax, ctx.structures):
            free = mask_math.capacity(m, structure)
            out.append((n_drop, min(n_grow + relax, free + n_drop)))
        return out

    def finish(self, ctx, index, weight, mask, grown):
        # Back from the relaxed sparsity s - p to s: as many active as before.
        n_prune = int(mask.sum()) - int(np.count_nonzero(ctx.masks[index]))
        new_mask, pruned, negative = mask_math.search_and_awake(
            mask, weight, ctx.scratch["delta"][index], n_prune, ctx.structures[index]
        )
        weight = weight * new_mask
        return LayerResult(weight, new_mask, stats={"awakened": float(negative)},
                           state={"reference": weight.copy()})


@register("dsr")
class DSR(Updater):
    """Dynamic Sparse Reparameterization: adaptive global threshold, reallocation.

    Every update: prune every active weight with `|w| < H` (one global
    threshold for all layers); if the number pruned `K` is below
    `(1 - tolerance) * target` double `H`, above `(1 + tolerance) * target`
    halve it (`target = drop_fraction * n_active`, the paper's N_p); regrow
    `K` weights at random, allocated across layers in proportion to each
    layer's surviving non-zeros. The *total* number of non-zeros is
    conserved exactly; per-layer counts move by design (reallocation).

    Args:
        initial_threshold: H at the first update (paper: 0.001).
        tolerance: delta in the threshold rule (paper: 0.1).
        drop_fraction: target fraction pruned per update (default 0.3),
            constant by default.
        **kwargs: `Updater` arguments.

    Reference:
        Mostafa and Wang, "Parameter Efficient Training of Deep Convolutional
        Neural Networks by Dynamic Sparse Reparameterization", ICML 2019.
    """

    def __init__(self, initial_threshold: float = 1e-3, tolerance: float = 0.1,
                 drop_fraction: float = 0.3, drop_fraction_decay: str = "constant", **kwargs):
        initial_threshold = validate_real(initial_threshold, "initial_threshold", inclusive=False)
        super().__init__(drop_fraction=drop_fraction, drop_fraction_decay=drop_fraction_decay, **kwargs)
        self.initial_threshold = float(initial_threshold)
        self.tolerance = validate_fraction(tolerance, "tolerance")

    def get_config(self):
        return {**super().get_config(), "initial_threshold": self.initial_threshold,
                "tolerance": self.tolerance}

    @property
    def threshold(self) -> float:
        """H: the current global threshold (persistent state; `initial_threshold` before `setup`)."""
        state = self.engine.policy_state
        return float(state[0]["threshold"]) if state else self.initial_threshold

    def fresh_state(self, ctx):
        # H adapts at every update; a resumed run continues from the saved H.
        return [{"threshold": np.float64(self.initial_threshold)} for _ in ctx.targets]

    def prepare(self, ctx):
        """Drops below H per weight, and H for the next update (the paper's rule)."""
        threshold = float(ctx.state[0]["threshold"])
        drops = []
        for w, m, structure in zip(ctx.weights, ctx.masks, ctx.structures):
            unit = structure.unit
            mag, am = np.abs(w), m
            if structure.kind == "block":
                mag, am = mask_math.to_blocks(mag, block_size=unit), mask_math.to_blocks(m, "max", unit)
            n = int(((am > 0) & (mag < threshold)).sum()) * unit
            drops.append(min(n, int(m.sum()) - unit))  # never empty a layer
        drops = [max(0, d) for d in drops]
        total = sum(drops)
        target = ctx.drop_fraction * sum(float(m.sum()) for m in ctx.masks)
        if total < (1 - self.tolerance) * target:
            threshold *= 2.0
        elif total > (1 + self.tolerance) * target:
            threshold /= 2.0
        return {"drops": drops, "threshold": np.float64(threshold)}

    def counts(self, ctx):
        drops, masks = ctx.scratch["drops"], ctx.masks
        total = sum(drops)
        survivors = np.array([float(m.sum()) - d for m, d in zip(masks, drops)])
        room = np.array([mask_math.capacity(m, st) + d for m, d, st in zip(masks, drops, ctx.structures)], float)
        grows = _proportional_in_units(total, survivors, room, [st.unit for st in ctx.structures])
        return list(zip(drops, [int(g) for g in grows]))

    def finish(self, ctx, index, weight, mask, grown):
        return LayerResult(weight, mask, state={"threshold": ctx.scratch["threshold"]})


def _proportional(n: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Splits integer `n` proportionally to `weights` under per-entry caps (largest remainder)."""
    out = np.zeros(len(weights), dtype=np.int64)
    left = int(n)
    open_ = caps > 0
    while left > 0 and open_.any():
        w = np.where(open_, weights + 1e-12, 0.0)
        share = w / w.sum() * left
        base = np.minimum(np.floor(share).astype(np.int64), (caps - out).astype(np.int64))
        rem = left - int(base.sum())
        out += base
        if rem > 0:
            frac = np.where(open_ & (out < caps), share - np.floor(share), -1.0)
            for j in np.argsort(-frac, kind="stable")[:rem]:
                if frac[j] >= 0 and out[j] < caps[j]:
                    out[j] += 1
        left = int(n) - int(out.sum())
        open_ = out < caps
        if base.sum() == 0 and rem == left:  # no progress possible
            break
    return out


def _proportional_in_units(total: int, weights: np.ndarray, caps: np.ndarray, units) -> np.ndarray:
    """`_proportional` in entries, where weight `j` takes multiples of `units[j]`.

    With one unit size this is `_proportional` over units. With mixed sizes
    (1x16 blocks next to layers that fell back to unstructured) the split
    in entries is rounded down per weight and the rest goes greedily to the
    smallest units first; what no weight can take (less than a block) is
    not grown.
    """
    units = np.asarray(units, np.int64)
    caps = np.asarray(caps, np.int64)
    if units.size == 0 or np.all(units == units[0]):
        u = int(units[0]) if units.size else 1
        return _proportional(int(total) // u, weights, caps // u) * u
    out = _proportional(int(total), weights, caps) // units * units
    left = int(total) - int(out.sum())
    for j in sorted(range(len(units)), key=lambda j: (units[j], -weights[j])):
        add = min(left, int(caps[j] - out[j])) // int(units[j]) * int(units[j])
        out[j] += add
        left -= add
    return out


@register("deep_r")
class DeepR(SET):
    """Deep-R (zero-temperature variant): rewire connections whose sign flipped.

    In Deep-R each connection has a fixed sign; it turns dormant when its
    parameter crosses zero, and as many dormant connections are activated at
    random, conserving the count. As in the paper, every entry keeps one
    fixed sign, dormant ones included: an active entry's is its initial sign,
    an entry that starts at zero draws one at random (seeded), and a
    connection grown at zero that moves against its sign is dormant again
    at the next update. keras_sparse checks sign flips at each
    update (every `update_interval` steps, default 100) rather than every
    step, grows at random with zero init, and leaves Deep-R's L1 term to the
    layer's `kernel_regularizer`.
    With `temperature > 0` it adds the soft-Deep-R Langevin noise
    `sqrt(2 * lr * T * interval) * N(0, 1)` to active weights at updates (an
    approximation of per-step noise). Documented simplification of
    soft-DEEP-R; `drop_fraction` is unused. A flipped connection that the
    random growth of the same update draws again stays active with its
    (flipped) value, as for any connection dropped and re-drawn in one
    update (RigL's convention, `Updater`); Deep-R would restart it at zero.
    With `n` flips in a layer of `size` entries at sparsity `s`, that is
    about `n / (s * size)` of the flips. The flips and the learning rate
    are read once per update (`prepare`; an update without an optimizer
    adds no noise); the signs are persistent state.

    Args:
        temperature: T (default 0: no noise).
        **kwargs: `Updater` schedule/structure/seed arguments.

    Reference:
        Bellec et al., "Deep Rewiring: Training very sparse deep networks",
        ICLR 2018.
    """

    def __init__(self, temperature: float = 0.0, **kwargs):
        temperature = validate_real(temperature, "temperature")
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}

    @property
    def _signs(self) -> list[np.ndarray]:
        """Per weight, every entry's fixed sign (+1 or -1; persistent state)."""
        return self.state_of("signs")

    def fresh_state(self, ctx):
        # The fixed signs (saved: a resumed run checks flips against them,
        # not against the weights at resume). Entries at zero draw theirs.
        out = []
        for index, w in enumerate(ctx.weights):
            drawn = mask_math.seed_for(self.seed, 0, index, 2).integers(0, 2, w.shape) * 2 - 1
            out.append({"signs": np.where(w != 0, np.sign(w), drawn).astype(np.int8)})
        return out

    def prepare(self, ctx):
        """The flipped connections per weight, and the learning rate for the noise."""
        flipped = [(m > 0) & (s["signs"] != 0) & (np.sign(w) == -s["signs"])
                   for w, m, s in zip(ctx.weights, ctx.masks, ctx.state)]
        learning_rate = 0.0  # no optimizer: unknown, no noise
        if ctx.optimizer is not None and self.temperature > 0:
            lr = getattr(ctx.optimizer, "learning_rate", 0.0)
            learning_rate = float(keras.ops.convert_to_numpy(lr))
        return {"flipped": flipped, "learning_rate": learning_rate}

    def counts(self, ctx):
        out = []
        for flipped, structure in zip(ctx.scratch["flipped"], ctx.structures):
            n = mask_math.unit_entries(flipped, structure)
            out.append((n, n))
        return out

    def drop_scores(self, ctx, index):
        # Flipped connections first (score -1), then by magnitude.
        return np.where(ctx.scratch["flipped"][index], -1.0, np.abs(ctx.weights[index]))

    def finish(self, ctx, index, weight, mask, grown):
        learning_rate = ctx.scratch["learning_rate"]
        if self.temperature > 0 and learning_rate > 0:
            rng = mask_math.seed_for(self.seed, ctx.step, index, 1)
            sigma = np.sqrt(2.0 * learning_rate * self.temperature * self.update_interval)
            weight = weight + sigma * rng.standard_normal(weight.shape) * mask * (1 - grown)
        # Signs stay fixed; only a flipped connection re-drawn in this
        # update (still active, see above) takes its new sign.
        signs = np.where(weight != 0, np.sign(weight), ctx.state[index]["signs"])
        return LayerResult(weight, mask, state={"signs": signs.astype(np.int8)})
