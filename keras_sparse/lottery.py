"""Lottery tickets: iterative magnitude pruning with rewinding.

`find_ticket` trains, prunes the smallest-magnitude surviving weights,
rewinds the survivors to their values at initialization (or at an early
step k) and repeats. The result is a `LotteryTicket`: the masks plus the
rewind weights, which `ticket.apply(model)` writes into a model of the same
architecture, ready to train.

Reference:
    Frankle and Carbin, "The Lottery Ticket Hypothesis: Finding Sparse,
    Trainable Neural Networks", ICLR 2019; Frankle et al., "Linear Mode
    Connectivity and the Lottery Ticket Hypothesis", ICML 2020 (rewinding to
    step k).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any
from collections.abc import Callable, Mapping

import keras
import numpy as np

from keras_sparse.model_view import sparsity_counts
from keras_sparse.pruning.core import (
    as_sparse_model,
    check_distribution,
    check_scope,
    get_masks,
    masked_weight_table,
    masks_from_scores,
    set_masks,
)

__all__ = ["LotteryTicket", "find_ticket", "imp_schedule", "magnitude_prune"]


@dataclasses.dataclass
class LotteryTicket:
    """A winning-ticket candidate: masks and the weights to rewind to.

    Attributes:
        masks: `{"layer/weight": 0/1 array}`.
        rewind_weights: `model.get_weights()` of the sparse model at the
            rewind point (initialization or step `rewind_step`).
        rewind_step: optimizer step the weights were captured at.
        sparsity: fraction of zeros over all masked weights.
        history: one dict per round: `round`, `sparsity`, and the final
            `fit` logs of that round.
        model: the sparse model the ticket was found on, left rewound with
            the ticket's masks (compile and train it), or None.
    """

    masks: dict[str, np.ndarray]
    rewind_weights: list[np.ndarray]
    rewind_step: int = 0
    sparsity: float = 0.0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model: keras.Model | None = None

    def apply(self, model: keras.Model) -> keras.Model:
        """Rewinds `model` (same architecture) to the ticket: weights, then masks.

        Args:
            model: a sparse model with the same layers, or a dense one (a
                wrapped copy is returned; the input is unchanged).

        Returns:
            The sparse model holding `rewind_weights * masks`.

        Raises:
            ValueError: if the architecture does not match (model unchanged).
        """
        sparse = as_sparse_model(model, "LotteryTicket.apply")
        current = sparse.get_weights()
        if len(current) != len(self.rewind_weights) or any(
            a.shape != b.shape for a, b in zip(current, self.rewind_weights)
        ):
            raise ValueError(
                "The model does not match the ticket: received weight shapes "
                f"{[a.shape for a in current]}, ticket has "
                f"{[b.shape for b in self.rewind_weights]}."
            )
        table = masked_weight_table(sparse)
        if set(table) != set(self.masks):
            raise ValueError(
                f"The model's masked weights {sorted(table)} do not match the "
                f"ticket's masks {sorted(self.masks)}."
            )
        sparse.set_weights(self.rewind_weights)
        set_masks(sparse, self.masks)
        return sparse

    def save(self, path: str | os.PathLike) -> str:
        """Writes masks and rewind weights to one `.npz` file."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        arrays = {f"mask:{k}": v.astype(np.uint8) for k, v in self.masks.items()}
        arrays.update({f"weight:{i:05d}": w for i, w in enumerate(self.rewind_weights)})
        arrays["meta:rewind_step"] = np.array(self.rewind_step)
        arrays["meta:sparsity"] = np.array(self.sparsity)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LotteryTicket:
        """Reads a ticket written by `save` (without history or model)."""
        with np.load(os.fspath(path), allow_pickle=False) as f:
            masks = {k[5:]: f[k].astype(np.float32) for k in f.files if k.startswith("mask:")}
            weights = [f[k] for k in sorted(k for k in f.files if k.startswith("weight:"))]
            return cls(masks, weights, int(f["meta:rewind_step"]), float(f["meta:sparsity"]))


