"""Pure mask math shared by every part of keras_sparse.

Everything that decides *which* entries of a weight tensor are active lives
here, so allocation, layer wrappers and sparse-training algorithms never
duplicate top-k or random-mask logic.

Masks are float arrays of 0.0 and 1.0 with the shape of the weight they mask.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from keras_sparse._parallel import map_weights

__all__ = [
    "BLOCK_SIZES",
    "STRUCTURES",
    "Structure",
    "as_structure",
    "groups_evenly",
    "validate_block_size",
    "weight_structure",
    "capacity",
    "search_and_awake",
    "from_blocks",
    "global_drop_counts",
    "group_size",
    "keeps_structure",
    "num_active",
    "prune_and_grow",
    "structured_random_mask",
    "to_blocks",
    "unit_entries",
    "validate_structure",
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


def validate_seed(seed, what: str = "seed", allow_none: bool = False) -> int | None:
    """Checks that `seed` is a non-negative int (or None where allowed) and returns it.

    Args:
        seed: the seed given.
        what: name used in the error message.
        allow_none: accept None (a random seed).

    Returns:
        `seed` as a Python int, or None.

    Raises:
        TypeError: not an int (floats, bools and strings included).
        ValueError: a negative int.
    """
    if seed is None and allow_none:
        return None
    accepted = "a non-negative int" + (" or None (random)" if allow_none else "")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"`{what}` must be {accepted}. Received: {seed!r} of type {type(seed).__name__}."
        )
    if seed < 0:
        raise ValueError(f"`{what}` must be {accepted}. Received: {seed!r}.")
    return int(seed)


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


# ---------------------------------------------------------------------------
# Structured masks and prune-and-grow (shared by every sparse-training
# algorithm in `keras_sparse.algorithms`).
# ---------------------------------------------------------------------------

STRUCTURES = ("unstructured", "block", "n:m")
"""Accepted `structure` values.

- `"unstructured"`: any entry may be active.
- `"block"`: 1 x `block_size` blocks along the input dimension (axis -2 of
  a Dense `(in, out)` kernel, input channels of a Conv kernel) are all
  active or all pruned, as in TFLite's sparse FULLY_CONNECTED kernels
  (`BLOCK_SIZES`).
- `"n:m"`: at most 2 of every 4 consecutive entries along axis -2 are active
  (NVIDIA 2:4 pattern), which needs a sparsity of at least 0.5.
"""

GROUP = 4  # Default block length, and M of N:M, along axis -2.
N_OF_M = 2

BLOCK_SIZES = (4, 16)
"""Accepted `block_size` values of `structure="block"`.

