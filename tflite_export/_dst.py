"""On-device dynamic sparse training: the mask update inside `train`.

`export_trainable(..., algorithm=...)` turns each masked trained kernel's
mask into a float32 variable (1.0 kept, 0.0 pruned), or, for kernels stored
compactly (`weight_storage="sparse"`), its `[nnz, 1]` int32 flat indices
into a variable (same length: the count is conserved; re-derived in
ascending order from the new mask at every update, with the values and
slots gathered at the new positions). After the optimizer
step, the `train` signature counts the step and, at the algorithm's update
steps, runs SET's, RigL's, NeurRev's or MEST's update with builtin ops only
(TOPK_V2, SCATTER_ND, SELECT_V2, FLOOR_DIV/FLOOR_MOD, GATHER, IF), exactly
as `keras_sparse.algorithms.Updater.update` does in Keras:

- Schedule: an update happens after the optimizer step that brings the
  device step to `t` when `t % update_interval == 0` and
  `start < t <= stop` (`keras_sparse.schedules.UpdateSchedule`, with
  fractional start/stop resolved against `total_steps` at export).
- Count: each kernel drops `round(drop_fraction(t) * n_active)` active
  entries (Python's `round`, the same decay object as Keras). The per-kernel
  active count is conserved, so the counts of every update are computed at
  export into one int32 table per kernel (`drop_counts`), indexed on the
  device by the update number. The top-k runs with a static
  `k = max(table)` and keeps the first `n` (an `arange < n` selection), so
  no tensor has a dynamic shape.
- Drop: the `n` active entries with the lowest `|w|` of the weights after
  the optimizer step (what Keras' callback reads at `on_train_batch_end`).
- Grow: the `n` highest-scored entries that are inactive after the drop
  (an entry dropped in this update may be grown again; it then keeps its
  value and optimizer slots, as in Keras and RigL's reference code). RigL
  scores by `|dL/dw|`, the dense gradient of this step's batch at the
  weights before the optimizer step (what Keras' gradient capture records
  in `optimizer.apply` at the update step). SET scores by a hash of
  `(seed, step, kernel index, flat index)` computed with int64
  MUL/ADD/FLOOR_MOD (`set_scores`): TensorFlow's stateless random ops have
  no builtin lowering.
- New entries (grown and inactive before the update) start at 0.0 and
  their optimizer slots are reset to 0; the number of new entries over all
  kernels is the `regrown` output of `train`.
- MEST (`keras_sparse.algorithms.MEST`): drop scores `|w| + lambda |g|`
  (the same gradient as RigL's), random growth (SET's hash), and the
  mutation ratio of `MEST`'s fraction schedule (Elastic Mutation stages
  over all of training, `fraction_span="training"`, so `total_steps` is
  needed; or the legacy
  `drop_fraction` schedule).
- NeurRev (`keras_sparse.algorithms.NeurRev`): each kernel keeps its
  reference weights theta* in a variable (the exported weights, then the
  weights after each update). It grows `relaxation` more entries than it
  drops (`p * size`, capped as in `NeurRev.counts`; also precomputed per
  update), then Search & Awake prunes as many back: among the active
  negative weights, the smallest `|w - theta*|` (the change since the
  previous update) first; if too few are negative, the rest by smallest
  `|w|` (`keras_sparse.masks.search_and_awake`). New entries pruned again
  by Search & Awake are not counted as regrown; `awakened` counts the
  negative entries it pruned. theta* becomes the weights after the update.
- Ties of the top-k go to the lowest flat index, as in
  `keras_sparse.masks.prune_and_grow` (TensorFlow's and TFLite's TOPK_V2).

Deviations from the Keras side (documented in docs/on_device.md):
- SET's and MEST's random grow scores come from the integer hash, not
  NumPy's generator: same distribution (uniform over the eligible
  entries), other draws, so their masks differ from the Keras callback's.
- No check for NaN/Inf: Keras skips an update with non-finite weights or
  gradients (`on_nonfinite`); the device runs it (NaN scores rank last in
  neither TOPK, so the chosen entries are unspecified).
- The device step starts at 0 at export: the schedule counts the device's
  own steps, not the Keras optimizer's iterations before export.
- No ITOP set / churn statistics on the device.
- Only `structure="unstructured"`.
- Scores are computed by TFLite kernels, equal to Keras' up to float32
  rounding: near-ties (closer than that rounding) may rank differently.
- The slots of dropped entries are zeroed as well (Keras keeps them). They
  never reach a weight (pruned entries take no update, and a regrown
  entry's slots are reset), so weights and masks are unchanged by this; it
  keeps "pruned entries hold zero slots" true, which `set_state` relies on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

# Algorithms whose update the device graph reproduces, by registry name.
ON_DEVICE = ("mest", "neurrev", "rigl", "set")

_M = 2147483647  # 2**31 - 1, a prime: hash values fit int32, products int64


@dataclasses.dataclass
class DSTPlan:
    """The resolved schedule of an on-device algorithm.

    Attributes:
        kind: `"set"`, `"rigl"`, `"neurrev"` or `"mest"`.
        interval: steps between updates.
        start: updates happen at steps `t > start`.
        stop: and `t <= stop`.
        seed: the algorithm's seed (SET's hash).
        fractions: drop fraction of each update, in update order (update
            `j` is at step `(start // interval + 1 + j) * interval`).
        p: NeurRev's relaxation (None: `relax_ratio * (1 - s)` per kernel).
        relax_ratio: NeurRev's default share of the non-zero budget.
        gradient_weight: MEST's lambda (drop score `|w| + lambda |g|`).
    """

    kind: str
    interval: int
    start: int
    stop: int
    seed: int
    fractions: list[float]
    p: float | None = None
    relax_ratio: float = 0.1
    gradient_weight: float = 0.0

    @property
    def first(self) -> int:
        """`start // interval`: update number `j` is at step `(first + 1 + j) * interval`."""
        return self.start // self.interval


def plan(algorithm, total_steps) -> DSTPlan:
    """Validates `algorithm` for the device and resolves its schedule.

    Args:
        algorithm: what `keras_sparse.algorithms.get` takes.
        total_steps: planned device steps, needed for fractional start/stop.

    Returns:
        A `DSTPlan`.

    Raises:
        ValueError: unknown name, an algorithm the device cannot run, a
            structure other than unstructured, a fractional start/stop
            without `total_steps`, or an invalid `total_steps`.
        TypeError: an identifier of the wrong type.
    """
    from keras_sparse import algorithms

    try:
        algo = algorithms.get(algorithm)
    except ValueError as e:
        raise ValueError(
            f"export_trainable(algorithm=...): {e} On device: {list(ON_DEVICE)}."
        ) from None
    # Exact classes: a subclass (RigLITOP, NeurRev, ...) changes counts,
    # scores or state in ways the device graph does not reproduce.
    kind = {algorithms.SET: "set", algorithms.RigL: "rigl",
            algorithms.NeurRev: "neurrev",
            algorithms.MEST: "mest"}.get(type(algo))
    if kind is None:
        raise ValueError(
            f"export_trainable(algorithm=...): {type(algo).__name__} "
            f"({getattr(algo, 'registered_name', '?')!r}) cannot run on the "
            f"device. Received: {algo!r}. Accepted on device: "
            f"{list(ON_DEVICE)} (names, config dicts or instances).")
    if algo.structure != "unstructured":
        raise ValueError(
            "export_trainable(algorithm=...): only structure='unstructured' "
            f"runs on the device. Received: structure={algo.structure!r}.")
    if total_steps is not None and (
            isinstance(total_steps, bool)
            or not isinstance(total_steps, (int, np.integer)) or total_steps < 1):
        raise ValueError(
            "export_trainable: `total_steps` must be an int >= 1 (planned "
            f"device train steps) or None. Received: {total_steps!r}.")
    fractional = [n for n in ("start_step", "stop_step")
                  if isinstance(getattr(algo, n), float)]
    if kind == "mest" and algo.elastic:
        fractional.append("stage_boundaries")
    if fractional and total_steps is None:
        raise ValueError(
            f"export_trainable: {type(algo).__name__} has fractional "
            + ", ".join(f"{n}={getattr(algo, n)!r}" for n in fractional)
            + " (fractions of training), but total_steps=None. Pass "
            "`total_steps=` (the planned number of device train steps) or "
            "int start/stop steps.")
    start, stop = algo.schedule.bounds(
        None if total_steps is None else int(total_steps))
    interval = algo.update_interval
    n_updates = max(0, stop // interval - start // interval)
    steps = [(start // interval + 1 + j) * interval for j in range(n_updates)]
    if kind == "mest" and algo.elastic:
        # MEST's Elastic Mutation stages are fractions of all of training
        # (`MEST`'s fraction schedule, `fraction_span="training"`).
        fractions = [float(algo.fraction_schedule(t, 0, int(total_steps)))
                     for t in steps]
    else:
        fractions = [float(algo.fraction_schedule(t, start, stop))
                     for t in steps]
    if kind == "mest":
        return DSTPlan(kind, interval, start, stop, algo.seed, fractions,
                       gradient_weight=algo.gradient_weight)
    if kind == "neurrev":
        return DSTPlan(kind, interval, start, stop, algo.seed, fractions,
                       algo.p, algo.default_ratio())
    return DSTPlan(kind, interval, start, stop, algo.seed, fractions)


def relaxation(p: DSTPlan, mask: np.ndarray) -> int:
    """NeurRev's extra growth `round(p * size)` of a kernel (as `NeurRev.start`)."""
    s = 1.0 - float(mask.mean())
    frac = min(p.relax_ratio * (1.0 - s) if p.p is None else p.p, s)
    n = round(frac * mask.size)
    return min(n, mask.size - int(mask.sum()))