def imp_schedule(
    sparsity: float,
    max_prune_per_round: float = 0.2,
    start_sparsity: float = 0.0,
) -> tuple[int, float]:
    """IMP rounds that reach `sparsity` exactly, pruning at most a set fraction per round.

    Iterative magnitude pruning removes a fixed fraction `f` of the surviving
    weights per round, so after `n` rounds the density is
    `(1 - start_sparsity) * (1 - f) ** n`. This returns the fewest rounds `n`
    with `f <= max_prune_per_round`, and the `f` that lands on `sparsity`
    exactly (the paper's 20% per round would overshoot 90% after 11 rounds).
    Pass the result to `find_ticket(rounds=n, prune_per_round=f)`.

    Args:
        sparsity: target fraction of zero weights, in (start_sparsity, 1).
        max_prune_per_round: largest fraction of survivors removed per round,
            in (0, 1). Frankle and Carbin use 0.2 for conv nets.
        start_sparsity: sparsity the pruning starts from, in [0, 1): 0 for a
            dense model, or an earlier ticket's sparsity to continue its IMP
            trajectory.

    Returns:
        `(rounds, prune_per_round)`.

    Raises:
        ValueError: a value outside the ranges above.

    Example:

    >>> keras_sparse.lottery.imp_schedule(0.9)
    (11, 0.18886...)

    Reference:
        Frankle and Carbin, "The Lottery Ticket Hypothesis", ICLR 2019.
    """
    for name, value in (("sparsity", sparsity), ("max_prune_per_round", max_prune_per_round),
                        ("start_sparsity", start_sparsity)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"`{name}` must be a number. Received: {value!r}.")
    if not 0.0 <= start_sparsity < 1.0:
        raise ValueError(f"`start_sparsity` must be in [0, 1). Received: {start_sparsity!r}.")
    if not start_sparsity < sparsity < 1.0:
        raise ValueError(
            f"`sparsity` must be in (start_sparsity={start_sparsity}, 1). Received: {sparsity!r}."
        )
    if not 0.0 < max_prune_per_round < 1.0:
        raise ValueError(
            f"`max_prune_per_round` must be in (0, 1). Received: {max_prune_per_round!r}."
        )
    ratio = (1.0 - sparsity) / (1.0 - start_sparsity)
    rounds = max(1, math.ceil(math.log(ratio) / math.log(1.0 - max_prune_per_round) - 1e-9))
    return rounds, 1.0 - ratio ** (1.0 / rounds)


def magnitude_prune(
    model: keras.Model,
    prune_fraction: float,
    scope: str = "global",
    distribution: str | Mapping[str, float] = "uniform",
) -> dict[str, np.ndarray]:
    """Masks removing `prune_fraction` of the surviving weights by magnitude.

    Args:
        model: a sparse model.
        prune_fraction: fraction of the currently active weights to remove.
        scope: `"global"` (one threshold) or `"layer"` (each weight reaches
            its budget of the new total sparsity under `distribution`).
        distribution: budgets for `scope="layer"`.

    Returns:
        The new masks (not yet applied); active entries are a subset of the
        current ones.
    """
    current = get_masks(model)
    counts = sparsity_counts(current.values())
    total, density = counts.total, counts.nonzeros / counts.total
    target = 1.0 - density * (1.0 - prune_fraction)
    scores = {k: np.abs(w.numpy()) for k, (_, w, _) in masked_weight_table(model).items()}
    return masks_from_scores(scores, min(target, 1.0 - 1.0 / total), scope, distribution, current)


