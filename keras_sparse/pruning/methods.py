"""Pruning at initialization: SNIP, GraSP, SynFlow and random masks.

Every mask maker takes a model, computes one score per masked weight entry,
keeps the highest scores (`scope="global"`: one threshold over all weights;
`scope="layer"`: per-weight budgets from `distribution`) and writes the masks
into the model's `SparseWrapper`s, zeroing the pruned weights.

Input models:
    - a sparse model (from `keras_sparse.sparsify`): masks are set in place
      and the same model is returned. Entries its current masks prune stay
      pruned, so start from `sparsify(model, 0.0, ...)` to score every weight.
    - a dense Sequential/Functional model: it is not modified; a copy is
      wrapped with all-ones masks (`sparsify(model, 0.0, "uniform",
      keep_dense=None)`), pruned, and returned.
Compile the returned model before training.

Scoring never changes weights, BatchNorm statistics or optimizer state: every
model variable is restored after scoring.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf  # Gradient capture only (Keras exposes no gradients).

from keras_sparse import masks as mask_math
from keras_sparse.pruning.core import (
    as_sparse_model,
    check_distribution,
    check_scope,
    get_masks,
    iter_batches,
    layer_budgets,
    masked_weight_table,
    masks_from_scores,
    resolve_loss,
    set_masks,
)

__all__ = [
    "METHODS",
    "grasp",
    "grasp_scores",
    "prune_at_init",
    "random_pruning",
    "snip",
    "snip_scores",
    "synflow",
    "synflow_round_budgets",
    "synflow_scores",
]


class _RestoreVariables:
    """Context manager restoring every variable of `model` on exit."""

    def __init__(self, model):
        self.variables = list(model.variables)

    def __enter__(self):
        self.saved = [v.numpy().copy() for v in self.variables]
        return self

    def __exit__(self, *exc):
        for v, value in zip(self.variables, self.saved):
            v.assign(value)
        return False


def _check_common(sparsity, scope, distribution):
    sparsity = mask_math.validate_sparsity(sparsity)
    check_scope(scope)
    check_distribution(distribution)
    return sparsity


def _forward_loss(model, loss_fn, x, y, training):
    y_pred = model(x, training=training)
    return tf.reduce_mean(loss_fn(y, y_pred))


def _accumulated_gradients(model, table, loss_fn, data, num_batches, training, what):
    keys = list(table)
    weights = [table[k][1] for k in keys]
    total = [np.zeros(tuple(w.shape), np.float64) for w in weights]
    count = 0
    for x, y in iter_batches(data, num_batches, what):
        with tf.GradientTape() as tape:
            loss = _forward_loss(model, loss_fn, x, y, training)
        grads = tape.gradient(loss, weights)
        for acc, g in zip(total, grads):
            if g is not None:
                acc += np.asarray(g, np.float64)
        count += 1
    return {k: g / count for k, g in zip(keys, total)}


def snip_scores(
    model: keras.Model,
    data,
    loss=None,
    num_batches: int | None = 1,
    training: bool = True,
) -> dict[str, np.ndarray]:
    """SNIP connection sensitivity `|g * w|` of every masked weight entry.

    `g` is the gradient of the loss averaged over the batches. This equals
    `|dL/dc|` at `c = 1` for the multiplicative mask `c` of Lee et al.

    Args:
        model: a sparse model (see `snip` for dense ones).
        data: a `(x, y)` tuple, a `tf.data.Dataset` or an iterable of batches.
        loss: loss callable or name; default the model's compiled loss.
        num_batches: batches to average over (`None`: all of `data`).
        training: forward pass mode (BatchNorm uses batch statistics when
            True; moving statistics are restored afterwards).

    Returns:
        `{"layer/weight": scores}` float64 arrays.

    Reference:
        Lee et al., "SNIP: Single-shot Network Pruning based on Connection
        Sensitivity", ICLR 2019.
    """
    loss_fn = resolve_loss(model, loss, "snip")
    table = masked_weight_table(model)
    with _RestoreVariables(model):
        grads = _accumulated_gradients(model, table, loss_fn, data, num_batches, training, "snip")
        weights = {k: np.asarray(table[k][1].numpy(), np.float64) for k in table}
    return {k: np.abs(grads[k] * weights[k]) for k in table}


GRASP_LOGIT_TEMPERATURE = 200.0
"""The temperature of the GraSP authors' code (alecwangcq/GraSP, `T=200`), applied to logits."""


