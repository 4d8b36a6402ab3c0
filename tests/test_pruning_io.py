"""Masks save / load / apply onto fresh models."""

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_sparse  # noqa: E402
from keras_sparse import pruning  # noqa: E402



def build(named=True, width=8):
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(width, 3, activation="relu", name="c0" if named else None)(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out" if named else None)(x))


def test_save_load_apply_round_trip(tmp_path):
    source = pruning.random_pruning(build(), 0.8, seed=0)
    path = pruning.save_masks(source, tmp_path / "m")
    assert path.endswith(".npz")
    loaded = pruning.load_masks(path)
    assert set(loaded) == {"c0/kernel", "out/kernel"}
    fresh = build()
    target = pruning.apply_masks(fresh, path)
    assert not keras_sparse.sparse_wrappers(fresh)  # dense input untouched
    for key, m in pruning.get_masks(target).items():
        np.testing.assert_array_equal(m, loaded[key])
    kernel = target.get_layer("c0").layer.kernel.numpy()
    assert np.all(kernel[loaded["c0/kernel"] == 0] == 0)
    np.testing.assert_array_equal(
        kernel[loaded["c0/kernel"] == 1],
        fresh.get_layer("c0").kernel.numpy()[loaded["c0/kernel"] == 1])


@pytest.mark.full
def test_apply_in_place_on_sparse_model_and_by_order():
    masks = pruning.get_masks(pruning.random_pruning(build(), 0.7, seed=1))
    sparse = keras_sparse.sparsify(build(named=False), 0.0, "uniform", keep_dense=None)
    with pytest.raises(ValueError, match="match='order'"):
        pruning.apply_masks(sparse, masks)
    same = pruning.apply_masks(sparse, masks, match="order")
    assert same is sparse
    for got, want in zip(pruning.get_masks(sparse).values(), masks.values()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.full
@pytest.mark.parametrize(
    "edit, text",
    [
        (lambda m: m.update({"out/kernel": np.ones((5, 3))}), r"shape \(5, 3\)"),
        (lambda m: m.pop("out/kernel"), "without a mask"),
        (lambda m: m.update({"nope/kernel": np.ones((2,))}), "nope/kernel"),
        (lambda m: m.update({"out/kernel": np.full(m["out/kernel"].shape, 0.5)}), "binary"),
    ],
)
def test_bad_masks_raise_and_leave_model_unchanged(edit, text):
    masks = pruning.get_masks(pruning.random_pruning(build(), 0.7, seed=1))
    edit(masks)
    sparse = keras_sparse.sparsify(build(), 0.3, "uniform", keep_dense=None, seed=2)
    before = [v.numpy().copy() for v in sparse.variables]
    with pytest.raises(ValueError, match=text):
        pruning.apply_masks(sparse, masks)
    for a, v in zip(before, sparse.variables):
        np.testing.assert_array_equal(a, v.numpy())


@pytest.mark.full
def test_shape_mismatch_across_architectures_is_clear():
    masks = pruning.get_masks(pruning.random_pruning(build(width=8), 0.7, seed=1))
    with pytest.raises(ValueError, match=r"has shape \(3, 3, 1, 8\) but weight 'c0/kernel'"):
        pruning.apply_masks(build(width=4), masks)


@pytest.mark.full
def test_non_strict_keeps_other_masks():
    sparse = keras_sparse.sparsify(build(), 0.5, "uniform", keep_dense=None, seed=2)
    old_out = pruning.get_masks(sparse)["out/kernel"]
    c0 = np.zeros((3, 3, 1, 8), "float32")
    c0[0, 0, 0, 0] = 1
    pruning.apply_masks(sparse, {"c0/kernel": c0}, strict=False)
    masks = pruning.get_masks(sparse)
    np.testing.assert_array_equal(masks["c0/kernel"], c0)
    np.testing.assert_array_equal(masks["out/kernel"], old_out)