class _CaptureAtStep(keras.callbacks.Callback):
    """Captures `model.get_weights()` once `optimizer.iterations >= step`."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step
        self.weights = None

    def on_train_batch_end(self, batch, logs=None):
        if self.weights is None and int(self.model.optimizer.iterations) >= self.step:
            self.weights = [w.copy() for w in self.model.get_weights()]


def _recompile(model: keras.Model, config) -> None:
    """Compiles `model` afresh (new optimizer state) from a compile config."""
    model.compile_from_config(config)


def find_ticket(
    model: keras.Model,
    fit_kwargs: Mapping[str, Any],
    rounds: int,
    prune_per_round: float = 0.2,
    rewind_step: int = 0,
    scope: str = "global",
    distribution: str | Mapping[str, float] = "uniform",
    on_round_end: Callable[[int, keras.Model], None] | None = None,
) -> LotteryTicket:
    """Iterative magnitude pruning with rewinding, driven by `model.fit`.

    Each round: train with `model.fit(**fit_kwargs)` from the rewind point
    with a fresh optimizer (recompiled from the model's compile config),
    remove `prune_per_round` of the surviving weights by magnitude, and
    rewind the survivors. After `rounds` rounds the density is
    `(1 - prune_per_round) ** rounds` times the starting density.

    Args:
        model: a compiled model, sparse (its masks are the starting point and
            it is modified in place) or dense (a wrapped copy is used; the
            input is unchanged).
        fit_kwargs: arguments of `model.fit` (x, y, epochs, batch_size,
            callbacks, ...). `verbose` defaults to 0.
        rounds: number of prune-rewind rounds, >= 1.
        prune_per_round: fraction of surviving weights removed per round
            (paper: 0.2), in (0, 1).
        rewind_step: 0 rewinds to initialization; `k > 0` rewinds to the
            weights after `k` optimizer steps of the first round (late
            rewinding). Later rounds restart the optimizer at step 0.
        scope: `"global"` or `"layer"` magnitude ranking.
        distribution: budgets for `scope="layer"` (`"uniform"`: each layer
            loses the same fraction, as in the paper's conv nets).
        on_round_end: optional `f(round, model)` called after each pruning.

    Returns:
        A `LotteryTicket`; `ticket.model` is rewound to the ticket, compiled
        afresh, ready for the final training run.

    Raises:
        ValueError: uncompiled model, bad rounds / fraction / rewind step,
            training shorter than `rewind_step`.

    Example:

    >>> model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss, ["acc"])
    >>> ticket = keras_sparse.lottery.find_ticket(
    ...     model, dict(x=x, y=y, epochs=5, batch_size=128), rounds=10)
    >>> ticket.model.fit(x, y, epochs=5)

    Reference:
        Frankle and Carbin, ICLR 2019; Frankle et al., ICML 2020.
    """
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError(
            "`find_ticket` needs a compiled model (it recompiles it from its "
            "compile config each round). Call `model.compile(...)` first."
        )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"`rounds` must be a positive int. Received: {rounds!r}.")
    if isinstance(prune_per_round, bool) or not 0.0 < float(prune_per_round) < 1.0:
        raise ValueError(f"`prune_per_round` must be in (0, 1). Received: {prune_per_round!r}.")
    if isinstance(rewind_step, bool) or not isinstance(rewind_step, int) or rewind_step < 0:
        raise ValueError(f"`rewind_step` must be an int >= 0. Received: {rewind_step!r}.")
    if not isinstance(fit_kwargs, Mapping):
        raise TypeError(f"`fit_kwargs` must be a dict of model.fit arguments. Received: {fit_kwargs!r}.")
    check_scope(scope)
    check_distribution(distribution)
    compile_config = model.get_compile_config()
    sparse = as_sparse_model(model, "find_ticket")
    if sparse is not model:
        _recompile(sparse, compile_config)
    fit_kwargs = dict(fit_kwargs)
    fit_kwargs.setdefault("verbose", 0)
    user_callbacks = list(fit_kwargs.pop("callbacks", None) or [])
    rewind = [w.copy() for w in sparse.get_weights()] if rewind_step == 0 else None
    history = []
    masks = get_masks(sparse)
    for r in range(1, rounds + 1):
        callbacks = list(user_callbacks)
        capture = None
        if rewind is None:
            capture = _CaptureAtStep(rewind_step)
            callbacks.append(capture)
        result = sparse.fit(callbacks=callbacks, **fit_kwargs)
        if capture is not None:
            if capture.weights is None:
                raise ValueError(
                    f"`rewind_step`={rewind_step} was not reached: the first "
                    f"round ran {int(sparse.optimizer.iterations)} steps."
                )
            rewind = capture.weights
        masks = magnitude_prune(sparse, float(prune_per_round), scope, distribution)
        sparse.set_weights(rewind)
        set_masks(sparse, masks)
        _recompile(sparse, compile_config)
        sparsity = sparsity_counts(masks.values()).sparsity
        logs = {k: v[-1] for k, v in result.history.items()}
        history.append({"round": r, "sparsity": sparsity, **logs})
        if on_round_end is not None:
            on_round_end(r, sparse)
    return LotteryTicket(masks, rewind, rewind_step, sparsity, history, sparse)
