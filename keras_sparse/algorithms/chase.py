"""Chase: unstructured dynamic sparse training that learns channel-level sparsity."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np

from keras_sparse import channels as channel_graph
from keras_sparse import masks as mask_math
from keras_sparse import schedules
from keras_sparse.algorithms.base import LayerResult, Target, register
from keras_sparse.algorithms.dst import RigL
from keras_sparse.schedules import validate_fraction

__all__ = ["Chase"]


@register("chase")
class Chase(RigL):
    """Chase: RigL plus gradual removal of the channels with the lowest UMM.

    At every update (every `update_interval` steps in `[start_step,
    stop_step]`), Chase first runs RigL's per-weight prune-and-grow (drop
    by magnitude, grow by dense-gradient magnitude, non-zeros of each weight
    conserved). It then removes whole channels until the fraction of
    removed channels reaches `CubicSparsity(0, channel_sparsity)` of the
    update span (Zhu and Gupta's cubic schedule, reaching
    `channel_sparsity` at the last update):

    1. Every live channel of every eligible layer is scored by its
       *unmasked mean magnitude* (UMM): the sum of `|w|` over the channel's
       output slice of the kernel, masked entries counting as 0, divided by
       the slice's full size (so a channel scores low when it has few active
       weights, small ones, or both).
    2. The channels with the lowest UMM over the whole model go (one global
       ranking, ties by layer order then channel index), but each layer keeps
       at least `max(1, floor(n * (1 - channel_sparsity) *
       min_channel_ratio))` of its `n` channels.
    3. A removed channel's output slice of the kernel, the input slice of
       every layer consuming it (through BN, activations, pooling, Flatten)
       and its depthwise slice (a `DepthwiseConv` passes channel `c` on as
       `c * multiplier + j`) are masked and zeroed, and *never grow again*.
    4. The active weights freed this way are regrown at once across the
       whole model (global reallocation), at the inactive, allowed entries
       with the largest dense-gradient magnitude (new weights start at zero,
       optimizer moments reset). The model's total non-zero count is
       therefore conserved exactly at every update, while per-layer counts
       move.

    The result trains as an unstructured sparse model whose removed
    channels are exactly zero in and out, so
    `keras_sparse.strip(model, remove_channels=True)` returns a physically
    narrower model with the same outputs.

    Eligible layers (`keras_sparse.channels`): a `Dense` or channels-last
    `Conv*` whose output channels have a single producer (no residual `Add`
    merges them), reach no model output and no layer that mixes channels
    (`Concatenate`, `Reshape`, ...), and whose consumers and depthwise
    pass-throughs are all masked (`SparseWrapper`) layers. As in the
    reference code, which splits only the layers listed in its models'
    `layer2split` (the inner convolutions of residual blocks, not those
    feeding the `Add`) and never the classifier, other layers keep all
    their channels.

    Chase needs the model's graph: `keras_sparse.callbacks.Chase` and
    `DynamicSparseTraining` bind it at `on_train_begin`; in a custom loop
    call `bind_model(model)` before `setup`. Without a graph, or with no
    eligible layer, it warns and runs as RigL.

    Reference code (luuyin/chase, `Cifar/sparselearning/core_dst_chase.py`):
    `del_layer`/`prune_score` rank channels by `torch.abs(filter).mean()`
    over the whole filter (`--mag_wise`, the UMM; `--mask_wise` would
    average only active entries) with a global threshold and the per-layer
    floor `minimum_layer = out_channels * (1 - start_layer_rate) *
    minumum_ratio`; `gradual_pruning_rate` is the cubic channel schedule;
    `update_filter_mask`/`apply_mask` mask both the filter and the next
    layer's input slice (`passive_names`); `global_magnitude_death` and
    `global_gradient_growth` keep the total at `baseline_nonzero`. Defaults
    follow `Cifar/scripts/ResNet50.sh` (`--start_layer_rate 0.5
    --minumum_ratio 0.5`). Documented differences: the reference removes
    channels every `layer_interval` steps half an interval apart from its
    weight updates (which are global magnitude/gradient, `--death-rate
    0.05`, every 1000 steps) and refills the freed budget at the next
    weight update; keras_sparse removes channels at its DST updates and
    refills them in the same update, so the non-zero count never dips, and
    keeps RigL's per-weight prune-and-grow and schedule (see `RigL`) so
    Chase differs from RigL only by channel removal. The reference's
    channel schedule ends at `--stop_gmp_epochs` (130 of 160 epochs); here
    it ends at the last update before `stop_step`. In depthwise-separable
    blocks the reference also ranks depthwise filters as channels of their
    own (`Cifar/models/mobile_net.py` lists them in `layer2split`); here a
    depthwise channel goes with the channel that feeds it, ranked by that
    producer's UMM, so the producer, the depthwise slice and the next
    layer's input slices leave together and the model shrinks physically.
    Residual groups (several producers joined by an `Add`) are not ranked,
    as in the reference; `keras_sparse.strip(remove_channels=True)` still
    removes such a channel if it ends up masked in every branch.

    Args:
        channel_sparsity: final fraction of the eligible channels removed,
            in [0, 1) (0: plain RigL). Default 0.5.
        min_channel_ratio: per-layer floor factor in [0, 1] (see step 2).
            Default 0.5.
        **kwargs: `Updater` arguments (`update_interval`, `start_step`,
            `stop_step`, `drop_fraction`, `drop_fraction_decay`, `seed`,
            `on_nonfinite`); `structure` must be `"unstructured"`.

    Raises:
        TypeError, ValueError: invalid arguments (at construction), or what
            `RigL.setup` rejects (before any mask changes).

    Example:

    >>> sparse = keras_sparse.sparsify(model, 0.9, seed=0)
    >>> sparse.fit(x, y, epochs=10, callbacks=[
    ...     keras_sparse.callbacks.Chase(channel_sparsity=0.5)])
    >>> small = keras_sparse.strip(sparse, remove_channels=True)

    Reference:
        Yin et al., "Dynamic Sparsity Is Channel-Level Sparsity Learner",
        NeurIPS 2023 (arXiv 2305.19454); code: github.com/luuyin/chase.
    """

    # Channel removal and UMM act on unstructured masks.
    structures = ("unstructured",)

    def __init__(self, channel_sparsity: float = 0.5, min_channel_ratio: float = 0.5, **kwargs):
        self.channel_sparsity = mask_math.validate_sparsity(channel_sparsity, "channel_sparsity")
        self.min_channel_ratio = validate_fraction(
            min_channel_ratio, "min_channel_ratio", low_open=False, high_open=False)
        super().__init__(**kwargs)
        self.channel_schedule = schedules.CubicSparsity(0.0, self.channel_sparsity)
        self._graph = None
        self._units: list[dict] = []
        self.channel_stats: dict[str, float] = {}

    def get_config(self) -> dict:
        return {**super().get_config(), "channel_sparsity": self.channel_sparsity,
                "min_channel_ratio": self.min_channel_ratio}

    # ------------------------------------------------------------ model
    def bind_model(self, model: keras.Model) -> None:
        """Reads the channel structure of `model` (call before `setup`).

        Raises:
            TypeError, ValueError: not a Sequential/Functional model, or a
                shared layer (see `keras_sparse.channels.analyze`).
        """
        self._graph = channel_graph.analyze(model)

    def _eligible_units(self, targets: Sequence[Target]) -> list[dict]:
        index = {t.key: i for i, t in enumerate(targets)}
        units = []
        for gid in sorted(self._graph.groups):
            g = self._graph.groups[gid]
            if g.locked is not None or len(g.producers) != 1 or g.size < 2:
                continue
            producer = g.producers[0]
            keys = [f"{producer.name}/kernel"] + [f"{u.layer.name}/kernel" for u in g.uses]
            if any(k not in index for k in keys):
                continue
            slices = [(index[keys[0]], -1, [np.array([c]) for c in range(g.size)])]
            for key, use in zip(keys[1:], g.uses):
                slices.append((index[key], -2, [np.flatnonzero(use.channel_map == c)
                                                 for c in range(g.size)]))
            floor = max(1, int(g.size * (1.0 - self.channel_sparsity) * self.min_channel_ratio))
            units.append({"layer": producer.name, "size": g.size, "floor": floor,
                          "producer": index[keys[0]], "slices": slices})
        return units

    # -------------------------------------------------------- lifecycle
    @property
    def _forbidden(self) -> list[np.ndarray]:
        """Per weight, 1 where a removed channel forbids growth (persistent state)."""
        return self.state_of("forbidden")

    def fresh_state(self, ctx):
        return [{"forbidden": np.zeros(m.shape, np.uint8)} for m in ctx.masks]

    def start(self, ctx):
        targets = ctx.targets
        if self._graph is None:
            self._units = []
            if self.channel_sparsity > 0:
                warnings.warn(
                    "Chase has no model graph, so it cannot find channels and runs as "
                    "RigL: train with `keras_sparse.callbacks.Chase` or "
                    "`DynamicSparseTraining` (they bind the model), or call "
                    "`algorithm.bind_model(model)` before `setup`.", UserWarning, stacklevel=2)
        else:
            self._units = self._eligible_units(targets)
            if self.channel_sparsity > 0 and not self._units:
                warnings.warn(
                    "Chase found no layer whose output channels can be removed (a Dense "
                    "or Conv layer feeding only masked Dense/Conv/DepthwiseConv layers "
                    "through BN, activations, pooling or Flatten, with no residual Add "
                    "and not a model output), so it runs as RigL. Sparsify the consumers "
                    "of the hidden layers, or use channel_sparsity=0.", UserWarning,
                    stacklevel=2)
        self.channel_stats = self._channel_stats()

    def removed_channels(self, forbidden: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """`{producer layer name: bool array}` of removed channels, per eligible layer."""
        forbidden = self._forbidden if forbidden is None else forbidden
        out = {}
        for u in self._units:
            f = forbidden[u["producer"]]
            out[u["layer"]] = f.reshape(-1, f.shape[-1]).all(axis=0) if f.size else np.zeros(0, bool)
        return out

    def _channel_stats(self, forbidden: list[np.ndarray] | None = None) -> dict[str, float]:
        removed = sum(int(r.sum()) for r in self.removed_channels(forbidden).values())
        total = sum(u["size"] for u in self._units)
        return {"channel_sparsity": removed / total if total else 0.0,
                "channels_removed": float(removed)}

    # ----------------------------------------------------- what differs
    def grow_scores(self, ctx, index, rng):
        scores = np.abs(ctx.grads[index]).astype(np.float64)
        scores[self._forbidden[index] > 0] = -np.inf
        return scores

    def channel_target(self, step: int) -> int:
        """Number of eligible channels removed after the update at `step`."""
        start, stop = self.bounds
        last = stop - stop % self.update_interval
        if last <= start:
            last = stop
        total = sum(u["size"] for u in self._units)
        return int(round(self.channel_schedule(step, start, last) * total))

    def select_channels(self, step: int, weights, masks) -> list[tuple[int, int]]:
        """`(unit index, channel)` pairs to remove at `step`, lowest UMM first."""
        removed = self.removed_channels()
        n = self.channel_target(step) - sum(int(r.sum()) for r in removed.values())
        if n <= 0:
            return []
        umm, unit, chan = [], [], []
        for u_i, u in enumerate(self._units):
            p = u["producer"]
            w = np.abs(weights[p] * masks[p])
            per = w.reshape(-1, w.shape[-1])
            scores = per.sum(axis=0) / per.shape[0]
            live = np.flatnonzero(~removed[u["layer"]])
            umm.append(scores[live])
            unit.append(np.full(live.size, u_i))
            chan.append(live)
        umm, unit, chan = map(np.concatenate, (umm, unit, chan))
        order = np.lexsort((chan, unit, umm))
        live_left = [int((~removed[u["layer"]]).sum()) for u in self._units]
        chosen = []
        for j in order:
            if len(chosen) == n:
                break
            u_i = int(unit[j])
            if live_left[u_i] <= self._units[u_i]["floor"]:
                continue
            live_left[u_i] -= 1
            chosen.append((u_i, int(chan[j])))
        return chosen

    # ------------------------------------------------- model-level step
    def finish_model(self, ctx, results):
        """Removes channels, then regrows the freed budget over the whole model.

        Runs after RigL's per-weight prune-and-grow (`results`); returns the
        weights it changes (the engine assigns them and resets the moments
        of their new connections).
        """
        if self.channel_sparsity == 0 or not self._units:
            return {}
        weights = [np.asarray(r.weight) for r in results]
        masks = [np.asarray(r.mask, np.float32) for r in results]
        chosen = self.select_channels(ctx.step, weights, masks)
        if not chosen:
            return {}
        forbidden = [f.copy() for f in self._forbidden]
        touched = set()
        for u_i, c in chosen:
            for ti, axis, idx in self._units[u_i]["slices"]:
                if idx[c].size:
                    f = np.moveaxis(forbidden[ti], axis, 0)  # a view
                    f[idx[c]] = 1
                    touched.add(ti)
        freed = 0
        for ti in touched:
            new_m = masks[ti] * (1 - forbidden[ti])
            freed += int(masks[ti].sum() - new_m.sum())
            masks[ti] = new_m
            weights[ti] = weights[ti] * new_m
        grown = self._reallocate(freed, masks, ctx.grads, forbidden)
        out = {}
        for i in range(len(results)):
            if i not in touched and not grown[i].any():
                continue
            # As in RigL's update, an entry dropped and re-grown at the same
            # update is not new: it gets its value back and keeps its
            # moments; only entries inactive before the update start at zero.
            old_w, old_m = ctx.weights[i], ctx.masks[i]
            returning = grown[i] * old_m
            out[i] = LayerResult(
                weights[i] * (1 - grown[i]) + old_w * returning, np.maximum(masks[i], grown[i]),
                state={"forbidden": forbidden[i]}, new_connections=grown[i] * (1 - old_m))
        self.channel_stats = self._channel_stats(forbidden)
        self.channel_stats["reallocated"] = float(sum(g.sum() for g in grown))
        return out

    def _reallocate(self, n: int, masks, grads, forbidden) -> list[np.ndarray]:
        """Grows `n` entries over all weights by dense-gradient magnitude (global)."""
        grown = [np.zeros_like(m) for m in masks]
        if n <= 0:
            return grown
        scores = [np.where((m == 0) & (f == 0), np.abs(g).astype(np.float64), -np.inf).reshape(-1)
                  for m, f, g in zip(masks, forbidden, grads)]
        flat = np.concatenate(scores)
        allowed = int(np.isfinite(flat).sum())
        n = min(n, allowed)
        pick = np.argsort(-flat, kind="stable")[:n]
        offsets = np.cumsum([0] + [s.size for s in scores])
        for i in range(len(masks)):
            sel = pick[(pick >= offsets[i]) & (pick < offsets[i + 1])] - offsets[i]
            g = grown[i].reshape(-1)
            g[sel] = 1.0
        return grown