def grasp_temperature(temperature, loss_fn) -> float:
    """The temperature GraSP uses: a float > 0, or `"auto"` resolved from the loss.

    `"auto"`: `GRASP_LOGIT_TEMPERATURE` when `loss_fn` is a Keras loss with
    `from_logits=True`, else 1.

    Raises:
        ValueError: anything else, naming what was received.
    """
    if isinstance(temperature, str) and temperature == "auto":
        return GRASP_LOGIT_TEMPERATURE if getattr(loss_fn, "from_logits", False) is True else 1.0
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating))
            or not np.isfinite(temperature) or not temperature > 0):
        raise ValueError(
            f"`temperature` must be 'auto' or a finite float > 0. Received: {temperature!r}."
        )
    return float(temperature)


def grasp_scores(
    model: keras.Model,
    data,
    loss=None,
    num_batches: int | None = 1,
    temperature: float | str = "auto",
    training: bool = True,
) -> dict[str, np.ndarray]:
    """GraSP scores `S(-theta) = -theta * (H g)` of every masked weight entry.

    `g` is the loss gradient averaged over the batches and `H g` the
    Hessian-gradient product (computed batch by batch with `g` held fixed, as
    in the authors' code). GraSP *removes the highest scores*: removing such a
    weight reduces the gradient norm the least (or increases it), so
    `grasp` keeps the entries with the lowest scores.

    Args:
        model: a sparse model.
        data: a `(x, y)` tuple, a `tf.data.Dataset` or an iterable of batches.
        loss: loss callable or name; default the model's compiled loss.
        num_batches: batches to use (`None`: all of `data`).
        temperature: the model output is divided by this before the loss.
            `"auto"` (default) follows the authors' code: 200 when the loss
            takes logits (a Keras loss with `from_logits=True`), else 1 (a
            model that outputs probabilities, or a plain callable loss).
            Or a float > 0. It matters: on the benchmark's small CNN at 90%
            ERK, T=1 masks kept 93-95% positive weights in conv2 and never
            trained (3 of 3 seeds), T=200 masks trained in 2 of 3
            (`benchmarks/results/pai_diagnostics.md`).
        training: forward pass mode.

    Returns:
        `{"layer/weight": scores}` float64 arrays.

    Reference:
        Wang, Zhang and Grosse, "Picking Winning Tickets Before Training by
        Preserving Gradient Flow", ICLR 2020 (Eq. 8; alecwangcq/GraSP).
    """
    loss_fn = resolve_loss(model, loss, "grasp")
    temperature = grasp_temperature(temperature, loss_fn)
    table = masked_weight_table(model)
    keys = list(table)
    weights = [table[k][1] for k in keys]
    batches = list(iter_batches(data, num_batches, "grasp"))

    def loss_of(x, y):
        return tf.reduce_mean(loss_fn(y, model(x, training=training) / temperature))

    with _RestoreVariables(model):
        g = [np.zeros(tuple(w.shape), np.float64) for w in weights]
        for x, y in batches:
            with tf.GradientTape() as tape:
                loss = loss_of(x, y)
            for acc, grad in zip(g, tape.gradient(loss, weights)):
                if grad is not None:
                    acc += np.asarray(grad, np.float64)
        g = [acc / len(batches) for acc in g]
        hg = [np.zeros_like(acc) for acc in g]
        g_const = [tf.constant(acc, dtype=w.dtype) for acc, w in zip(g, weights)]
        for x, y in batches:
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = loss_of(x, y)
                grads = inner.gradient(loss, weights)
                z = tf.add_n(
                    [
                        tf.reduce_sum(gr * gc)
                        for gr, gc in zip(grads, g_const)
                        if gr is not None
                    ]
                )
            for acc, h in zip(hg, outer.gradient(z, weights)):
                if h is not None:
                    acc += np.asarray(h, np.float64)
        hg = [acc / len(batches) for acc in hg]
        values = [np.asarray(w.numpy(), np.float64) for w in weights]
    return {k: -v * h for k, v, h in zip(keys, values, hg)}


