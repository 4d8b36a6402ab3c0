"""ToST: ghost skips, ghost Swish, LRSI, label smoothing, callback, helper."""

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_sparse  # noqa: E402
from keras_sparse import pruning, tost  # noqa: E402



def tiny_resnet(width=4, classes=3):
    """Stem, one identity block, one downsampling block with projection."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="b1_c1")(x)
    y = keras.layers.BatchNormalization(name="b1_bn1")(y)
    y = keras.layers.ReLU(name="b1_relu1")(y)
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="b1_c2")(y)
    y = keras.layers.BatchNormalization(name="b1_bn2")(y)
    x = keras.layers.Activation("relu", name="b1_out")(keras.layers.Add(name="b1_add")([x, y]))
    y = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu", name="b2_c1")(x)
    y = keras.layers.Conv2D(2 * width, 3, padding="same", name="b2_c2")(y)
    s = keras.layers.Conv2D(2 * width, 1, strides=2, name="b2_proj")(x)
    x = keras.layers.ReLU(name="b2_out")(keras.layers.Add(name="b2_add")([y, s]))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="fc")(x))


def xy(n=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 2)).astype("float32"), rng.integers(0, classes, n)


def structure(model):
    cfg = model.get_config()
    return [(l["name"], l["class_name"], str(l["inbound_nodes"])) for l in cfg["layers"]], cfg["output_layers"]


def _set_all(model, cls, attr, value):
    for layer in tost.ghost_layers(model, cls):
        getattr(layer, attr).assign(value)


# --- ghost skips -----------------------------------------------------------

@pytest.mark.full
def test_identity_ghost_skips_go_around_shape_preserving_units_only():
    model = keras_sparse.sparsify(tiny_resnet(), 0.5, "uniform", keep_dense=None, seed=0)
    ghosted = tost.add_ghost_skips(model, variant="identity")
    names = sorted(g.name for g in tost.ghost_layers(ghosted, tost.GhostGate))
    assert names == ["b1_c1_ghost_gate", "b1_c2_ghost_gate", "b2_c2_ghost_gate"]
    # Default placement: the gate sits between b1_c1 and its BN and adds the conv's input.
    gate = ghosted.get_layer("b1_c1_ghost_gate")
    assert structure(ghosted)[0][[n for n, *_ in structure(ghosted)[0]].index("b1_bn1")][2].count(
        "b1_c1_ghost_gate") == 1
    x = xy()[0]
    sub_in = keras.Model(ghosted.inputs, [ghosted.get_layer("b1_c1").output,
                                          ghosted.get_layer("stem_relu").output, gate.output])
    conv, stem, gated = (np.asarray(t) for t in sub_in(x))
    np.testing.assert_allclose(gated, conv + stem, rtol=1e-5, atol=1e-6)


@pytest.mark.full
def test_identity_ghost_skips_after_unit_placement_spans_bn_and_relu():
    model = keras_sparse.sparsify(tiny_resnet(), 0.5, "uniform", keep_dense=None, seed=0)
    ghosted = tost.add_ghost_skips(model, placement="after_unit", variant="identity")
    gate = ghosted.get_layer("b1_c1_ghost_gate")
    x = xy()[0]
    sub_in = keras.Model(ghosted.inputs, [ghosted.get_layer("b1_relu1").output,
                                          ghosted.get_layer("stem_relu").output, gate.output])
    relu1, stem, gated = (np.asarray(t) for t in sub_in(x))
    np.testing.assert_allclose(gated, relu1 + stem, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="placement"):
        tost.add_ghost_skips(model, placement="inside", variant="identity")
    with pytest.raises(ValueError, match="placement. applies to variant='identity'"):
        tost.add_ghost_skips(model, placement="after_unit")
    with pytest.raises(ValueError, match="variant"):
        tost.add_ghost_skips(model, variant="projection")


def _random_jumps(model, seed=0):
    """Random weights and BN statistics in every ghost jump (visible in inference)."""
    rng = np.random.default_rng(seed)
    for jump in tost.ghost_layers(model, tost.GhostJump):
        jump.conv.kernel.assign(rng.normal(size=jump.conv.kernel.shape).astype("float32"))
        jump.bn.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                             for w in jump.bn.get_weights()])
    return model


@pytest.mark.full
@pytest.mark.parametrize("variant", ["jump", "identity"])
def test_ghost_removal_restores_graph_and_outputs_at_alpha_zero(variant):
    model = keras_sparse.sparsify(tiny_resnet(), 0.5, "uniform", keep_dense=None, seed=0)
    ghosted = _random_jumps(tost.add_ghost_skips(model, variant=variant))
    x = xy()[0]
    assert not np.allclose(ghosted.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ValueError, match="still open"):
        tost.remove_ghost_skips(ghosted)
    _set_all(ghosted, tost.GhostGate, "alpha", 0.0)
    restored = tost.remove_ghost_skips(ghosted)
    assert structure(restored) == structure(model)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), ghosted.predict(x, verbose=0))
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    assert pruning.get_masks(restored).keys() == pruning.get_masks(model).keys()


@pytest.mark.full
@pytest.mark.parametrize("variant, gates", [("jump", 4), ("identity", 3)])
def test_ghost_model_save_load_round_trip(tmp_path, variant, gates):
    ghosted = _random_jumps(tost.add_ghost_skips(keras_sparse.sparsify(
        tiny_resnet(), 0.5, "uniform", keep_dense=None, seed=0), variant=variant))
    _set_all(ghosted, tost.GhostGate, "alpha", 0.37)
    path = str(tmp_path / "g.keras")
    ghosted.save(path)
    loaded = keras.saving.load_model(path)
    x = xy()[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ghosted.predict(x, verbose=0), rtol=1e-6)
    assert [float(g.alpha.numpy()) for g in tost.ghost_layers(loaded, tost.GhostGate)] == pytest.approx([0.37] * gates)
    for a, b in zip(tost.ghost_layers(loaded, tost.GhostJump), tost.ghost_layers(ghosted, tost.GhostJump)):
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v)


@pytest.mark.full
def test_identity_ghost_skips_on_sequential_dense_model():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(5), keras.layers.Dense(2)])
    ghosted = tost.add_ghost_skips(model, variant="identity")
    assert len(tost.ghost_layers(ghosted, tost.GhostGate)) == 2
    # A plain chain has no residual block: no place for the reference's jump.
    with pytest.raises(ValueError, match="no place for a ghost jump"):
        tost.add_ghost_skips(model)


@pytest.mark.full
def test_ghost_skips_bad_models_raise_and_leave_model_unchanged():
    inputs = keras.Input((6,))
    narrowing = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))
    before = structure(narrowing)
    with pytest.raises(ValueError, match=r"no place for a ghost skip.*\(6,\)->\(4,\)"):
        tost.add_ghost_skips(narrowing, variant="identity")
    with pytest.raises(ValueError, match="no place for a ghost jump"):
        tost.add_ghost_skips(narrowing)
    assert structure(narrowing) == before

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    with pytest.raises(TypeError, match="subclassed"):
        tost.add_ghost_skips(Sub())
    with pytest.raises(ValueError, match="already has ghost"):
        tost.add_ghost_skips(tost.add_ghost_skips(tiny_resnet()))


# --- ghost swish -----------------------------------------------------------

@pytest.mark.full
def test_ghost_swish_replaces_every_relu_kind():
    model = tiny_resnet()
    swished = tost.add_ghost_swish(model, beta=1.0)
    names = sorted(l.name for l in tost.ghost_layers(swished, tost.GhostSwish))
    assert names == ["b1_out", "b1_relu1", "b2_c1_ghost_swish", "b2_out", "stem_relu"]
    assert swished.get_layer("b2_c1").get_config()["activation"] == "linear"
    x = xy()[0]
    assert not np.allclose(swished.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-3)


@pytest.mark.full
@pytest.mark.parametrize("beta", [1e2, 1e4])
def test_swish_to_relu_swap_matches_at_large_beta(beta):
    model = keras_sparse.sparsify(tiny_resnet(), 0.5, "uniform", keep_dense=None, seed=0)
    swished = tost.add_ghost_swish(model)
    _set_all(swished, tost.GhostSwish, "beta", beta)
    relu = tost.swap_to_relu(swished)
    x = xy()[0]
    a, b = swished.predict(x, verbose=0), relu.predict(x, verbose=0)
    ref = model.predict(x, verbose=0)
    np.testing.assert_allclose(b, ref, rtol=1e-5, atol=1e-5)  # exact ReLU again
    err = np.max(np.abs(a - b))
    assert err < 50 * 0.2785 / beta and (beta < 1e3 or err < 1e-3)
    assert not tost.ghost_layers(relu, tost.GhostSwish)


@pytest.mark.full
def test_ghost_swish_bound_per_activation():
    layer = tost.GhostSwish(beta=20.0)
    x = np.linspace(-3, 3, 10001).astype("float32")
    gap = np.abs(np.asarray(layer(x)) - np.maximum(x, 0))
    assert gap.max() <= 0.2785 / 20.0 + 1e-6


# --- LRSI ------------------------------------------------------------------

@pytest.mark.full
def test_lrsi_fold_gives_identical_outputs_and_keeps_zeros():
    model = keras_sparse.sparsify(tiny_resnet(), 0.7, "uniform", keep_dense=None, seed=0)
    scaled = tost.add_lrsi(model)
    scales = tost.ghost_layers(scaled, tost.LRSIScale)
    assert len(scales) == len(keras_sparse.sparse_wrappers(model))
    assert all(s.trainable_weights for s in scales)
    x = xy()[0]
    np.testing.assert_allclose(scaled.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(0)
    for s in scales:
        s.scale.assign(rng.uniform(0.5, 2.0))
    folded = tost.fold_lrsi(scaled)
    assert not tost.ghost_layers(folded, tost.LRSIScale)
    np.testing.assert_allclose(folded.predict(x, verbose=0), scaled.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    # The fused activation split out of b2_c1 is fused back: original graph.
    assert folded.get_layer("b2_c1").layer.get_config()["activation"] == "relu"
    assert structure(folded) == structure(model)
    for wrapper in keras_sparse.sparse_wrappers(folded):
        for _, w, m in wrapper.masked_weights:
            assert np.all(w.numpy()[m.numpy() == 0] == 0)


@pytest.mark.full
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_lrsi_fold_of_a_diverged_scale_warns_and_keeps_zeros(bad):
    model = keras_sparse.sparsify(tiny_resnet(), 0.7, "uniform", keep_dense=None, seed=0)
    scaled = tost.add_lrsi(model)
    scales = tost.ghost_layers(scaled, tost.LRSIScale)
    scales[0].scale.assign(bad)
    with pytest.warns(RuntimeWarning, match="not finite"):
        folded = tost.fold_lrsi(scaled)
    zeros = total = 0
    for wrapper in keras_sparse.sparse_wrappers(folded):
        for _, w, m in wrapper.masked_weights:
            assert np.all(w.numpy()[m.numpy() == 0] == 0)
            zeros += int((w.numpy() == 0).sum())
            total += w.numpy().size
    assert zeros / total >= 0.69  # the sparsity survives the fold


@pytest.mark.full
def test_lrsi_scale_trains():
    inputs = keras.Input((4,))
    model = tost.add_lrsi(keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs)))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, 3.0 * x.sum(1, keepdims=True), epochs=3, verbose=0)
    assert float(model.get_layer("d_lrsi").scale.numpy()) != 1.0


# --- label smoothing --------------------------------------------------------

@pytest.mark.full
def test_label_smoothing_variants():
    logits = np.random.default_rng(0).normal(size=(5, 10)).astype("float32")
    labels = np.arange(5)
    onehot = np.eye(10, dtype="float32")[labels]
    keras_ref = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    ours = tost.LabelSmoothingCrossentropy(0.1, "keras", from_logits=True)
    np.testing.assert_allclose(float(ours(labels, logits)), float(keras_ref(onehot, logits)), rtol=1e-6)
    # ToST spreads alpha / (C - 1): equal to Keras with alpha * C / (C - 1).
    tost_loss = tost.LabelSmoothingCrossentropy(0.1, "tost", from_logits=True)
    equiv = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=tost.keras_smoothing_for_tost(0.1, 10))
    np.testing.assert_allclose(float(tost_loss(labels, logits)), float(equiv(onehot, logits)), rtol=1e-6)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = np.full((5, 10), 0.1 / 9)
    target[np.arange(5), labels] = 0.9
    np.testing.assert_allclose(float(tost_loss(labels, logits)), -(target * logp).sum(1).mean(), rtol=1e-5)
    assert abs(float(tost_loss(labels, logits)) - float(keras_ref(onehot, logits))) > 1e-4


# --- serialization -----------------------------------------------------------

@pytest.mark.full
@pytest.mark.parametrize("obj", [
    tost.GhostGate(alpha=0.5), tost.GhostSwish(beta=3.0), tost.LRSIScale(initial_scale=2.0),
    tost.GhostJump(alpha=0.3, strides=(2, 2), data_format="channels_first", initial_weight=1e-3),
    tost.LabelSmoothingCrossentropy(0.2, "tost", from_logits=True),
    tost.ToSTCallback(total_steps=10, ghost_fraction=0.3),
    tost.ToST(lrsi=False, label_smoothing=0.0),
    tost.ToST(ghost_skip="identity", lrsi="joint", lrsi_iterations=7, lrsi_batch_size=32),
])
def test_config_round_trip(obj):
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj)


# --- callback and helper ------------------------------------------------------

@pytest.mark.full
def test_schedule_defaults():
    assert tost.ghost_schedule(0, 100) == (1.0, 1.0)
    alpha, beta = tost.ghost_schedule(25, 100)
    assert alpha == pytest.approx(0.5) and beta == pytest.approx(10.0)
    assert tost.ghost_schedule(50, 100) == (0.0, pytest.approx(100.0))
    assert tost.ghost_schedule(99, 100) == (0.0, pytest.approx(100.0))


@pytest.mark.full
def test_callback_anneals_from_optimizer_iterations():
    model = tost.ToST(lrsi=False).prepare(
        keras_sparse.sparsify(tiny_resnet(), 0.8, "uniform", keep_dense=None, seed=0))
    model.compile(keras.optimizers.SGD(0.01), tost.LabelSmoothingCrossentropy(0.1, from_logits=True))
    x, y = xy()
    cb = tost.ToSTCallback(ghost_fraction=0.5)
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[cb], verbose=0)  # 8 steps
    assert history.history["ghost_alpha"] == pytest.approx([0.0, 0.0])  # logged at epoch end
    for gate in tost.ghost_layers(model, tost.GhostGate):
        assert float(gate.alpha.numpy()) == 0.0
    for s in tost.ghost_layers(model, tost.GhostSwish):
        assert float(s.beta.numpy()) == pytest.approx(100.0)
    assert history.history["masked_sparsity"][-1] == pytest.approx(0.8, abs=0.02)


@pytest.mark.full
def test_tost_end_to_end_returns_original_plain_graph():
    x, y = xy(64)
    base = keras_sparse.sparsify(tiny_resnet(), 0.0, "uniform", keep_dense=None)
    sparse = pruning.snip(base, (x, y), 0.8, loss=keras.losses.SparseCategoricalCrossentropy(True))
    helper = tost.ToST(lrsi_iterations=5, lrsi_batch_size=16)
    model = helper.prepare(sparse, data=(x, y), loss=keras.losses.SparseCategoricalCrossentropy(True))
    assert len(tost.ghost_layers(model, tost.GhostJump)) == 4 and helper.lrsi_scales
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), helper.loss(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[helper.callback()], verbose=0)
    final, report = helper.finalize(model, validation_data=(x, y))
    assert structure(final) == structure(sparse)
    assert abs(report["swap_accuracy_change"]) <= 0.05
    assert report["max_abs_output_change"] < 0.5
    np.testing.assert_allclose(final.predict(x, verbose=0).argmax(-1).mean(),
                               final.predict(x, verbose=0).argmax(-1).mean())
    for wrapper in keras_sparse.sparse_wrappers(final):
        for _, w, m in wrapper.masked_weights:
            assert np.all(w.numpy()[m.numpy() == 0] == 0)
    plain = keras_sparse.strip(final)
    assert not any(isinstance(l, (tost.GhostGate, tost.GhostSwish, tost.LRSIScale)) for l in plain.layers)
    np.testing.assert_allclose(plain.predict(x, verbose=0), final.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.full
def test_each_tweak_switches_alone():
    for kwargs, present in [({"ghost_skip": True, "ghost_swish": False, "lrsi": False}, tost.GhostGate),
                            ({"ghost_skip": False, "ghost_swish": True, "lrsi": False}, tost.GhostSwish),
                            ({"ghost_skip": False, "ghost_swish": False, "lrsi": "joint"}, tost.LRSIScale)]:
        model = tost.ToST(**kwargs).prepare(tiny_resnet())
        found = {cls for cls in (tost.GhostGate, tost.GhostSwish, tost.LRSIScale)
                 if tost.ghost_layers(model, cls)}
        assert found == {present}


@pytest.mark.full
def test_tost_bad_arguments():
    with pytest.raises(ValueError, match="label_smoothing"):
        tost.ToST(label_smoothing=1.0)
    with pytest.raises(ValueError, match="ghost_skip"):
        tost.ToST(ghost_skip="yes")
    with pytest.raises(ValueError, match="lrsi"):
        tost.ToST(lrsi="learned")
    with pytest.raises(ValueError, match="lrsi_iterations"):
        tost.ToST(lrsi_iterations=0)
    with pytest.raises(ValueError, match="ghost_fraction"):
        tost.ToST(ghost_fraction=0.0)
    with pytest.raises(ValueError, match="variant"):
        tost.LabelSmoothingCrossentropy(0.1, variant="other")


# --- nested models ------------------------------------------------------------

def nested_resnet(width=4, classes=3):
    """Stem, a nested Functional residual block, a nested Sequential, a head."""
    block_in = keras.Input((8, 8, width))
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="c1")(block_in)
    y = keras.layers.BatchNormalization(name="bn1")(y)
    y = keras.layers.ReLU(name="relu1")(y)
    y = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="c2")(y)
    block_out = keras.layers.Activation("relu", name="out")(keras.layers.Add(name="add")([block_in, y]))
    block = keras.Model(block_in, block_out, name="block")
    seq = keras.Sequential([keras.layers.Conv2D(width, 3, padding="same", name="s1"),
                            keras.layers.BatchNormalization(name="bn"),
                            keras.layers.ReLU(name="relu")], name="seq")
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(inputs)
    x = seq(block(x))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="fc")(x), name="outer")


def _leaf_names(model, cls):
    return sorted(l.name for l in tost.ghost_layers(model, cls))


def _random_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in keras_sparse.model_utils.iter_leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


@pytest.mark.full
@pytest.mark.parametrize("variant, names", [
    ("jump", ["c1_ghost_jump", "c2_ghost_jump"]),  # residual convs of the block only
    ("identity", ["c1_ghost_gate", "c2_ghost_gate", "s1_ghost_gate"]),
])
def test_nested_ghost_skips_removed_at_alpha_zero_give_identical_outputs(variant, names):
    model = keras_sparse.sparsify(_random_bn(nested_resnet()), 0.5, "uniform", keep_dense=None, seed=0)
    ghosted = _random_jumps(tost.add_ghost_skips(model, variant=variant))
    assert _leaf_names(ghosted, tost.GhostGate) == names
    assert ghosted.get_layer("block").get_layer(names[0]) is not None
    x = xy()[0]
    assert not np.allclose(ghosted.predict(x, verbose=0), model.predict(x, verbose=0))
    _set_all(ghosted, tost.GhostGate, "alpha", 0.0)
    restored = tost.remove_ghost_skips(ghosted)
    assert not tost.ghost_layers(restored, tost.GhostGate)
    assert structure(restored.get_layer("block")) == structure(model.get_layer("block"))
    np.testing.assert_array_equal(restored.predict(x, verbose=0), ghosted.predict(x, verbose=0))
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    assert pruning.get_masks(restored).keys() == pruning.get_masks(model).keys()


@pytest.mark.full
def test_nested_lrsi_fold_gives_identical_outputs():
    model = keras_sparse.sparsify(_random_bn(nested_resnet()), 0.6, "uniform", keep_dense=None, seed=0)
    scaled = tost.add_lrsi(model)
    assert len(tost.ghost_layers(scaled, tost.LRSIScale)) == len(keras_sparse.sparse_wrappers(model)) == 5
    x = xy()[0]
    rng = np.random.default_rng(1)
    for s in tost.ghost_layers(scaled, tost.LRSIScale):
        s.scale.assign(rng.uniform(0.5, 2.0))
    folded = tost.fold_lrsi(scaled)
    assert not tost.ghost_layers(folded, tost.LRSIScale)
    np.testing.assert_allclose(folded.predict(x, verbose=0), scaled.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    assert structure(folded.get_layer("block")) == structure(model.get_layer("block"))
    assert folded.get_layer("block").get_layer("c2").layer.get_config()["activation"] == "relu"
    for wrapper in keras_sparse.sparse_wrappers(folded):
        for _, w, m in wrapper.masked_weights:
            assert np.all(w.numpy()[m.numpy() == 0] == 0)


@pytest.mark.full
def test_nested_ghost_swish_swaps_back_to_relu():
    model = _random_bn(nested_resnet())
    swished = tost.add_ghost_swish(model)
    assert _leaf_names(swished, tost.GhostSwish) == [
        "c2_ghost_swish", "out", "relu", "relu1", "stem_ghost_swish"]
    _set_all(swished, tost.GhostSwish, "beta", 1e4)
    relu = tost.swap_to_relu(swished)
    assert not tost.ghost_layers(relu, tost.GhostSwish)
    assert structure(relu.get_layer("block")) == structure(model.get_layer("block"))
    x = xy()[0]
    np.testing.assert_allclose(relu.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(relu.predict(x, verbose=0) - swished.predict(x, verbose=0))) < 1e-3


@pytest.mark.full
def test_nested_ghost_model_save_load_round_trip(tmp_path):
    model = tost.ToST(lrsi="joint").prepare(keras_sparse.sparsify(nested_resnet(), 0.5, "uniform",
                                                                  keep_dense=None, seed=0))
    _set_all(model, tost.GhostGate, "alpha", 0.37)
    _set_all(model, tost.GhostSwish, "beta", 3.0)
    path = str(tmp_path / "nested.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = xy()[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert [float(g.alpha.numpy()) for g in tost.ghost_layers(loaded, tost.GhostGate)] == pytest.approx([0.37] * 2)
    assert len(tost.ghost_layers(loaded, tost.LRSIScale)) == 5


@pytest.mark.full
def test_nested_subclassed_model_raises_naming_it_before_any_change():
    class Block(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")

        def call(self, x):
            return self.conv(x)

    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(inputs)
    model = keras.Model(inputs, Block(name="custom_block")(x), name="outer")
    before = structure(model)
    for fn in (tost.add_ghost_skips, tost.add_ghost_swish, tost.add_lrsi):
        with pytest.raises(ValueError, match=r"nested model 'custom_block'.*Functional and Sequential"):
            fn(model)
    assert structure(model) == before


# --- ghost jumps (the reference's ghost skips) ----------------------------------

@pytest.mark.full
def test_ghost_jumps_are_1x1_conv_bn_on_both_convs_of_every_block_including_stride_2():
    model = keras_sparse.sparsify(tiny_resnet(), 0.5, "uniform", keep_dense=None, seed=0)
    jumped = tost.ToST(ghost_swish=False, lrsi=False).prepare(model)
    jumps = {j.name: j for j in tost.ghost_layers(jumped, tost.GhostJump)}
    # Both convs of the identity block and of the downsampling block; not the
    # stem, the projection shortcut or the classifier.
    assert sorted(jumps) == ["b1_c1_ghost_jump", "b1_c2_ghost_jump", "b2_c1_ghost_jump", "b2_c2_ghost_jump"]
    for name, jump in jumps.items():
        conv = jumped.get_layer(name[: -len("_ghost_jump")]).layer
        assert isinstance(jump.conv, keras.layers.Conv2D) and jump.conv.kernel_size == (1, 1)
        assert jump.conv.strides == conv.strides and not jump.conv.use_bias
        assert jump.conv.filters == conv.filters
        np.testing.assert_array_equal(jump.conv.kernel.numpy(), np.full(jump.conv.kernel.shape, 1e-4, "float32"))
        assert isinstance(jump.bn, keras.layers.BatchNormalization)
        np.testing.assert_array_equal(jump.bn.gamma.numpy(), 1.0)  # BN at its defaults
        assert float(jump.alpha.numpy()) == 1.0 and not jump.alpha.trainable
        assert not isinstance(jump, keras_sparse.layers.SparseWrapper)  # jumps are dense
    assert jumps["b2_c1_ghost_jump"].conv.strides == (2, 2)
    # The jump is added after the conv's BN and before the activation.
    cfg = {e["name"]: str(e["inbound_nodes"]) for e in jumped.get_config()["layers"]}
    assert "'b1_bn1'" in cfg["b1_c1_ghost_jump"] and "'stem_relu'" in cfg["b1_c1_ghost_jump"]
    assert "'b1_c1_ghost_jump'" in cfg["b1_relu1"]
    assert "'b2_c1_ghost_jump'" in cfg["b2_c1_act"]  # fused relu split out, after the jump
    assert "'b1_out'" in cfg["b2_c1_ghost_jump"]


@pytest.mark.full
def test_ghost_jump_adds_alpha_times_bn_of_the_1x1_conv():
    model = keras_sparse.sparsify(tiny_resnet(), 0.5, "uniform", keep_dense=None, seed=0)
    jumped = _random_jumps(tost.add_ghost_skips(model, alpha=0.37))
    jump = jumped.get_layer("b2_c1_ghost_jump")
    x = xy()[0]
    probe = keras.Model(jumped.inputs, [jumped.get_layer("b2_c1").output,
                                        jumped.get_layer("b1_out").output, jump.output])
    main, block_in, out = (np.asarray(t) for t in probe(x))
    w = jump.conv.kernel.numpy()[0, 0]  # (in, out) of the 1x1 conv
    conv = np.einsum("nhwc,cd->nhwd", block_in[:, ::2, ::2, :], w)  # stride 2, "same"
    gamma, beta, mean, var = jump.bn.get_weights()
    bn = gamma * (conv - mean) / np.sqrt(var + 1e-5) + beta
    np.testing.assert_allclose(out, main + 0.37 * bn, rtol=1e-4, atol=1e-4)


@pytest.mark.full
def test_finalize_removes_the_jumps_and_equals_the_model_without_their_contribution():
    x, y = xy(32)
    sparse = keras_sparse.sparsify(tiny_resnet(), 0.6, "uniform", keep_dense=None, seed=0)
    helper = tost.ToST(ghost_swish=False, lrsi=False)
    model = helper.prepare(sparse)
    model.compile(keras.optimizers.SGD(0.05), helper.loss(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trains the jumps at alpha = 1
    _random_jumps(model)
    _set_all(model, tost.GhostGate, "alpha", 0.37)
    with pytest.raises(ValueError, match="still open"):
        helper.finalize(model)
    final, _ = helper.finalize(model, force=True)
    with_jumps = model.predict(x, verbose=0)
    _set_all(model, tost.GhostGate, "alpha", 0.0)  # the jump contribution removed
    np.testing.assert_array_equal(final.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not np.allclose(final.predict(x, verbose=0), with_jumps, atol=1e-3)
    assert structure(final) == structure(sparse)  # removed, not folded: original graph
    assert final.get_layer("b2_c1").layer.get_config()["activation"] == "relu"
    assert not tost.ghost_layers(final, tost.GhostGate)
    assert len(final.weights) == len(sparse.weights)


@pytest.mark.full
def test_callback_anneals_jumps_then_finalize_is_exact():
    x, y = xy(32)
    sparse = keras_sparse.sparsify(tiny_resnet(), 0.6, "uniform", keep_dense=None, seed=0)
    helper = tost.ToST(ghost_swish=False, lrsi=False, ghost_fraction=0.5)
    model = helper.prepare(sparse)
    model.compile(keras.optimizers.SGD(0.05), helper.loss(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[helper.callback()], verbose=0)
    assert [float(j.alpha.numpy()) for j in tost.ghost_layers(model, tost.GhostJump)] == [0.0] * 4
    final, _ = helper.finalize(model)
    np.testing.assert_array_equal(final.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.full
def test_nested_ghost_jumps_live_in_the_sub_model_and_survive_save_load(tmp_path):
    model = keras_sparse.sparsify(nested_resnet(), 0.5, "uniform", keep_dense=None, seed=0)
    jumped = _random_jumps(tost.add_ghost_skips(model, alpha=0.5))
    block = jumped.get_layer("block")
    assert sorted(l.name for l in block.layers if isinstance(l, tost.GhostJump)) == [
        "c1_ghost_jump", "c2_ghost_jump"]
    path = str(tmp_path / "jumps.keras")
    jumped.save(path)
    loaded = keras.saving.load_model(path)
    x = xy()[0]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), jumped.predict(x, verbose=0), rtol=1e-6)
    _set_all(loaded, tost.GhostGate, "alpha", 0.0)
    restored = tost.remove_ghost_skips(loaded)
    assert structure(restored.get_layer("block")) == structure(model.get_layer("block"))
    np.testing.assert_allclose(restored.predict(x, verbose=0), loaded.predict(x, verbose=0), rtol=1e-6)


def test_ghost_jumps_on_cifar_resnet_cover_every_block_conv():
    model = keras_sparse.models.cifar_resnet(8, input_shape=(8, 8, 3), width=4)
    jumped = tost.add_ghost_skips(model)
    names = sorted(j.name for j in tost.ghost_layers(jumped, tost.GhostJump))
    convs = sorted(f"{l.name}_ghost_jump" for l in model.layers
                   if isinstance(l, keras.layers.Conv2D) and "block" in l.name and "shortcut" not in l.name)
    assert names == convs and len(names) == 6  # 3 blocks x 2 convs, 2 of them stride 2
    assert sum(j.strides == (2, 2) for j in tost.ghost_layers(jumped, tost.GhostJump)) == 2


def test_ghost_jump_rejects_bad_arguments():
    with pytest.raises(ValueError, match="data_format"):
        tost.GhostJump(data_format="nhwc")
    with pytest.raises(ValueError, match="strides"):
        tost.GhostJump(strides=0)
    with pytest.raises(ValueError, match="does not match"):
        tost.GhostJump(strides=1).build([(None, 4, 4, 3), (None, 8, 8, 2)])
