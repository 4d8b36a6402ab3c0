"""Pure mask math shared by every part of keras_sparse.

Everything that decides *which* entries of a weight tensor are active lives
here, so allocation, layer wrappers and sparse-training algorithms never
duplicate top-k or random-mask logic.

Masks are float arrays of 0.0 and 1.0 with the shape of the weight they mask.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "num_active",
    "random_mask",
    "seed_for",
    "topk_mask",
    "validate_sparsity",
]


def validate_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """Checks that `sparsity` is a real number in [0, 1) and returns it.

    Args:
        sparsity: fraction of zero entries requested.
        what: name used in the error message.

    Returns:
        `sparsity` as a Python float.

    Raises:
        TypeError: if `sparsity` is not a real number.
        ValueError: if `sparsity` is outside [0, 1) or not finite.
    """
    if isinstance(sparsity, bool) or not isinstance(
        sparsity, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"`{what}` must be a float in [0, 1). Received: {sparsity!r} "
            f"of type {type(sparsity).__name__}."
        )
    value = float(sparsity)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{what}` must be a float in [0, 1) (1.0 would remove every "
            f"weight). Received: {sparsity!r}."
        )
    return value


def num_active(size: int, sparsity: float) -> int:
    """Number of entries kept active in a tensor of `size` entries.

    Rounds to the nearest integer and keeps at least one entry, so that no
    layer is disconnected completely.

    Args:
        size: total number of entries.
        sparsity: fraction of zeros, in [0, 1).

    Returns:
        The number of ones in the mask.
    """
    return max(1, min(int(size), int(round((1.0 - sparsity) * size))))


def seed_for(seed: int, *keys: int) -> np.random.Generator:
    """A NumPy generator derived deterministically from `seed` and `keys`.

    Never uses Python's `hash()` (randomized per process).

    Args:
        seed: base seed.
        *keys: extra non-negative integers (layer index, step, ...).

    Returns:
        A `numpy.random.Generator`.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def random_mask(
    shape: Sequence[int], sparsity: float, rng: np.random.Generator
) -> np.ndarray:
    """A uniformly random mask with exactly `num_active(size, sparsity)` ones.

    Args:
        shape: shape of the weight tensor.
        sparsity: fraction of zeros, in [0, 1).
        rng: source of randomness (see `seed_for`).

    Returns:
        A float32 array of 0.0/1.0 of the given shape.
    """
    size = int(np.prod(shape, dtype=np.int64))
    flat = np.zeros(size, dtype=np.float32)
    flat[rng.permutation(size)[: num_active(size, sparsity)]] = 1.0
    return flat.reshape(tuple(shape))


def topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """A mask with ones at the `k` largest `scores` (ties broken by index).

    Args:
        scores: array of any shape.
        k: number of entries to keep, 0 <= k <= scores.size.

    Returns:
        A float32 array of 0.0/1.0 with the shape of `scores`.
    """
    flat = np.asarray(scores).reshape(-1)
    if not 0 <= k <= flat.size:
        raise ValueError(
            f"`k` must be in [0, {flat.size}] for scores of size {flat.size}. "
            f"Received: k={k}."
        )
    mask = np.zeros(flat.size, dtype=np.float32)
    if k:
        # Stable sort on -scores keeps the lowest index among equal scores.
        mask[np.argsort(-flat, kind="stable")[:k]] = 1.0
    return mask.reshape(np.shape(scores))