def synflow_scores(model: keras.Model) -> dict[str, np.ndarray]:
    """Synaptic-flow scores `|dR/dtheta * theta|` of one SynFlow iteration.

    Every variable of the model is replaced by its absolute value (masked
    weights times their masks), the model is run in inference mode (BatchNorm
    with moving statistics, as in the paper's code) on an all-ones input, and
    `R` is the sum of the outputs. All variables are restored afterwards.

    Args:
        model: a sparse model with fixed input shape.

    Returns:
        `{"layer/weight": scores}` float64 arrays (0 where masked).

    Reference:
        Tanaka et al., "Pruning neural networks without any data by
        iteratively conserving synaptic flow", NeurIPS 2020.
    """
    table = masked_weight_table(model)
    keys = list(table)
    weights = [table[k][1] for k in keys]
    inputs = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                "`synflow` needs a model with a fully known input shape "
                f"(besides the batch). Received input shape {tensor.shape}."
            )
        inputs.append(np.ones((1, *shape), dtype=tensor.dtype or "float32"))
    masks = {id(w): m for _, w, m in table.values()}
    with _RestoreVariables(model):
        for v in model.variables:
            if not np.issubdtype(np.dtype(v.dtype), np.floating):
                continue
            value = np.abs(v.numpy())
            if id(v) in masks:
                value = value * masks[id(v)].numpy()
            v.assign(value)
        with tf.GradientTape() as tape:
            out = model(inputs if len(inputs) > 1 else inputs[0], training=False)
            flat = tf.nest.flatten(out)
            r = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64)) for o in flat])
        grads = tape.gradient(r, weights)
        values = [np.asarray(w.numpy(), np.float64) for w in weights]
    return {
        k: np.abs(np.zeros_like(v) if g is None else np.asarray(g, np.float64) * v)
        for k, v, g in zip(keys, values, grads)
    }


def snip(model: keras.Model, data, sparsity: float, loss=None, scope: str = "global",
         distribution: str | Mapping[str, float] = "erk", num_batches: int | None = 1) -> keras.Model:
    """Prunes `model` at initialization with SNIP (keeps the largest `|g * w|`).

    Args:
        model: a sparse model (masks set in place) or a dense
            Sequential/Functional model (left unchanged; a wrapped copy is
            returned). See the module docstring.
        data: a `(x, y)` tuple (one batch), a `tf.data.Dataset` or an
            iterable of `(x, y)` batches.
        sparsity: target fraction of zeros over all masked weights, [0, 1).
        loss: loss callable or name; default the model's compiled loss.
        scope: `"global"` (one threshold, the paper's choice) or `"layer"`.
        distribution: per-weight budgets for `scope="layer"`: `"uniform"`,
            `"er"`, `"erk"` or `{"layer/weight": sparsity}`.
        num_batches: batches whose gradients are averaged (SNIP: 1).

    Returns:
        The sparse model with the SNIP masks.

    Raises:
        ValueError: no data, sparsity outside [0, 1), unknown scope or
            distribution, no loss. The model is unchanged on any error.

    Example:

    >>> sparse = keras_sparse.pruning.snip(
    ...     model, (x[:256], y[:256]), 0.9,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    Reference:
        Lee et al., "SNIP: Single-shot Network Pruning based on Connection
        Sensitivity", ICLR 2019.
    """
    return prune_at_init(model, "snip", sparsity, data=data, loss=loss, scope=scope,
                         distribution=distribution, num_batches=num_batches)


def grasp(model: keras.Model, data, sparsity: float, loss=None, scope: str = "global",
          distribution: str | Mapping[str, float] = "erk", num_batches: int | None = 1,
          temperature: float | str = "auto") -> keras.Model:
    """Prunes `model` at initialization with GraSP (removes the highest `-theta * Hg`).

    Args:
        model, data, sparsity, loss, scope, distribution, num_batches: as
            in `snip` (GraSP's paper uses about 10 examples per class, and
            `scope="global"`).
        temperature: divides the model output before the loss; `"auto"`
            (default): 200 for a `from_logits=True` Keras loss, as in the
            authors' code, else 1 (see `grasp_scores`).

    Returns:
        The sparse model with the GraSP masks.

    Raises:
        ValueError: as `snip`. The model is unchanged on any error.

    Reference:
        Wang, Zhang and Grosse, "Picking Winning Tickets Before Training by
        Preserving Gradient Flow", ICLR 2020.
    """
    return prune_at_init(model, "grasp", sparsity, data=data, loss=loss, scope=scope,
                         distribution=distribution, num_batches=num_batches,
                         temperature=temperature)


