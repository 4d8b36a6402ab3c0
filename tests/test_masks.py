import numpy as np
import pytest

from keras_sparse import masks


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), 1.5])
def test_validate_sparsity_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        masks.validate_sparsity(bad)


@pytest.mark.parametrize("bad", ["0.5", None, True, [0.5]])
def test_validate_sparsity_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="Received"):
        masks.validate_sparsity(bad)


@pytest.mark.full
def test_num_active_rounds_and_keeps_one():
    assert masks.num_active(10, 0.25) == 8  # 7.5 rounds to 8 (banker's: 8)
    assert masks.num_active(100, 0.9) == 10
    assert masks.num_active(5, 0.99) == 1


def test_random_mask_has_exact_count_and_is_seeded():
    a = masks.random_mask((30, 7), 0.8, masks.seed_for(3, 1))
    b = masks.random_mask((30, 7), 0.8, masks.seed_for(3, 1))
    c = masks.random_mask((30, 7), 0.8, masks.seed_for(3, 2))
    assert a.shape == (30, 7) and a.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert a.sum() == masks.num_active(210, 0.8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_topk_mask_hand_case_and_ties():
    scores = np.array([[0.1, 5.0, 3.0], [3.0, -1.0, 0.0]])
    np.testing.assert_array_equal(
        masks.topk_mask(scores, 3), [[0, 1, 1], [1, 0, 0]]
    )
    # Equal scores: the lower flat index wins.
    np.testing.assert_array_equal(masks.topk_mask(np.ones(4), 2), [1, 1, 0, 0])
    with pytest.raises(ValueError, match="k"):
        masks.topk_mask(scores, 7)


def test_keeps_structure_hand_cases():
    block = np.array([[1, 0], [1, 0], [1, 0], [1, 0]], np.float32)
    broken = block.copy()
    broken[0, 0] = 0
    assert masks.keeps_structure(block, "block") and not masks.keeps_structure(broken, "block")
    two_of_four = np.array([[1], [0], [1], [0]], np.float32)
    assert masks.keeps_structure(two_of_four, "n:m")
    assert not masks.keeps_structure(np.ones((4, 1)), "n:m")
    assert masks.keeps_structure(broken, "unstructured")
    with pytest.raises(ValueError, match="structure"):
        masks.keeps_structure(block, "blocks")


def test_unit_entries_counts_whole_blocks():
    flags = np.zeros((8, 2), bool)
    flags[1, 0] = flags[2, 0] = flags[5, 1] = True  # two blocks touched
    assert masks.unit_entries(flags, "block") == 8
    assert masks.unit_entries(flags, "unstructured") == 3
    assert masks.unit_entries(flags, "n:m") == 3