def check_relaxation(p: DSTPlan, masks: list[np.ndarray]) -> None:
    """NeurRev's `s - p >= 0` over the masked kernels (as `NeurRev.start`).

    Raises:
        ValueError: `p` above the sparsity of the masked kernels.
    """
    if p.kind != "neurrev" or p.p is None or not masks:
        return
    from keras_sparse.model_view import sparsity_counts

    s = sparsity_counts(masks).sparsity
    if s - p.p < -1e-9:
        raise ValueError(
            f"NeurRev's relaxed sparsity s - p must be >= 0, but the masked "
            f"kernels' sparsity is s={s:.4f} and p={p.p}. Accepted: "
            f"0 < p <= {s:.4f} (or p=None).")


def counts(p: DSTPlan, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(n_drop, n_grow)` tables (int32, one entry per update) of a kernel.

    SET/RigL grow what they drop; NeurRev grows `relaxation` more (capped
    by the free entries, as `NeurRev.counts`) and Search & Awake prunes
    `n_grow - n_drop` back.
    """
    drop = drop_counts(p, int(mask.sum()))
    if p.kind != "neurrev":
        return drop, drop
    free = mask.size - int(mask.sum())
    grow = np.minimum(drop + relaxation(p, mask), free + drop)
    return drop, grow.astype(np.int32)


def drop_counts(p: DSTPlan, n_active: int) -> np.ndarray:
    """Entries dropped (and grown) at each update by a kernel with `n_active` kept entries.

    `round(fraction * n_active)` as `Policy.counts` (Python's round), one
    int32 per update (at least one entry, 0, when there is no update).
    """
    n = [round(f * float(n_active)) for f in p.fractions]
    return np.asarray(n or [0], np.int32)


# ------------------------------------------------------------------ SET hash

def _base(seed: int, kernel: int) -> int:
    return (int(seed) % _M * 1000003 + (kernel + 1) * 104729 + 12345) % _M


def _mix(x, a, kernel: int):
    """The integer hash of SET's grow scores, for NumPy int64 arrays and
    int64 tensors alike (the device graph's MUL/ADD/FLOOR_MOD ops)."""
    x = (x + a) % _M
    x = (x * 48271) % _M
    x = (x * x + a) % _M
    x = (x * 16807 + (kernel + 1)) % _M
    x = (x * x + 7) % _M
    return (x * 48271) % _M


def set_scores(seed: int, step: tf.Tensor, kernel: int, size: int,
               dynamic_zero: tf.Tensor) -> tf.Tensor:
    """SET's grow scores on the device (int64 MUL/ADD/FLOOR_MOD only).

    `dynamic_zero` (an int32 0 computed from a variable) keeps the converter
    from folding the `[size]` index range into a constant of the file.
    """
    a = (tf.constant(_base(seed, kernel), tf.int64)
         + tf.cast(step, tf.int64) * 7919) % _M
    idx = tf.range(size + dynamic_zero, dtype=tf.int32)
    return tf.cast(_mix(tf.cast(idx, tf.int64), a, kernel), tf.int32)


# ------------------------------------------------------------ prune and grow

def _select(scores: tf.Tensor, k: int, n: tf.Tensor, size: int) -> tf.Tensor:
    """float32 `[size]`: 1.0 at the `n` (<= k) highest `scores`, ties to the lowest index."""
    _, idx = tf.math.top_k(scores, k=k, sorted=True)
    take = tf.cast(tf.range(k) < n, tf.float32)
    return tf.scatter_nd(tf.expand_dims(idx, 1), take, [size])


def prune_and_grow(mask: tf.Tensor, keep: tf.Tensor, grow: tf.Tensor,
                   n: tf.Tensor, k: int, n_grow: tf.Tensor | None = None,
                   k_grow: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """One kernel's update on flat tensors.

    Args:
        mask: float32 `[size]` 0/1, before the update.
        keep: float32 `[size]` drop scores, higher keeps: `|w|` of the
            weights after the optimizer step (MEST: `|w| + lambda |g|`).
        grow: `[size]` grow scores (float32 `|grad|` or int32 hash), higher
            first.
        n: int32 scalar, entries to drop (and grow, unless `n_grow`; <= k).
        k: static int, the largest `n` of the schedule (>= 1).
        n_grow, k_grow: entries to grow and their static bound, when they
            differ from `n`, `k` (NeurRev).

    Returns:
        `(new_mask, new_entries)`: float32 `[size]` 0/1; `new_entries` marks
        grown entries that were inactive before the update.
    """
    size = int(mask.shape[0])
    neg_inf = tf.constant(-np.inf, tf.float32)
    kept = mask
    if k > 0:
        drop = _select(tf.where(mask > 0.0, -keep, neg_inf), k, n, size)
        kept = mask * (1.0 - drop)
    if grow.dtype == tf.int32:
        scores = tf.where(kept > 0.0, tf.constant(-1, tf.int32), grow)
    else:
        scores = tf.where(kept > 0.0, neg_inf, grow)
    grown = _select(scores, k if k_grow is None else k_grow,
                    n if n_grow is None else n_grow, size)
    return kept + grown, grown * (1.0 - mask)


def search_and_awake(mask: tf.Tensor, weight: tf.Tensor, delta: tf.Tensor,
                     n: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """NeurRev's Search & Awake on flat tensors (`keras_sparse.masks.search_and_awake`).

    Prunes the `n` (<= k) active negative entries with the smallest
    `delta`; if fewer are negative, the rest by the smallest `|weight|`
    among the remaining active entries. Ties to the lowest index.

    Returns:
        `(new_mask, awakened)`: float32 `[size]` and the number of negative
        entries pruned (float32 scalar).
    """
    size = int(mask.shape[0])
    neg_inf = tf.constant(-np.inf, tf.float32)
    scores = tf.where(tf.logical_and(mask > 0.0, weight < 0.0), -delta,
                      neg_inf)
    values, idx = tf.math.top_k(scores, k=k, sorted=True)
    take = tf.cast(tf.logical_and(tf.range(k) < n, values > neg_inf),
                   tf.float32)
    chosen = tf.scatter_nd(tf.expand_dims(idx, 1), take, [size])
    awakened = tf.reduce_sum(take)
    left = mask * (1.0 - chosen)
    rest = n - tf.cast(awakened, tf.int32)
    by_magnitude = _select(tf.where(left > 0.0, -tf.abs(weight), neg_inf), k,
                           rest, size)
    return left * (1.0 - by_magnitude), awakened