def synflow(
    model: keras.Model,
    sparsity: float,
    iterations: int = 100,
    scope: str = "global",
    distribution: str | Mapping[str, float] = "erk",
) -> keras.Model:
    """Data-free iterative SynFlow pruning with the exponential schedule.

    At iteration `k = 1..n` the scores are recomputed with the current masks
    and the top `(1 - s)^(k / n)` of all entries are kept, i.e. the sparsity
    follows `s_k = 1 - (1 - s)^(k / n)`. With `scope="layer"` every weight
    follows the same schedule to its own budget `s_l`: round `k` keeps the
    top `(1 - s_l)^(k / n)` of weight `l` (`synflow_round_budgets`), whether
    the budgets come from a distribution name or a dict, so both forms of
    the same budgets give the same masks.

    Args:
        model: a sparse or dense model (see `snip`) with a known input shape.
        sparsity: final fraction of zeros, [0, 1).
        iterations: number of pruning iterations `n` (paper: 100).
        scope: `"global"` (the paper's choice) or `"layer"`.
        distribution: per-weight final budgets for `scope="layer"`: a
            distribution name or `{"layer/weight": s_l}`.

    Returns:
        The sparse model with the SynFlow masks (original signed weights).

    Raises:
        ValueError: sparsity outside [0, 1), bad `iterations`, unknown scope
            or distribution. The model is unchanged on any error.

    Reference:
        Tanaka et al., "Pruning neural networks without any data by
        iteratively conserving synaptic flow", NeurIPS 2020 (Algorithm 1).
    """
    return prune_at_init(model, "synflow", sparsity, scope=scope,
                         distribution=distribution, iterations=iterations)


def random_pruning(
    model: keras.Model,
    sparsity: float,
    scope: str = "layer",
    distribution: str | Mapping[str, float] = "erk",
    seed: int | None = None,
) -> keras.Model:
    """Random masks: per-weight budgets from `distribution`, or global.

    Args:
        model: a sparse or dense model (see `snip`).
        sparsity: target fraction of zeros, [0, 1).
        scope: `"layer"` (each weight gets its budget from `distribution`)
            or `"global"` (uniformly random over all entries, which in
            expectation is the `"uniform"` distribution).
        distribution: budgets for `scope="layer"`.
        seed: seed of the masks (`None`: random).

    Returns:
        The sparse model with random masks.

    Reference:
        Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR
        2022 (random masks with ERK budgets as a baseline).
    """
    return prune_at_init(model, "random", sparsity, scope=scope,
                         distribution=distribution, seed=seed)


def _random_method(model, sparsity, scope, distribution, seed=None):
    table = masked_weight_table(model)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    scores = {
        key: mask_math.seed_for(seed, i).random(tuple(w.shape))
        for i, (key, (_, w, _)) in enumerate(table.items())
    }
    return masks_from_scores(scores, sparsity, scope, distribution, get_masks(model))


def _snip_method(model, sparsity, scope, distribution, data=None, loss=None, num_batches=1):
    scores = snip_scores(model, data, loss, num_batches)
    return masks_from_scores(scores, sparsity, scope, distribution, get_masks(model))


def _grasp_method(model, sparsity, scope, distribution, data=None, loss=None,
                  num_batches=1, temperature="auto"):
    scores = grasp_scores(model, data, loss, num_batches, temperature)
    # GraSP removes the highest scores: keep the lowest ones.
    return masks_from_scores({k: -v for k, v in scores.items()}, sparsity, scope,
                             distribution, get_masks(model))