TFLite's sparse FULLY_CONNECTED kernels read 1x4 blocks in float32
(`tflite::optimized_ops::FullyConnectedSparseWeight1x4`) and 1x16 blocks in
int8 (`FullyConnectedSparseWeight1x16`); the converter stores other block
sizes element-wise behind a DENSIFY op.
"""


@dataclasses.dataclass(frozen=True)
class Structure:
    """The mask pattern of one weight.

    Functions of this module take a `structure` as one of `STRUCTURES` (a
    `"block"` string means 1x4 blocks) or as a `Structure`, which also
    carries the block size.

    Attributes:
        kind: one of `STRUCTURES`.
        block_size: entries per block along axis -2 (`BLOCK_SIZES`); only
            read for `kind="block"`.
    """

    kind: str = "unstructured"
    block_size: int = GROUP

    @property
    def unit(self) -> int:
        """Entries per mask unit: `block_size` for blocks, else 1."""
        return self.block_size if self.kind == "block" else 1

    @property
    def group(self) -> int:
        """Consecutive entries along axis -2 the pattern spans (1 if unstructured)."""
        return {"block": self.block_size, "n:m": GROUP}.get(self.kind, 1)

    def describe(self) -> str:
        """Plain words: `"unstructured"`, `"1x16 blocks"` or `"2:4 sparse"`."""
        return {"block": f"1x{self.block_size} blocks", "n:m": f"{N_OF_M}:{GROUP} sparse"}.get(
            self.kind, "unstructured")


def validate_block_size(block_size, structure: str = "block") -> int:
    """Checks the `block_size` argument that goes with `structure`.

    Args:
        block_size: None (1x4 for `"block"`) or one of `BLOCK_SIZES`.
        structure: the `structure` argument it comes with.

    Returns:
        The block size (`GROUP` for None).

    Raises:
        TypeError: `block_size` is not an int.
        ValueError: a size not in `BLOCK_SIZES`, or a block size given with
            a structure other than `"block"`.
    """
    if block_size is None:
        return GROUP
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise TypeError(
            f"`block_size` must be one of {list(BLOCK_SIZES)} (or None for "
            f"{GROUP}). Received: {block_size!r} of type {type(block_size).__name__}."
        )
    if int(block_size) not in BLOCK_SIZES:
        raise ValueError(
            f"`block_size` must be one of {list(BLOCK_SIZES)}, the block sizes of "
            f"TFLite's sparse FULLY_CONNECTED kernels (1x4 float32, 1x16 int8). "
            f"Received: block_size={block_size!r}."
        )
    if structure != "block":
        raise ValueError(
            f"`block_size` only applies to structure='block'. Received: "
            f"block_size={block_size!r} with structure={structure!r}."
        )
    return int(block_size)


def as_structure(structure: str | Structure) -> Structure:
    """`structure` as a `Structure` (a `"block"` string is 1x4 blocks).

    Raises:
        TypeError, ValueError: as `validate_structure`.
    """
    if isinstance(structure, Structure):
        if structure.kind not in STRUCTURES or structure.block_size not in BLOCK_SIZES:
            raise ValueError(
                f"Unknown structure {structure!r}: kind must be one of "
                f"{list(STRUCTURES)} and block_size one of {list(BLOCK_SIZES)}."
            )
        return structure
    if not isinstance(structure, str):
        raise TypeError(
            f"`structure` must be one of {list(STRUCTURES)}. Received: "
            f"{structure!r} of type {type(structure).__name__}."
        )
    if structure not in STRUCTURES:
        raise ValueError(
            f"`structure` must be one of {list(STRUCTURES)}. Received: {structure!r}."
        )
    return Structure(structure)


def groups_evenly(shape: Sequence[int], structure: str | Structure) -> bool:
    """Whether a weight of `shape` can have `structure` (axis -2 splits into its groups)."""
    s = as_structure(structure)
    shape = tuple(int(d) for d in shape)
    return s.kind == "unstructured" or (len(shape) >= 2 and shape[-2] % s.group == 0)


def weight_structure(structure: str | Structure, shape: Sequence[int],
                     block_size: int | None = None) -> Structure:
    """The structure a weight of `shape` gets when `structure` is asked for.

    A weight whose axis -2 does not split into the pattern's groups (e.g.
    the 3-channel input of a stem conv under 1x4 blocks, or a bias) falls
    back to unstructured: `sparsify` warns about such layers, and every
    algorithm treats them as unstructured.

    Args:
        structure: one of `STRUCTURES`, or a `Structure`.
        shape: the weight's shape.
        block_size: for `"block"`: one of `BLOCK_SIZES` (None: 4, or the
            `Structure`'s own); not read for other structures.

    Returns:
        A `Structure`: the one asked for, or unstructured.
    """
    s = as_structure(structure)
    if block_size is not None and s.kind == "block":
        s = Structure(s.kind, validate_block_size(block_size))
    return s if groups_evenly(shape, s) else Structure()


def validate_structure(structure: str | Structure, shape: Sequence[int] | None = None,
                       sparsity: float | None = None, what: str = "weight") -> str:
    """Checks `structure` (and that a weight of `shape` can have it).

    Args:
        structure: one of `STRUCTURES`, or a `Structure`.
        shape: optional weight shape to check against.
        sparsity: optional sparsity to check against (`"n:m"` needs >= 0.5).
        what: name of the weight, for messages.

    Returns:
        The structure's kind (one of `STRUCTURES`).

    Raises:
        TypeError: `structure` is not a string or `Structure`.
        ValueError: unknown structure, or incompatible shape/sparsity.
    """
    s = as_structure(structure)
    if shape is not None and not groups_evenly(shape, s):
        raise ValueError(
            f"structure={s.kind!r} ({s.describe()}) groups {s.group} consecutive "
            f"entries along axis -2 (the input dimension), so {what} needs rank >= 2 "
            f"and shape[-2] divisible by {s.group}. Received shape {tuple(shape)}. "
            "Use structure='unstructured' for this weight or keep the "
            "layer dense."
        )
    if s.kind == "n:m" and sparsity is not None and sparsity < 1 - N_OF_M / GROUP:
        raise ValueError(
            f"structure='n:m' ({N_OF_M}:{GROUP}) keeps at most half of the "
            f"entries, so {what} needs sparsity >= {1 - N_OF_M / GROUP}. "
            f"Received sparsity={sparsity!r}."
        )
    return s.kind


def _grouped(a: np.ndarray, size: int = GROUP) -> np.ndarray:
    """View (..., in, out) as (..., in // size, size, out)."""
    shape = a.shape
    return a.reshape(shape[:-2] + (shape[-2] // size, size, shape[-1]))


def to_blocks(a: np.ndarray, reduce: str = "mean", block_size: int = GROUP) -> np.ndarray:
    """Reduces each 1 x `block_size` block along axis -2 to one value (`"mean"` or `"max"`)."""
    g = _grouped(np.asarray(a), block_size)
    return g.max(axis=-2) if reduce == "max" else g.mean(axis=-2)


def from_blocks(a: np.ndarray, block_size: int = GROUP) -> np.ndarray:
    """Inverse of `to_blocks` for masks: repeats each block value `block_size` times."""
    return np.repeat(a, block_size, axis=-2)


def group_size(structure: str | Structure) -> int:
    """Entries per mask unit: the block size for blocks, else 1."""
    return as_structure(structure).unit


def keeps_structure(mask: np.ndarray, structure: str | Structure) -> bool:
    """Whether a 0/1 `mask` has the pattern `structure` asks for.

    Blocks: every 1 x `block_size` block along axis -2 is all ones or all
    zeros; `"n:m"`: at most 2 ones in each group of 4 along axis -2;
    `"unstructured"`: always.

    Args:
        mask: a 0/1 array whose axis -2 is a multiple of the pattern's group.
        structure: one of `STRUCTURES` (`"block"` is 1x4), or a `Structure`.

    Returns:
        True when the mask keeps the structure.

    Example:

    >>> keras_sparse.masks.keeps_structure(np.ones((4, 2)), "n:m")
    False
    """
    s = as_structure(structure)
    if s.kind == "block":
        units = to_blocks(mask, block_size=s.block_size)
        return not bool(np.any((units > 0) & (units < 1)))
    if s.kind == "n:m":
        return not bool(np.any(_grouped(np.asarray(mask)).sum(axis=-2) > N_OF_M))
    return True


def unit_entries(flags: np.ndarray, structure: str | Structure) -> int:
    """Entries in the mask units that hold a flagged entry.

    For blocks, a block with any flagged entry counts as all its entries
    (structured updates move whole blocks); otherwise the flagged entries
    are counted.

    Args:
        flags: a boolean array (e.g. active entries whose sign flipped).
        structure: one of `STRUCTURES`, or a `Structure`.

    Returns:
        The number of entries, a multiple of `group_size(structure)`.
    """
    flags = np.asarray(flags)
    s = as_structure(structure)
    if s.kind == "block":
        return int((to_blocks(flags.astype(np.float32), "max", s.block_size) > 0).sum()) * s.block_size
    return int(np.count_nonzero(flags))


def _as_scores(scores) -> np.ndarray:
    """`scores` as a flat float array, no copy when possible.

    Float dtypes are kept (widening float32 to float64 would not change any
    ranking, only double the memory traffic); other dtypes become float64.
    """
    a = np.asarray(scores)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    return a.reshape(-1)


_SAMPLE_ABOVE = 1 << 18
"""`_kth_smallest` brackets the k-th value from a sample at and above this many entries."""


def _kth_smallest(parts: Sequence[np.ndarray], k: int):
    """The k-th smallest value (1-based) over the 1-D float arrays `parts`, NaN last.

    The same value as `np.partition(np.concatenate(parts), k - 1)[k - 1]`
    (`1 <= k <= total size`). For large inputs the k-th value is first
    bracketed by two values `lo <= hi` read from a strided sample; one pass
    per part then counts the entries below `lo` and gathers the few in
    `[lo, hi]`, and only those are partitioned. The result is exact whatever
    the sample: if the bracket misses the k-th value, the whole input is
    partitioned instead.
    """
    total = sum(p.size for p in parts)
    if total >= _SAMPLE_ABOVE:
        step = max(1, total // (1 << 16))
        sample = np.concatenate([p[::step] for p in parts])
        q = k / total
        r = q * sample.size
        margin = 4.0 * math.sqrt(r * (1.0 - q)) + 32.0
        lo_r, hi_r = int(r - margin), int(r + margin) + 1
        if lo_r >= 0 or hi_r < sample.size:
            picks = [i for i in (lo_r, hi_r) if 0 <= i < sample.size]
            part = np.partition(sample, picks)
            lo = part[lo_r] if lo_r >= 0 else -np.inf
            hi = part[hi_r] if hi_r < sample.size else np.inf
            if not (np.isnan(lo) or np.isnan(hi)):
                n_below, inside = 0, []
                for p in parts:
                    if lo > -np.inf:
                        n_below += int(np.count_nonzero(p < lo))
                        inside.append(p[(p >= lo) & (p <= hi)])
                    else:
                        inside.append(p[p <= hi])
                inside = np.concatenate(inside)
                if n_below < k <= n_below + inside.size:
                    return np.partition(inside, k - n_below - 1)[k - n_below - 1]
    whole = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return np.partition(whole, k - 1)[k - 1]


def _smallest_mask(scores: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Boolean mask of the `k` smallest entries of 1-D `scores`, and the k-th value.

    The order is the one of a stable ascending sort (`np.argsort(scores,
    kind="stable")[:k]` selects the same set): NaN after every number, and
    among equal values the lowest index first. Runs in O(n) with no sort:
    `_kth_smallest` finds the k-th value and one comparison selects
    everything up to it; only when several entries equal the k-th value are
    the lowest-indexed of them taken.

    Args:
        scores: 1-D float array (not modified).
        k: number of entries to select; clipped to [0, scores.size].

    Returns:
        `(selected, kth)`: a bool array with `min(k, size)` True entries,
        and the largest selected value under that order (NaN if a NaN was
        selected, -inf when nothing is).
    """
    n = scores.size
    if k <= 0:
        return np.zeros(n, dtype=bool), -np.inf
    if k >= n:
        return np.ones(n, dtype=bool), (scores.max() if n else -np.inf)  # max: NaN if any
    kth = _kth_smallest([scores], k)
    if kth != kth:  # NaN: every number, then the lowest-indexed NaNs.
        ties = np.isnan(scores)
        selected = ~ties
    else:
        selected = scores <= kth
        if np.count_nonzero(selected) == k:  # the usual case: no tie at the k-th value
            return selected, kth
        selected = scores < kth
        ties = scores == kth
    need = k - int(np.count_nonzero(selected))
    selected[np.flatnonzero(ties)[:need]] = True
    return selected, kth


def _smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Ascending flat indices of the `k` smallest `scores` (NaN last, ties to the lowest index)."""
    return np.flatnonzero(_smallest_mask(_as_scores(scores), k)[0])


def _nm_capacity_filter(candidates: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Keeps (sets to -inf the rest) only the best candidates each 2:4 group can take."""
    shape = candidates.shape
    c = _grouped(candidates)
    free = N_OF_M - _grouped(mask).sum(axis=-2, keepdims=True)
    # Rank of each entry within its group, best candidate first (stable).
    order = np.argsort(-c, axis=-2, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(GROUP).reshape((1,) * (c.ndim - 2) + (GROUP, 1)), axis=-2)
    allowed = rank < free
    return np.where(allowed, c, -np.inf).reshape(shape)


def prune_and_grow(
    mask: np.ndarray,
    drop_scores: np.ndarray | None,
    grow_scores: np.ndarray | None,
    n_drop: int,
    n_grow: int | None = None,
    structure: str | Structure = "unstructured",
) -> tuple[np.ndarray, np.ndarray]:
    """Drops the `n_drop` lowest-scored active entries, grows the `n_grow` best inactive ones.

    The one prune-and-grow of keras_sparse (jaxpruner's `update_mask`).
    Growth may pick an entry dropped in the same call (RigL does); such an
    entry stays active and the caller keeps its value (it is not new). With `n_grow == n_drop` the number
    of active entries is conserved exactly. Equal scores are taken in flat-index
    order (lowest index first), NaN scores last.

    Args:
        mask: 0/1 array.
        drop_scores: higher means keep; only active entries are considered.
            May be None when `n_drop == 0`.
        grow_scores: higher means grow first; entries with score -inf are
            never grown. May be None when `n_grow == 0`.
        n_drop: entries to drop (in entries; for blocks rounded down to a
            multiple of the block size). Clipped to the number of active entries.
        n_grow: entries to grow; defaults to `n_drop`.
        structure: one of `STRUCTURES` (see there; `"block"` is 1x4), or a
            `Structure`.

    Returns:
        `(new_mask, grown)`: float32 0/1 arrays; `grown` marks entries chosen
        in the grow phase.

    Raises:
        ValueError: if fewer than `n_grow` entries can be grown.
    """
    mask = np.asarray(mask, dtype=np.float32)
    n_grow = n_drop if n_grow is None else n_grow
    s = as_structure(structure)
    if s.kind == "block":
        b = s.block_size
        units = to_blocks(mask, "max", b)
        ds = None if drop_scores is None else to_blocks(drop_scores, block_size=b)
        gs = None if grow_scores is None else to_blocks(grow_scores, block_size=b)
        new_u, grown_u = prune_and_grow(units, ds, gs, n_drop // b, n_grow // b)
        return from_blocks(new_u, b), from_blocks(grown_u, b)
    shape = mask.shape
    flat = mask.reshape(-1).copy()
    n_active = int(np.count_nonzero(flat > 0))
    n_drop = min(int(n_drop), n_active)
    # Selections are applied with arithmetic, index scatters or `np.compress`:
    # NumPy's boolean-mask indexing and assignment are several times slower
    # on random masks.
    still_active = None  # indices of the entries active after the drop, when known
    if n_drop > 0:
        d = _as_scores(drop_scores)
        if n_active == flat.size:
            np.multiply(flat, ~_smallest_mask(d, n_drop)[0], out=flat)
        else:
            # Rank only the active entries (a small part of a sparse weight);
            # `active` is ascending, so ties still go to the lowest index.
            active = np.flatnonzero(flat > 0)
            dropped = _smallest_mask(d[active], n_drop)[0]
            flat[np.compress(dropped, active)] = 0.0
            still_active = np.compress(~dropped, active)
    if n_grow <= 0:
        return flat.reshape(shape), np.zeros(shape, np.float32)
    g = _as_scores(grow_scores)
    # Best first = smallest of -g. Entries active after the drop get +inf
    # and -inf grow scores become +inf: both come after every eligible entry
    # (NaN after those), so they are never grown.
    neg = np.negative(g)
    neg[np.flatnonzero(flat > 0) if still_active is None else still_active] = np.inf
    if s.kind == "n:m":
        neg = -_nm_capacity_filter(-neg.reshape(shape), flat.reshape(shape)).reshape(-1)
    chosen, kth = _smallest_mask(neg, n_grow)
    if n_grow > neg.size or not kth < np.inf:
        available = int(np.count_nonzero(neg < np.inf))
        raise ValueError(
            f"Cannot grow {n_grow} entries with structure={s.kind!r}: "
            f"only {available} inactive entries are eligible (shape {shape})."
        )
    grown = chosen.astype(np.float32)
    flat += grown  # chosen entries are all inactive (0) here
    return flat.reshape(shape), grown.reshape(shape)


def structured_random_mask(
    shape: Sequence[int], sparsity: float, rng: np.random.Generator,
    structure: str | Structure = "unstructured",
) -> np.ndarray:
    """A random mask with the given structure (`random_mask` when unstructured).

    Args:
        shape: weight shape.
        sparsity: fraction of zeros.
        rng: source of randomness.
        structure: one of `STRUCTURES`, or a `Structure`.

    Returns:
        A float32 0/1 array with `num_active(size, sparsity)` ones (for
        blocks: that count rounded to whole blocks, at least one block).
    """
    validate_structure(structure, shape, sparsity)
    s = as_structure(structure)
    if s.kind == "unstructured":
        return random_mask(shape, sparsity, rng)
    if s.kind == "block":
        units_shape = tuple(shape[:-2]) + (shape[-2] // s.block_size, shape[-1])
        return from_blocks(random_mask(units_shape, sparsity, rng), s.block_size)
    size = int(np.prod(shape, dtype=np.int64))
    zeros = np.zeros(tuple(shape), np.float32)
    mask, _ = prune_and_grow(zeros, None, rng.random(tuple(shape)), 0,
                             num_active(size, sparsity), structure)
    return mask


def global_drop_counts(
    masks: Sequence[np.ndarray], scores: Sequence[np.ndarray], n_drop: int,
    structure: str | Structure | Sequence[str | Structure] = "unstructured",
) -> list[int]:
    """Splits a global drop budget over weights by one global score ranking.

    The `n_drop` active entries with the lowest scores over all weights are
    found (global magnitude pruning); the result says how many fall in each
    weight. Equal scores go to the earlier weight, then the lower index.
    Blocks are ranked by their mean score and each weight's count is a
    multiple of its block size.

    Args:
        masks: 0/1 arrays.
        scores: arrays of the same shapes (higher means keep).
        n_drop: total number of entries to drop.
        structure: one of `STRUCTURES` or a `Structure`, for every weight,
            or a sequence of them, one per weight (e.g. 1x16 blocks with
            some layers unstructured, `weight_structure`'s fallback).

    Returns:
        Per-weight drop counts summing to `n_drop` (with blocks: rounded down).

    Raises:
        ValueError: a sequence of structures of the wrong length.
    """
    if isinstance(structure, (str, Structure)):
        structures = [as_structure(structure)] * len(masks)
    else:
        structures = [as_structure(st) for st in structure]
        if len(structures) != len(masks):
            raise ValueError(
                f"`structure` needs one entry per weight: received {len(structures)} "
                f"structures for {len(masks)} weights."
            )
    units = [st.unit for st in structures]
    # With mixed unit sizes, a unit's score stands for each of its entries.
    mixed = len(set(units)) > 1

    def active_scores(args):
        m, s, st = args
        if st.kind == "block":
            m, s = to_blocks(m, "max", st.block_size), to_blocks(s, block_size=st.block_size)
        active = np.flatnonzero(np.asarray(m).reshape(-1) > 0)
        s = _as_scores(s)
        part = s if active.size == s.size else s[active]
        if mixed and st.unit > 1:
            part = np.repeat(part, st.unit)
        return part, int(np.count_nonzero(np.isfinite(part)))

    # The scores of the active units of each weight, and how many are finite.
    parts, finite = zip(*map_weights(active_scores, list(zip(masks, scores, structures)),
                                     sum(np.size(m) for m in masks))) if masks else ((), ())
    parts = list(parts)
    k = 1 if mixed or not units else units[0]
    n_finite = sum(finite)
    n_units = min(int(n_drop) // k, n_finite)
    if n_units <= 0:
        return [0] * len(parts)
    # The n_units-th smallest active score over all weights, then per
    # weight: how many lie below it; ties at it go to the lowest global
    # index (earlier weights first).
    kth = _kth_smallest(parts, n_units)
    below = [int(np.count_nonzero(p < kth)) for p in parts]
    need = n_units - sum(below)
    counts = []
    for p, n, unit in zip(parts, below, units):
        if need > 0:
            tied = min(need, int(np.count_nonzero(p == kth)))
            n += tied
            need -= tied
        counts.append(n // unit * unit if mixed else n * k)
    return counts


def search_and_awake(
    mask: np.ndarray,
    weights: np.ndarray,
    delta: np.ndarray,
    n_prune: int,
    structure: str | Structure = "unstructured",
) -> tuple[np.ndarray, np.ndarray, int]:
    """NeurRev's Search & Awake (Li et al. 2024, Algorithm 2).

    Walks the active entries in ascending order of `delta` (the weight
    change since the last update: weights that barely moved belong to
    dormant neurons) and prunes the negative ones until `n_prune` are pruned.
    If fewer than `n_prune` active entries are negative, the rest is pruned
    by smallest magnitude among the remaining active entries, so the number
    of active entries always drops by exactly `n_prune` (keras_sparse's
    choice, to return exactly to the target sparsity).

    Args:
        mask: 0/1 array.
        weights: current weight values.
        delta: `|theta - theta*|`, same shape.
        n_prune: entries to prune (for blocks: rounded down to blocks;
            block sign and delta are block means).
        structure: one of `STRUCTURES`, or a `Structure`.

    Returns:
        `(new_mask, pruned, n_negative)`: the mask, the 0/1 array of pruned
        entries, and how many of them were negative (the "awakened" count).
    """
    mask = np.asarray(mask, np.float32)
    st = as_structure(structure)
    if st.kind == "block":
        b = st.block_size
        new_u, pruned_u, neg = search_and_awake(
            to_blocks(mask, "max", b), to_blocks(weights, block_size=b), to_blocks(delta, block_size=b),
            n_prune // b,
        )
        return from_blocks(new_u, b), from_blocks(pruned_u, b), neg * b
    flat_m = mask.reshape(-1).copy()
    w = _as_scores(weights)
    d = _as_scores(delta)
    active = flat_m > 0
    n_prune = min(int(n_prune), int(np.count_nonzero(active)))
    # Active negative entries, ascending delta, ties to the lowest index
    # (a stable sort's order, found by partition).
    negative = np.flatnonzero(active & (w < 0))
    chosen = negative[np.flatnonzero(_smallest_mask(d[negative], n_prune)[0])]
    rest = n_prune - chosen.size
    flat_m[chosen] = 0.0
    pruned = np.zeros_like(flat_m)
    pruned[chosen] = 1.0
    if rest > 0:
        candidates = np.flatnonzero(flat_m > 0)  # active and not chosen above
        by_magnitude = candidates[np.flatnonzero(_smallest_mask(np.abs(w[candidates]), rest)[0])]
        flat_m[by_magnitude] = 0.0
        pruned[by_magnitude] = 1.0
    return flat_m.reshape(mask.shape), pruned.reshape(mask.shape), int(chosen.size)


def capacity(mask: np.ndarray, structure: str | Structure = "unstructured") -> int:
    """How many more entries `mask` can activate under `structure`."""
    size = int(np.asarray(mask).size)
    limit = size * N_OF_M // GROUP if as_structure(structure).kind == "n:m" else size
    return max(0, limit - int(np.asarray(mask).sum()))
