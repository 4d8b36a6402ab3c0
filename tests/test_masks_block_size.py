"""`structure="block"` with `block_size=4|16`: validation, mask math, the
per-layer fallback to unstructured, and what a saved model keeps."""

import warnings

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import masks as mm


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="stem")(inputs)  # kernel (3, 3, 3, 16): 3 input channels
    x = keras.layers.Conv2D(16, 3, name="conv")(x)  # kernel (3, 3, 16, 16)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, name="fc")(x)  # (16, 8)
    outputs = keras.layers.Dense(4, name="head")(x)  # (8, 4): 1x4 yes, 1x16 no
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("bad, error, match", [
    (8, ValueError, r"one of \[4, 16\].*Received: block_size=8"),
    (0, ValueError, r"Received: block_size=0"),
    ("16", TypeError, r"Received: '16' of type str"),
    (True, TypeError, r"Received: True of type bool"),
    (16.0, TypeError, r"Received: 16.0 of type float"),
])
def test_bad_block_size_is_refused_by_every_entry_point(bad, error, match):
    model = _model()
    with pytest.raises(error, match=match):
        ks.sparsify(model, 0.5, structure="block", block_size=bad)
    with pytest.raises(error, match=match):
        ks.layers.SparseWrapper(keras.layers.Dense(4), 0.5, structure="block", block_size=bad)
    assert not ks.sparse_wrappers(model)  # the model is left as it was


def test_block_size_needs_block_structure():
    with pytest.raises(ValueError, match="only applies to structure='block'.*block_size=16 with structure='n:m'"):
        ks.sparsify(_model(), 0.5, structure="n:m", block_size=16)
    with pytest.raises(ValueError, match="structure='unstructured'"):
        ks.layers.SparseWrapper(keras.layers.Dense(4), 0.5, block_size=4)


def test_structure_value_checks_its_fields():
    with pytest.raises(ValueError, match="block_size one of \\[4, 16\\]"):
        mm.as_structure(mm.Structure("block", 8))
    with pytest.raises(ValueError, match="kind must be one of"):
        mm.as_structure(mm.Structure("2:4"))
    assert mm.as_structure("block") == mm.Structure("block", 4)
    assert mm.Structure("block", 16).describe() == "1x16 blocks"
    assert (mm.Structure("block", 16).unit, mm.Structure("n:m").unit, mm.Structure().unit) == (16, 1, 1)


def test_1x16_mask_math():
    rng = np.random.default_rng(0)
    s16 = mm.Structure("block", 16)
    mask = mm.structured_random_mask((32, 6), 0.75, rng, s16)
    assert mm.keeps_structure(mask, s16) and mm.keeps_structure(mask, "block")
    assert mask.sum() == mm.num_active(2 * 6, 0.75) * 16
    # A 1x4-block mask is not made of 1x16 blocks.
    assert not mm.keeps_structure(mm.structured_random_mask((32, 6), 0.75, rng, "block"), s16)
    scores = rng.standard_normal((32, 6))
    new, grown = mm.prune_and_grow(mask, np.abs(scores), scores, 32, structure=s16)
    assert mm.keeps_structure(new, s16) and new.sum() == mask.sum()
    assert grown.sum() == 32 and np.all(new[grown > 0] == 1) and np.all(mask[grown > 0] == 0)
    # The two lowest-scored active blocks (by mean |score|) were the ones dropped.
    active_units = mm.to_blocks(mask, "max", 16) > 0
    means = np.where(active_units, mm.to_blocks(np.abs(scores), block_size=16), np.inf)
    lowest = np.argsort(means, axis=None, kind="stable")[:2]
    assert np.all(mm.to_blocks(new - grown, "max", 16).reshape(-1)[lowest] == 0)
    assert mm.unit_entries(np.eye(32, 6, dtype=bool), s16) == 6 * 16


def test_global_drop_counts_with_a_fallback_weight():
    # Weight 0 is made of 1x16 blocks (two blocks: mean 0.1 and 5), weight 1
    # fell back to unstructured (entries 0.2, 0.3, 7). Dropping 17 entries:
    # the 0.1-block (16) and the 0.2 entry, by one global ranking.
    m0, s0 = np.ones((32, 1)), np.concatenate([np.full(16, 0.1), np.full(16, 5.0)])[:, None]
    m1, s1 = np.ones((3, 1)), np.array([[0.2], [0.3], [7.0]])
    structures = [mm.Structure("block", 16), mm.Structure()]
    assert mm.global_drop_counts([m0, m1], [s0, s1], 17, structures) == [16, 1]
    # Not a whole block: weight 0's count is rounded down.
    assert mm.global_drop_counts([m0, m1], [s0 * 0 + 0.1, s1 * 0 + 0.1], 10, structures) == [0, 0]
    with pytest.raises(ValueError, match="one entry per weight: received 1 structures for 2 weights"):
        mm.global_drop_counts([m0, m1], [s0, s1], 17, structures[:1])


def test_sparsify_1x16_falls_back_per_layer_and_survives_saving(tmp_path):
    with pytest.warns(UserWarning) as record:
        sparse = ks.sparsify(_model(), 0.75, distribution="uniform", keep_dense=None, seed=0,
                             structure="block", block_size=16)
    notes = [str(r.message) for r in record if "cannot be made of" in str(r.message)]
    assert len(notes) == 2 and "'stem'" in notes[0] and "'head'" in notes[1], notes
    assert "(3, 3, 3, 16)" in notes[0] and "1x16 blocks" in notes[0]
    expected = {"stem": mm.Structure(), "conv": mm.Structure("block", 16),
                "fc": mm.Structure("block", 16), "head": mm.Structure()}
    for w in ks.sparse_wrappers(sparse):
        structure = w.structure_of("kernel")
        assert structure == expected[w.name], w.name
        mask = w.kernel_mask.numpy()
        assert mm.keeps_structure(mask, structure)
        assert w.get_config()["block_size"] == 16
    rows = {r.layer: r for r in ks.sparsity_report(sparse).rows}
    assert (rows["stem"].structure, rows["conv"].structure) == ("unstructured", "1x16 blocks")
    assert "1x16 blocks" in str(ks.sparsity_report(sparse))
    path = str(tmp_path / "m.keras")
    sparse.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = keras.saving.load_model(path)
    for a, b in zip(ks.sparse_wrappers(sparse), ks.sparse_wrappers(loaded)):
        assert b.block_size == 16 and b.structure_of("kernel") == a.structure_of("kernel")
        np.testing.assert_array_equal(a.kernel_mask.numpy(), b.kernel_mask.numpy())


def test_block_updater_keeps_each_layers_block_size():
    # 1x16 masks are also 1x4 masks: an update must move 1x16 blocks, not 1x4.
    x = np.random.default_rng(0).random((32, 8, 8, 3)).astype("float32")
    y = np.arange(32) % 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sparse = ks.sparsify(_model(), 0.75, distribution="uniform", keep_dense=None, seed=0,
                             structure="block", block_size=16)
    sparse.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {w.name: w.kernel_mask.numpy().copy() for w in ks.sparse_wrappers(sparse)}
    cb = ks.callbacks.RigL(structure="block", update_interval=1, drop_fraction=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sparse.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    changed = 0
    for w in ks.sparse_wrappers(sparse):
        mask = w.kernel_mask.numpy()
        assert mm.keeps_structure(mask, w.structure_of("kernel")), w.name
        assert mask.sum() == before[w.name].sum()
        changed += int(np.any(mask != before[w.name]))
    assert changed >= 2  # the updates really moved blocks