def _synflow_method(model, sparsity, scope, distribution, iterations=100):
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"`iterations` must be a positive int. Received: {iterations!r}.")
    scope = check_scope(scope)
    start = get_masks(model)
    current = dict(start)
    table = masked_weight_table(model)
    final = None
    if scope == "layer":
        # The final per-weight budgets s_l, whatever form they were given in
        # (a distribution name or a dict); round k keeps (1 - s_l)^(k / n).
        final = layer_budgets({k: tuple(w.shape) for k, (_, w, _) in table.items()},
                              sparsity, distribution)
    try:
        for k in range(1, iterations + 1):
            s_k = 1.0 - (1.0 - sparsity) ** (k / iterations)
            budgets = distribution if final is None else synflow_round_budgets(final, k, iterations)
            scores = synflow_scores(model)
            current = masks_from_scores(scores, s_k, scope, budgets, current)
            for key, value in current.items():
                table[key][2].assign(value)
    finally:
        for key, value in start.items():  # leave masks to the caller
            table[key][2].assign(value)
    return current


def synflow_round_budgets(final: Mapping[str, float], k: int, iterations: int) -> dict[str, float]:
    """Per-weight sparsities of SynFlow's round `k` of `iterations` (scope "layer").

    Each weight follows the exponential schedule to its own final budget:
    round `k` keeps `(1 - s_l)^(k / n)` of weight `l`, so the last round
    reaches `s_l` exactly, for any form of the budgets.

    Args:
        final: `{"layer/weight": s_l}` final sparsities.
        k: the round, `1..iterations`.
        iterations: the number of rounds `n`.

    Returns:
        `{"layer/weight": 1 - (1 - s_l)^(k / n)}`.
    """
    return {key: 1.0 - (1.0 - s) ** (k / iterations) for key, s in final.items()}


METHODS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "snip": _snip_method,
    "grasp": _grasp_method,
    "synflow": _synflow_method,
    "random": _random_method,
}
_DATA_METHODS = ("snip", "grasp")


def prune_at_init(
    model: keras.Model,
    method: str,
    sparsity: float,
    data=None,
    loss=None,
    scope: str = "global",
    distribution: str | Mapping[str, float] = "erk",
    **kwargs: Any,
) -> keras.Model:
    """One entry point for every pruning-at-initialization mask maker.

    Args:
        model: a sparse model (masks set in place) or a dense model (a
            wrapped copy is returned; the input is unchanged).
        method: `"snip"`, `"grasp"`, `"synflow"` or `"random"`.
        sparsity: target fraction of zeros over all masked weights, [0, 1).
        data: batches for the data-dependent methods (`snip`, `grasp`).
        loss: loss for the data-dependent methods (default: compiled loss).
        scope: `"global"` or `"layer"`.
        distribution: per-weight budgets for `scope="layer"`.
        **kwargs: method options (`num_batches`, `temperature`,
            `iterations`, `seed`).

    Returns:
        The sparse model with the new masks.

    Raises:
        ValueError: unknown method, data-dependent method without data,
            sparsity out of range, unknown scope/distribution, no loss.
        TypeError: not a Sequential/Functional model, bad data.
        The model is unchanged whenever an error is raised.

    Example:

    >>> sparse = keras_sparse.pruning.prune_at_init(
    ...     model, "synflow", 0.95, iterations=100)
    """
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"Unknown `method`: {method!r}. Accepted: {sorted(METHODS)}.")
    method = method.lower()
    sparsity = _check_common(sparsity, scope, distribution)
    if method in _DATA_METHODS:
        if data is None:
            raise ValueError(
                f"`{method}` is data-dependent and needs `data`: a (x, y) "
                "tuple, a tf.data.Dataset or an iterable of (x, y) batches. "
                "Received: data=None. Data-free methods: 'synflow', 'random'."
            )
        kwargs.update(data=data, loss=resolve_loss(model, loss, method))
    elif data is not None or loss is not None:
        raise ValueError(
            f"`{method}` is data-free; it does not take `data` or `loss`. "
            "Data-dependent methods: 'snip', 'grasp'."
        )
    sparse = as_sparse_model(model, f"prune_at_init({method!r})")
    new_masks = METHODS[method](sparse, sparsity, scope, distribution, **kwargs)
    set_masks(sparse, new_masks)
    return sparse
