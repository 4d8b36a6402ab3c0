"""Per-layer sparsity allocation: uniform, Erdos-Renyi (ER) and ER-Kernel (ERK).

Given the shapes of the weights to sparsify and a global target, these
functions decide how sparse each weight is. They take plain `{name: shape}`
dicts and know nothing about Keras layers.

Reference:
    - Mocanu et al., "Scalable training of artificial neural networks with
      adaptive sparse connectivity inspired by network science", Nature
      Communications 2018 (Erdos-Renyi allocation).
    - Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020
      (ERK; algorithm of google-research/rigl `rigl/sparse_utils.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from keras_sparse.masks import validate_sparsity

__all__ = ["DISTRIBUTIONS", "allocate"]

DISTRIBUTIONS = ("uniform", "er", "erk")


def _check_shape(name, shape) -> None:
    """A weight shape must be a non-empty sequence of positive ints."""
    ok = (
        isinstance(shape, Sequence)
        and not isinstance(shape, str)
        and len(shape) > 0
        and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape)
    )
    if not ok:
        raise ValueError(
            f"The shape of weight {name!r} must be a non-empty tuple of "
            f"positive ints. Received: {shape!r}."
        )


def _erdos_renyi_score(shape: Sequence[int], kernel: bool, power: float) -> float:
    """Un-normalized density of one weight under ER (`kernel=False`) or ERK."""
    shape = [int(d) for d in shape]
    if kernel or len(shape) < 2:
        return (sum(shape) / float(np.prod(shape))) ** power
    n_in, n_out = shape[-2:]
    return (n_in + n_out) / float(n_in * n_out)


def _erdos_renyi(
    shapes: Mapping[str, Sequence[int]],
    sparsity: float,
    kernel: bool,
    power: float,
) -> dict[str, float]:
    """Solves for the ER/ERK scale factor so the total non-zeros hit the target.

    Every weight i gets density `eps * score_i`. `eps` is chosen so that
    `sum_i eps * score_i * n_i == (1 - sparsity) * sum_i n_i`. Whenever a
    density would exceed 1, the weights with the largest score are made dense,
    their parameters are counted at full density, and `eps` is solved again
    over the rest (RigL's procedure).
    """
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    try:
        scores = {
            name: _erdos_renyi_score(shape, kernel, power)
            for name, shape in shapes.items()
        }
    except OverflowError:
        scores = {}
    if not scores or not all(np.isfinite(v) and v > 0 for v in scores.values()):
        # A huge erk_power_scale overflows or underflows the scores.
        raise ValueError(
            f"`erk_power_scale`={power!r} makes the ERK scores of these shapes "
            "overflow or underflow. Accepted: a moderate positive exponent "
            "(RigL uses 1.0; values below 1 move towards uniform)."
        )
    dense: set[str] = set()
    while True:
        sparse_names = [n for n in shapes if n not in dense]
        if not sparse_names:
            # Only reachable when the target is 0: everything is dense.
            return {name: 0.0 for name in shapes}
        target_ones = (1.0 - sparsity) * sum(sizes.values())
        remaining = target_ones - sum(sizes[n] for n in dense)
        divisor = sum(scores[n] * sizes[n] for n in sparse_names)
        eps = remaining / divisor
        max_score = max(scores[n] for n in sparse_names)
        if eps * max_score <= 1.0:
            break
        dense.update(n for n in sparse_names if scores[n] == max_score)
    return {
        name: 0.0 if name in dense else max(0.0, 1.0 - eps * scores[name])
        for name in shapes
    }


def allocate(
    shapes: Mapping[str, Sequence[int]],
    sparsity: float,
    distribution: str = "erk",
    erk_power_scale: float = 1.0,
) -> dict[str, float]:
    """Per-weight sparsities whose parameter-weighted mean is `sparsity`.

    Args:
        shapes: `{name: shape}` of every weight to sparsify.
        sparsity: global fraction of zeros over all these weights, in [0, 1).
        distribution: `"uniform"` (same sparsity everywhere), `"er"`
            (Erdos-Renyi: density proportional to `(n_in + n_out) /
            (n_in * n_out)` of the last two dimensions) or `"erk"`
            (Erdos-Renyi-Kernel: density proportional to
            `sum(shape) / prod(shape)`, raised to `erk_power_scale`).
        erk_power_scale: exponent of the ERK score; values below 1 make the
            allocation closer to uniform. Only used by `"erk"`.

    Returns:
        `{name: sparsity}` for every name in `shapes`. Weights that ER/ERK
        would make denser than 1 are dense (sparsity 0) and the others are
        re-solved, so the total non-zero count matches the target.

    Raises:
        ValueError: unknown distribution, empty `shapes`, a shape that is
            not a tuple of positive ints, sparsity outside [0, 1), or an
            `erk_power_scale` that is not a finite number > 0.

    Example:

    >>> keras_sparse.allocation.allocate(
    ...     {"a": (100, 100), "b": (100, 10)}, 0.9, "erk")
    {'a': 0.9019..., 'b': 0.8019...}

    Reference:
        Evci et al., "Rigging the Lottery", ICML 2020, Appendix on ERK;
        google-research/rigl `rigl/sparse_utils.py`.
    """
    sparsity = validate_sparsity(sparsity)
    if not isinstance(distribution, str) or distribution.lower() not in DISTRIBUTIONS:
        raise ValueError(
            f"Unknown `distribution`: {distribution!r}. Accepted: "
            f"{', '.join(map(repr, DISTRIBUTIONS))}, or a dict of per-layer "
            "sparsities passed to `keras_sparse.sparsify`."
        )
    if not shapes:
        raise ValueError(
            "`shapes` is empty: there is no weight to sparsify. Accepted: a "
            "dict {name: shape} with at least one weight."
        )
    for name, shape in shapes.items():
        _check_shape(name, shape)
    if (
        isinstance(erk_power_scale, bool)
        or not isinstance(erk_power_scale, (int, float, np.integer, np.floating))
        or not 0 < float(erk_power_scale) < float("inf")
    ):
        raise ValueError(
            "`erk_power_scale` must be a finite number > 0. Received: "
            f"{erk_power_scale!r}."
        )
    distribution = distribution.lower()
    if distribution == "uniform":
        return {name: sparsity for name in shapes}
    return _erdos_renyi(
        shapes,
        sparsity,
        kernel=distribution == "erk",
        power=float(erk_power_scale) if distribution == "erk" else 1.0,
    )
