"""The partition-based selections in keras_sparse.masks against sort-based references.

The mask update path (prune-and-grow, global drop counts, Search & Awake)
selects the k smallest scores by partition, with the order of a stable
ascending sort: NaN after every number, ties to the lowest index. Each
function is compared here with a plain reference written with
`np.argsort(kind="stable")` on random tensors with many ties, +-inf and NaN.
"""

import numpy as np
import pytest

from keras_sparse import masks as mm


# ------------------------------------------------------------ references
def ref_smallest(scores, k):
    """Indices of the k smallest: a stable sort, NaN last."""
    return np.sort(np.argsort(scores, kind="stable")[: max(k, 0)])


def ref_prune_and_grow(mask, drop, grow, n_drop, n_grow, structure="unstructured"):
    if structure == "block":
        new_u, grown_u = ref_prune_and_grow(mm.to_blocks(mask, "max"), mm.to_blocks(drop),
                                            mm.to_blocks(grow), n_drop // 4, n_grow // 4)
        return mm.from_blocks(new_u), mm.from_blocks(grown_u)
    shape = mask.shape
    flat = mask.reshape(-1).astype(np.float32)
    active = np.flatnonzero(flat > 0)
    n_drop = min(n_drop, active.size)
    if n_drop > 0:
        flat[active[ref_smallest(np.asarray(drop, np.float64).reshape(-1)[active], n_drop)]] = 0.0
    grown = np.zeros_like(flat)
    if n_grow > 0:
        g = np.where(flat > 0, -np.inf, np.asarray(grow, np.float64).reshape(-1))
        if structure == "n:m":
            g = mm._nm_capacity_filter(g.reshape(shape), flat.reshape(shape)).reshape(-1)
        eligible = np.flatnonzero(~np.isnan(g) & (g > -np.inf))
        if eligible.size < n_grow:
            raise ValueError("not enough eligible")
        # Best first: descending score, ties to the lowest index.
        order = eligible[np.argsort(-g[eligible], kind="stable")]
        chosen = order[:n_grow]
        grown[chosen] = 1.0
        flat[chosen] = 1.0
    return flat.reshape(shape), grown.reshape(shape)


def ref_global_drop_counts(masks, scores, n_drop, structure="unstructured"):
    k = mm.group_size(structure)
    parts = []
    for m, s in zip(masks, scores):
        if structure == "block":
            m, s = mm.to_blocks(m, "max"), mm.to_blocks(s)
        parts.append(np.asarray(s, np.float64).reshape(-1)[np.asarray(m).reshape(-1) > 0])
    owner = np.concatenate([np.full(p.size, i) for i, p in enumerate(parts)])
    allscores = np.concatenate(parts)
    n_units = min(n_drop // k, int(np.isfinite(allscores).sum()))
    chosen = ref_smallest(allscores, n_units)
    return [int(c) * k for c in np.bincount(owner[chosen], minlength=len(parts))]


def ref_search_and_awake(mask, weights, delta, n_prune):
    flat = mask.reshape(-1).astype(np.float32)
    w, d = np.asarray(weights, np.float64).reshape(-1), np.asarray(delta, np.float64).reshape(-1)
    active = flat > 0
    n_prune = min(n_prune, int(active.sum()))
    negative = np.flatnonzero(active & (w < 0))
    chosen = negative[np.argsort(d[negative], kind="stable")][:n_prune]
    pruned = np.zeros_like(flat)
    pruned[chosen] = 1.0
    rest = np.flatnonzero(active & (pruned == 0))
    pruned[rest[np.argsort(np.abs(w[rest]), kind="stable")][: n_prune - chosen.size]] = 1.0
    flat[pruned > 0] = 0.0
    return flat.reshape(mask.shape), pruned.reshape(mask.shape), int(chosen.size)


# ------------------------------------------------------------ random data
def tied_scores(rng, shape, dtype=np.float32, specials=True):
    """Scores drawn from 5 values (many ties), with some -0.0, +-inf and NaN."""
    s = rng.integers(-2, 3, size=shape).astype(dtype) * dtype(0.5)
    if specials:
        flat = s.reshape(-1)
        for value in (-0.0, np.inf, -np.inf, np.nan):
            flat[rng.random(flat.size) < 0.03] = value
    return s


@pytest.fixture(params=[False, True], ids=["partition", "sampled-bracket"])
def bracket(request, monkeypatch):
    """Runs a test twice: direct partition, and the sampled bracket forced on small inputs."""
    if request.param:
        monkeypatch.setattr(mm, "_SAMPLE_ABOVE", 16)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kth_smallest_matches_partition_of_concatenation(bracket, dtype):
    rng = np.random.default_rng(0)
    for trial in range(60):
        parts = [tied_scores(rng, (int(rng.integers(0, 400)),), dtype, specials=trial % 2 == 0)
                 if trial % 3 else rng.standard_normal(int(rng.integers(1, 400))).astype(dtype)
                 for _ in range(int(rng.integers(1, 5)))]
        whole = np.concatenate(parts)
        if whole.size == 0:
            continue
        for k in {1, whole.size, int(rng.integers(1, whole.size + 1))}:
            expected = np.partition(whole, k - 1)[k - 1]
            np.testing.assert_array_equal(mm._kth_smallest(parts, k), expected)


def test_smallest_mask_is_stable_sort_order_with_ties_and_nan(bracket):
    rng = np.random.default_rng(1)
    for trial in range(80):
        scores = tied_scores(rng, (int(rng.integers(1, 300)),), np.float32 if trial % 2 else np.float64)
        for k in (0, 1, scores.size // 3, scores.size - 1, scores.size, scores.size + 2):
            selected, _ = mm._smallest_mask(scores, k)
            np.testing.assert_array_equal(np.flatnonzero(selected), ref_smallest(scores, k))


def test_smallest_mask_ties_go_to_lowest_index_hand_case():
    scores = np.array([3.0, 1.0, 2.0, 1.0, 1.0, np.nan, 0.0])
    np.testing.assert_array_equal(mm._smallest(scores, 3), [1, 3, 6])
    np.testing.assert_array_equal(mm._smallest(scores, 7), np.arange(7))
    np.testing.assert_array_equal(mm._smallest(np.array([np.nan, 1.0, np.nan]), 2), [0, 1])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # block means of inf - inf
@pytest.mark.parametrize("structure", mm.STRUCTURES)
def test_prune_and_grow_matches_reference(bracket, structure):
    rng = np.random.default_rng(2)
    for trial in range(40):
        shape = [(16, 12), (3, 3, 8, 4), (64, 8)][trial % 3]
        sparsity = [0.0, 0.5, 0.8, 0.95][trial % 4]
        if structure == "n:m":
            sparsity = max(sparsity, 0.5)
        mask = mm.structured_random_mask(shape, sparsity, rng, structure)
        drop = tied_scores(rng, shape, np.float32, specials=trial % 2 == 0)
        grow = tied_scores(rng, shape, np.float64 if trial % 3 else np.float32, specials=trial % 2 == 1)
        n_active = int(mask.sum())
        unit = mm.group_size(structure)
        n_drop = int(rng.integers(0, n_active + 1)) // unit * unit
        n_grow = n_drop if trial % 4 else n_drop // 2 // unit * unit
        try:
            expected = ref_prune_and_grow(mask, drop, grow, n_drop, n_grow, structure)
        except ValueError:
            with pytest.raises(ValueError, match="Cannot grow"):
                mm.prune_and_grow(mask, drop, grow, n_drop, n_grow, structure)
            continue
        new, grown = mm.prune_and_grow(mask, drop, grow, n_drop, n_grow, structure)
        np.testing.assert_array_equal(new, expected[0])
        np.testing.assert_array_equal(grown, expected[1])
        assert new.dtype == grown.dtype == np.float32


def test_prune_and_grow_does_not_modify_inputs():
    rng = np.random.default_rng(3)
    mask = mm.random_mask((20, 10), 0.7, rng)
    drop, grow = tied_scores(rng, (20, 10)), tied_scores(rng, (20, 10), np.float64)
    copies = [a.copy() for a in (mask, drop, grow)]
    mm.prune_and_grow(mask, drop, grow, 10)
    for a, b in zip((mask, drop, grow), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("structure", ["unstructured", "block"])
def test_global_drop_counts_matches_reference(bracket, structure):
    rng = np.random.default_rng(4)
    for trial in range(40):
        shapes = [(8, 4), (16, 12), (3, 3, 4, 8)][: 1 + trial % 3]
        masks = [mm.structured_random_mask(s, [0.0, 0.5, 0.9][trial % 3], rng, structure) for s in shapes]
        scores = [np.abs(tied_scores(rng, s, specials=trial % 2 == 0)) for s in shapes]
        total = int(sum(m.sum() for m in masks))
        for n_drop in (0, 1, total // 3, total, total + 8):
            assert (mm.global_drop_counts(masks, scores, n_drop, structure)
                    == ref_global_drop_counts(masks, scores, n_drop, structure))


def test_global_drop_counts_ties_go_to_earlier_weights():
    ones = [np.ones(4), np.ones(4)]
    assert mm.global_drop_counts(ones, [np.zeros(4), np.zeros(4)], 5) == [4, 1]
    assert mm.global_drop_counts(ones, [np.ones(4), np.zeros(4)], 5) == [1, 4]


def test_search_and_awake_matches_reference(bracket):
    rng = np.random.default_rng(5)
    for trial in range(60):
        shape = (12, 10)
        mask = mm.random_mask(shape, [0.0, 0.5, 0.9][trial % 3], rng)
        weights = tied_scores(rng, shape, specials=False) * mask
        delta = np.abs(tied_scores(rng, shape, specials=trial % 2 == 0))
        n_prune = int(rng.integers(0, int(mask.sum()) + 3))
        got = mm.search_and_awake(mask, weights, delta, n_prune)
        expected = ref_search_and_awake(mask, weights, delta, n_prune)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        assert got[2] == expected[2]


@pytest.mark.full
def test_large_weight_uses_sampled_bracket_and_matches_reference():
    # Above _SAMPLE_ABOVE without monkeypatching: the path a 1M-entry layer takes.
    rng = np.random.default_rng(6)
    shape = (600, 500)
    assert np.prod(shape) >= mm._SAMPLE_ABOVE
    mask = mm.random_mask(shape, 0.5, rng)
    drop = np.round(rng.standard_normal(shape), 2).astype(np.float32)  # many ties
    grow = np.round(rng.random(shape), 3)
    expected = ref_prune_and_grow(mask, drop, grow, 40_000, 60_000)
    new, grown = mm.prune_and_grow(mask, drop, grow, 40_000, 60_000)
    np.testing.assert_array_equal(new, expected[0])
    np.testing.assert_array_equal(grown, expected[1])
    masks, scores = [mask, np.ones(shape)], [np.abs(drop), np.abs(drop.T).T]
    assert mm.global_drop_counts(masks, scores, 123_456) == ref_global_drop_counts(masks, scores, 123_456)
