"""Hypothesis sweep of the public API beyond `sparsify` (fuzzed in test_keras_sparse_faults.py).

Every call either works with the invariants holding (binary masks, exact
sparsity, pruned weights exactly 0) or raises a ValueError/TypeError whose
message says what was received or what is accepted, never another exception
type from deep in TensorFlow/NumPy, and never leaves a half-modified model
(masks and weights are compared before and after a failing call).

The default run keeps example counts small (4-30 per test); `-m slow` runs
more (30-120, the `slow=` of each `_both`). `FUZZ_COUNTS` records how many examples ran and how they ended
(written to $KERAS_SPARSE_FUZZ_COUNTS when set; benchmarks/reliability.py
reads it).
"""

import json
import math
import os
import pathlib

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_sparse
from keras_sparse.masks import num_active
from testing import all_masked_entries_zero

FAST_EXAMPLES = 25
SLOW_EXAMPLES = 120
FUZZ_COUNTS: dict[str, dict[str, int]] = {}

_SETTINGS = dict(deadline=None, derandomize=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                        HealthCheck.filter_too_much])


def _both(test, fast=FAST_EXAMPLES, slow=SLOW_EXAMPLES, **strategies):
    """A fast variant (default run) and a slow one with more examples.

    `given` is applied twice so that each variant carries its own settings.
    """
    fast_test = settings(max_examples=fast, **_SETTINGS)(given(**strategies)(test))
    slow_test = pytest.mark.slow(
        settings(max_examples=slow, **_SETTINGS)(given(**strategies)(test)))
    return fast_test, slow_test


@pytest.fixture(scope="module", autouse=True)
def _write_fuzz_counts():
    """With KERAS_SPARSE_FUZZ_COUNTS=path, writes `FUZZ_COUNTS` there (reliability table)."""
    yield
    path = os.environ.get("KERAS_SPARSE_FUZZ_COUNTS")
    if path:
        with open(path, "w") as f:
            json.dump(FUZZ_COUNTS, f, indent=1, sort_keys=True)


def _count(name, outcome):
    FUZZ_COUNTS.setdefault(name, {"ok": 0, "ValueError": 0, "TypeError": 0})[outcome] += 1


def _check_clear(err, name):
    """A plain ValueError/TypeError raised on purpose by keras_sparse, that says
    what was received or what is accepted (not one bubbling up from TF/NumPy)."""
    assert type(err) in (ValueError, TypeError), f"{type(err).__name__}: {err}"
    message = str(err)
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    origin = tb.tb_frame.f_code.co_filename
    # keras_sparse's own checks, or the model's own input check (data of the
    # wrong shape passed to a pruning method), which Keras words clearly.
    assert "keras_sparse" in origin or origin.endswith("layers/input_spec.py"), (
        f"raised in {origin}: {message}")
    assert any(w in message for w in ("Received", "ccepted", "`", "'")), message
    _count(name, type(err).__name__)


# Values that are wrong for most numeric arguments.
JUNK = st.sampled_from([None, True, "0.5", [0.5], float("nan"), float("inf"), -1, -0.5, 0, 0.0,
                        1, 1.0, 1.5, 10**9])
FRACTIONS = st.one_of(st.floats(0.01, 0.99), JUNK)
STEPS = st.one_of(st.integers(0, 40), st.floats(0.05, 1.0), JUNK)
STRUCTURES = st.sampled_from(["unstructured", "block", "n:m", "2:4", "bogus", None, 4])


def _state(model):
    """Masks and weights, by position, for before/after comparison."""
    masks = {}
    for wrapper in keras_sparse.sparse_wrappers(model):
        for name, _, mask in wrapper.masked_weights:
            masks[f"{wrapper.name}/{name}"] = mask.numpy().copy()
    return masks, [v.numpy().copy() for v in model.weights]


def _assert_unchanged(before, after):
    masks_a, weights_a = before
    masks_b, weights_b = after
    assert masks_a.keys() == masks_b.keys()
    for key in masks_a:
        np.testing.assert_array_equal(masks_a[key], masks_b[key], err_msg=key)
    assert len(weights_a) == len(weights_b)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)


def _mlp(sparsity=0.75, structure="unstructured", seed=0, width=8):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(width, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(width, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, outputs)
    if sparsity is None:
        return model
    return keras_sparse.sparsify(model, sparsity, distribution="uniform", keep_dense=None,
                                 seed=seed, structure=structure)


def _targets(model):
    return [
        keras_sparse.algorithms.Target(f"{w.name}/{n}", weight, mask, w.sparsity_of(n))
        for w in keras_sparse.sparse_wrappers(model)
        for n, weight, mask in w.masked_weights
    ]


def _masks_binary_and_zero(model):
    for wrapper in keras_sparse.sparse_wrappers(model):
        for _, _, mask in wrapper.masked_weights:
            m = mask.numpy()
            assert np.all((m == 0) | (m == 1))
    assert all_masked_entries_zero(model)


# ---------------------------------------------------------------- DST
_CONSERVING = ("set", "rigl", "rigl_itop", "mest", "neurrev", "deep_r")
_GRADUAL = ("gmp", "granet", "granet_st")
_CALLBACK_NAMES = {"set": "SET", "rigl": "RigL", "mest": "MEST", "neurrev": "NeurRev",
                   "dsr": "DSR", "deep_r": "DeepR", "gmp": "GMP", "granet": "GraNet",
                   "granet_st": "GraNetST", "chase": "Chase", "rigl_itop": "RigLITOP"}


@st.composite
def dst_configs(draw):
    name = draw(st.sampled_from(keras_sparse.algorithms.registered_names()))
    config = {}
    for key, values in (("update_interval", st.one_of(st.integers(1, 12), JUNK)),
                        ("start_step", STEPS), ("stop_step", STEPS),
                        ("drop_fraction", FRACTIONS),
                        ("drop_fraction_decay", st.sampled_from(
                            ["cosine", "constant", "stagewise", "linear", None])),
                        ("structure", STRUCTURES),
                        ("seed", st.one_of(st.integers(0, 2**31 - 1), JUNK))):
        if draw(st.booleans()):
            config[key] = draw(values)
    if name == "neurrev" and draw(st.booleans()):
        config["p"] = draw(st.one_of(st.floats(0.001, 0.9), JUNK))
    if name in _GRADUAL and draw(st.booleans()):
        config["sparsity"] = draw(FRACTIONS)
    if name in _GRADUAL and draw(st.booleans()):
        config["distribution"] = draw(st.sampled_from(["global", "uniform", "er", "erk", "x", 3]))
    if name in _GRADUAL:
        config.pop("drop_fraction", None)
        config.pop("drop_fraction_decay", None)
    if name == "mest" and draw(st.booleans()):
        config["gradient_weight"] = draw(st.one_of(st.floats(0, 3), JUNK))
    if name == "dsr" and draw(st.booleans()):
        config["tolerance"] = draw(FRACTIONS)
    if name == "deep_r" and draw(st.booleans()):
        config["temperature"] = draw(st.one_of(st.floats(0, 1), JUNK))
    start = draw(st.sampled_from([0.0, 0.5, 0.75, 0.9]))
    structure = config.get("structure") if config.get("structure") in ("block", "n:m") else "unstructured"
    if draw(st.integers(0, 4)) == 0:  # sometimes a model whose masks do not fit
        structure = "unstructured"
    total = draw(st.one_of(st.integers(1, 40), st.none()))
    return name, config, start, structure, total


def _algorithm_fuzz(case):
    name, config, start, structure, total = case
    keras.utils.clear_session()
    # Construction: the registry and the named callback agree.
    try:
        algo = keras_sparse.algorithms.get({"class_name": name, "config": config})
    except (ValueError, TypeError) as err:
        _check_clear(err, "dst_constructors")
        with pytest.raises(type(err)):
            getattr(keras_sparse.callbacks, _CALLBACK_NAMES[name])(**config)
        return
    _count("dst_constructors", "ok")
    callback = getattr(keras_sparse.callbacks, _CALLBACK_NAMES[name])(**config)
    assert callback.algorithm.get_config() == algo.get_config()
    assert type(algo).from_config(algo.get_config()).get_config() == algo.get_config()
    model = _mlp(start, structure=structure)
    targets = _targets(model)
    before = _state(model)
    try:
        algo.setup(targets, total)
    except (ValueError, TypeError) as err:
        _check_clear(err, "dst_setup")
        _assert_unchanged(before, _state(model))
        return
    _count("dst_setup", "ok")
    counts0 = [int(t.mask.numpy().sum()) for t in targets]
    sizes = [int(t.mask.numpy().size) for t in targets]
    rng = np.random.default_rng(0)
    last = None
    horizon = total if total is not None else 40
    for step in range(1, horizon + 1):
        if not algo.schedule.is_update_step(step, total):
            continue
        for t in targets:  # a training step happened: weights move
            t.weight.assign(t.weight.numpy() + 0.01 * rng.normal(size=t.weight.shape).astype("float32")
                            * t.mask.numpy())
        grads = [rng.normal(size=t.weight.shape).astype("float32") for t in targets]
        stats = algo.update(step, targets, grads if algo.needs_gradients else None)
        last = step
        _masks_binary_and_zero(model)
        counts = [int(t.mask.numpy().sum()) for t in targets]
        assert all(c >= 1 for c in counts), counts  # no layer disconnected
        if name in _CONSERVING:
            assert counts == counts0, (counts, counts0)
        elif name in ("dsr", "chase"):  # reallocation across layers
            assert sum(counts) == sum(counts0)
        for key, s in stats.items():
            assert 0.0 <= s["sparsity"] < 1.0 and 0.0 <= s["itop_rate"] <= 1.0, (key, s)
    if name in _GRADUAL and last is not None and last == algo._end:
        counts = [int(t.mask.numpy().sum()) for t in targets]
        if algo.distribution == "global":
            assert sum(counts) == num_active(sum(sizes), algo.sparsity) or structure != "unstructured"
    _count("dst_updates", "ok")


test_dst_algorithms_fuzz, test_dst_algorithms_fuzz_slow = _both(_algorithm_fuzz, case=dst_configs())


@st.composite
def fit_cases(draw):
    name = draw(st.sampled_from(keras_sparse.algorithms.registered_names()))
    config = {"update_interval": draw(st.integers(1, 4)),
              "stop_step": draw(st.one_of(st.integers(0, 12), st.floats(0.1, 1.0))),
              "seed": draw(st.integers(0, 100))}
    if name not in _GRADUAL:
        config["drop_fraction"] = draw(st.floats(0.05, 0.95))
    else:
        config["sparsity"] = draw(st.floats(0.5, 0.95))
    if name == "neurrev" and draw(st.booleans()):
        config["p"] = draw(st.floats(0.01, 0.9))
    total = draw(st.sampled_from([None, 3, 6, 100]))
    return name, config, total


def _fit_fuzz(case):
    """The callback inside a real `fit`: works, or fails at on_train_begin untouched."""
    name, config, total = case
    keras.utils.clear_session()
    start = 0.0 if name in ("gmp", "granet") else 0.75
    model = _mlp(start)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x = np.random.default_rng(1).normal(size=(24, 8)).astype("float32")
    y = np.random.default_rng(2).normal(size=(24, 4)).astype("float32")
    before = _state(model)
    try:  # e.g. stop_step=0 with the default start_step=0 is refused at construction
        callback = keras_sparse.callbacks.DynamicSparseTraining(
            {"class_name": name, "config": config}, total_steps=total)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    except (ValueError, TypeError) as err:
        _check_clear(err, "dst_fit")
        _assert_unchanged(before, _state(model))
        assert int(model.optimizer.iterations.numpy()) == 0  # failed before training
        return
    _count("dst_fit", "ok")
    _masks_binary_and_zero(model)
    assert "apply" not in vars(model.optimizer)  # gradient capture uninstalled


test_dst_callback_fit_fuzz, test_dst_callback_fit_fuzz_slow = _both(
    _fit_fuzz, fast=4, slow=30, case=fit_cases())


# ---------------------------------------------------------- allocation
SHAPES = st.dictionaries(
    st.text("abcdef/", min_size=1, max_size=4),
    st.lists(st.integers(0, 40), min_size=1, max_size=4).map(tuple),
    max_size=5)


def _allocation_fuzz(shapes, sparsity, distribution, power):
    try:
        out = keras_sparse.allocation.allocate(shapes, sparsity, distribution, power)
    except (ValueError, TypeError) as err:
        _check_clear(err, "allocation")
        return
    _count("allocation", "ok")
    assert set(out) == set(shapes)
    sizes = {k: math.prod(v) for k, v in shapes.items()}
    for value in out.values():
        assert 0.0 <= value < 1.0 and math.isfinite(value)
    total = sum(sizes.values())
    zeros = sum(out[k] * sizes[k] for k in shapes)
    assert abs(zeros / total - float(sparsity)) < 1e-6, (out, sparsity)


test_allocation_fuzz, test_allocation_fuzz_slow = _both(
    _allocation_fuzz, fast=30, shapes=SHAPES, sparsity=FRACTIONS,
    distribution=st.sampled_from(["uniform", "er", "erk", "ERK", "bogus", 3, None]),
    power=st.one_of(st.floats(0.05, 3.0), JUNK))


# ------------------------------------------------------ pruning at init
@st.composite
def pai_cases(draw):
    method = draw(st.sampled_from(["snip", "grasp", "synflow", "random", "SNIP", "magnitude", 3]))
    kwargs = {}
    if draw(st.booleans()):
        kwargs["scope"] = draw(st.sampled_from(["global", "layer", "LAYER", "bogus", None]))
    if draw(st.booleans()):
        kwargs["distribution"] = draw(st.one_of(
            st.sampled_from(["uniform", "er", "erk", "bogus", 3]),
            st.dictionaries(st.sampled_from(["fc1/kernel", "fc2/kernel", "logits/kernel", "nope"]),
                            FRACTIONS, max_size=3)))
    if method in ("snip", "grasp", "SNIP"):
        kwargs["num_batches"] = draw(st.sampled_from([None, 1, 2, 0, -1, 1.5, True]))
        data = draw(st.sampled_from(["tuple", "list", "dataset", "empty", "none", "wrong_shape",
                                     "str"]))
    else:
        data = draw(st.sampled_from(["none", "none", "tuple"]))
    if method == "grasp" and draw(st.booleans()):
        kwargs["temperature"] = draw(st.one_of(st.floats(0.5, 300), JUNK))
    if method == "synflow":
        kwargs["iterations"] = draw(st.one_of(st.integers(1, 4), JUNK))
    if method == "random" and draw(st.booleans()):
        kwargs["seed"] = draw(st.one_of(st.integers(0, 100), JUNK))
    sparsity = draw(FRACTIONS)
    dense = draw(st.booleans())
    return method, sparsity, data, kwargs, dense


def _batches(kind):
    import tensorflow as tf

    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 8)).astype("float32")
    y = rng.integers(0, 4, size=(16,)).astype("int32")
    return {"tuple": (x, y), "list": [(x[:8], y[:8]), (x[8:], y[8:])],
            "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
            "empty": [], "none": None, "wrong_shape": (x[:, :5], y), "str": "data"}[kind]


def _pai_fuzz(case):
    method, sparsity, data, kwargs, dense = case
    keras.utils.clear_session()
    model = _mlp(None if dense else 0.5)
    before = _state(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    needs_loss = isinstance(method, str) and method.lower() in ("snip", "grasp")
    try:
        out = keras_sparse.pruning.prune_at_init(
            model, method, sparsity, data=_batches(data), loss=loss if needs_loss else None, **kwargs)
    except (ValueError, TypeError) as err:
        _check_clear(err, "pruning_at_init")
        _assert_unchanged(before, _state(model))
        return
    _count("pruning_at_init", "ok")
    if dense:
        _assert_unchanged(before, _state(model))  # the input is never touched
    else:
        assert out is model
    _masks_binary_and_zero(out)
    masks = keras_sparse.pruning.get_masks(out)
    total = sum(m.size for m in masks.values())
    active = sum(int(m.sum()) for m in masks.values())
    scope = str(kwargs.get("scope") or ("layer" if method == "random" else "global")).lower()
    distribution = kwargs.get("distribution", "erk")
    if scope == "global":
        assert active == num_active(total, float(sparsity)) or not dense, (active, total)
    elif not isinstance(distribution, dict) and dense:
        assert abs((1 - active / total) - float(sparsity)) < 0.02 + 3 / total


test_pruning_at_init_fuzz, test_pruning_at_init_fuzz_slow = _both(_pai_fuzz, fast=20, slow=80, case=pai_cases())


# ------------------------------------------------------------ mask files
@st.composite
def mask_cases(draw):
    keys = ["fc1/kernel", "fc2/kernel", "logits/kernel"]
    shapes = {"fc1/kernel": (8, 8), "fc2/kernel": (8, 8), "logits/kernel": (8, 4)}
    valid = draw(st.booleans())  # half the cases: the right keys and shapes
    chosen = keys if valid else draw(st.lists(
        st.sampled_from(keys + ["nope/kernel", "fc1/bias"]), unique=True, max_size=4))
    masks = {}
    for key in chosen:
        shape = shapes.get(key, (3,))
        if not valid and draw(st.integers(0, 3)) == 0:
            shape = draw(st.sampled_from([(8,), (4, 8), (8, 8, 1), (0, 8), ()]))
        kind = draw(st.sampled_from(["binary", "binary", "binary", "binary", "half", "nan", "bool",
                                     "int"]))
        rng = np.random.default_rng(len(masks))
        value = (rng.random(shape) > 0.5).astype("float32")
        if kind == "half" and value.size:
            value.flat[0] = 0.5
        elif kind == "nan" and value.size:
            value.flat[0] = np.nan
        elif kind == "bool":
            value = value.astype(bool)
        elif kind == "int":
            value = value.astype(np.int64)
        masks[key] = value
    match = draw(st.sampled_from(["name", "order", "bogus", None]))
    strict = draw(st.sampled_from([True, False]))
    via_file = draw(st.booleans())
    dense = draw(st.booleans())
    return masks, match, strict, via_file, dense


def _masks_fuzz(case):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _masks_fuzz_in(case, pathlib.Path(tmp))


def _masks_fuzz_in(case, tmp_path):
    masks, match, strict, via_file, dense = case
    keras.utils.clear_session()
    model = _mlp(None if dense else 0.5)
    before = _state(model)
    source = masks
    if via_file:
        source = str(tmp_path / "m.npz")
        np.savez(source, **masks)
    try:
        out = keras_sparse.pruning.apply_masks(model, source, match=match, strict=strict)
    except (ValueError, TypeError) as err:
        _check_clear(err, "mask_io")
        _assert_unchanged(before, _state(model))
        return
    _count("mask_io", "ok")
    _masks_binary_and_zero(out)
    got = keras_sparse.pruning.get_masks(out)
    if match == "name":
        for key, value in masks.items():
            np.testing.assert_array_equal(got[key], np.asarray(value, np.float32))
    # round trip through a file
    path = keras_sparse.pruning.save_masks(out, tmp_path / "round")
    loaded = keras_sparse.pruning.load_masks(path)
    assert loaded.keys() == got.keys()
    for key in got:
        np.testing.assert_array_equal(loaded[key], got[key])


test_mask_files_fuzz, test_mask_files_fuzz_slow = _both(_masks_fuzz, case=mask_cases())


# ---------------------------------------------------------------- ToST
LAYER_KINDS = ["dense", "dense_relu", "relu", "act_relu", "bn", "dropout", "add", "shared",
               "nested", "branch_out", "conv1d", "leaky", "act_tanh"]


@st.composite
def graphs(draw):
    return (draw(st.lists(st.sampled_from(LAYER_KINDS), min_size=0, max_size=5)),
            draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from([0.0, 0.5])))


def _odd_model(kinds, sparse, sequential):
    """A small model built from `kinds`; Sequential when every kind allows it."""
    width = 6
    simple = {"dense": lambda: keras.layers.Dense(width),
              "dense_relu": lambda: keras.layers.Dense(width, activation="relu"),
              "relu": lambda: keras.layers.ReLU(),
              "act_relu": lambda: keras.layers.Activation("relu"),
              "bn": lambda: keras.layers.BatchNormalization(),
              "dropout": lambda: keras.layers.Dropout(0.0),
              "leaky": lambda: keras.layers.LeakyReLU(),
              "act_tanh": lambda: keras.layers.Activation("tanh"),
              "conv1d": None}
    if sequential and all(k in simple and k != "conv1d" for k in kinds):
        model = keras.Sequential([keras.Input((width,))] + [simple[k]() for k in kinds]
                                 + [keras.layers.Dense(3)])
    else:
        inputs = keras.Input((width,))
        x = inputs
        outputs = []
        shared = keras.layers.Dense(width, name="shared_fc")
        for kind in kinds:
            if kind in simple and kind != "conv1d":
                x = simple[kind]()(x)
            elif kind == "conv1d":
                x = keras.layers.Reshape((width, 1))(x)
                x = keras.layers.Conv1D(1, 3, padding="same", activation="relu")(x)
                x = keras.layers.Flatten()(x)
            elif kind == "add":
                x = keras.layers.Add()([x, keras.layers.Dense(width, activation="relu")(x)])
            elif kind == "shared":
                x = shared(shared(x))
            elif kind == "nested":
                inner_in = keras.Input((width,))
                inner = keras.Model(inner_in, keras.layers.Dense(width, activation="relu")(inner_in))
                x = inner(x)
            elif kind == "branch_out":
                outputs.append(keras.layers.Dense(2)(x))
        outputs.append(keras.layers.Dense(3)(x))
        model = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0])
    if sparse:
        try:
            model = keras_sparse.sparsify(model, 0.5, distribution="uniform", keep_dense=None, seed=0)
        except (ValueError, TypeError) as err:  # e.g. shared/nested layers
            _check_clear(err, "tost_sparsify")
    return model


def _outputs(model, x):
    return [np.asarray(o) for o in keras.tree.flatten(model(x, training=False))]


def _same_outputs(a, b, x, atol=1e-5):
    for p, q in zip(_outputs(a, x), _outputs(b, x)):
        np.testing.assert_allclose(p, q, atol=atol)


def _tost_call(name, fn, model):
    before = [w.numpy().copy() for w in model.weights]
    try:
        out = fn(model)
    except (ValueError, TypeError) as err:
        _check_clear(err, "tost")
        out = None
    else:
        _count("tost", "ok")
    after = [w.numpy() for w in model.weights]
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # transforms never touch their input
    return out


def _tost_fuzz(case):
    kinds, sparse, sequential, alpha = case
    keras.utils.clear_session()
    model = _odd_model(kinds, sparse, sequential)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    tost = keras_sparse.tost
    ghost = _tost_call("add_ghost_skips", lambda m: tost.add_ghost_skips(m, alpha=alpha), model)
    if ghost is not None:
        if alpha == 0.0:
            _same_outputs(model, ghost, x)
        removed = _tost_call("remove_ghost_skips", tost.remove_ghost_skips, ghost)
        if alpha == 0.0:
            assert removed is not None
            _same_outputs(model, removed, x)
        elif removed is None:  # open gates refuse; force works
            removed = tost.remove_ghost_skips(ghost, force=True)
        assert not tost.ghost_layers(removed, tost.GhostGate)
    swish = _tost_call("add_ghost_swish", tost.add_ghost_swish, model)
    if swish is not None:
        back = _tost_call("swap_to_relu", tost.swap_to_relu, swish)
        assert back is not None
        _same_outputs(model, back, x)
    lrsi = _tost_call("add_lrsi", tost.add_lrsi, model)
    if lrsi is not None:
        _same_outputs(model, lrsi, x)  # scale 1
        for layer in tost.ghost_layers(lrsi, tost.LRSIScale):
            layer.scale.assign(1.5)
        folded = _tost_call("fold_lrsi", tost.fold_lrsi, lrsi)
        assert folded is not None
        _same_outputs(lrsi, folded, x, atol=1e-4)
        if keras_sparse.sparse_wrappers(folded):
            assert all_masked_entries_zero(folded)
    # Helpers refuse models without their layers with a clear error.
    for fn in (tost.remove_ghost_skips, tost.swap_to_relu, tost.fold_lrsi):
        _tost_call(fn.__name__, fn, model)


test_tost_transforms_fuzz, test_tost_transforms_fuzz_slow = _both(_tost_fuzz, fast=8, slow=60, case=graphs())


# --------------------------------------------------------- report/summary
def _report_fuzz(sparsity, width, embed, nonfinite, bad):
    keras.utils.clear_session()
    inputs = keras.Input((5,), dtype="int32" if embed else "float32")
    x = keras.layers.Embedding(7, width, name="emb")(inputs) if embed else keras.layers.Reshape((5, 1))(inputs)
    x = keras.layers.Conv1D(width, 2, name="conv")(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x))
    dense = keras.Model(inputs, outputs)
    model = keras_sparse.sparsify(dense, sparsity, distribution="uniform", keep_dense=None, seed=1)
    if nonfinite:
        wrapper = keras_sparse.sparse_wrappers(model)[-1]
        _, kernel, _ = wrapper.masked_weights[0]
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))
        wrapper.apply_masks()
    lines = []
    report = keras_sparse.summary(model, print_fn=lines.append)
    _count("report", "ok")
    assert lines and str(report) == lines[0]
    masks = keras_sparse.pruning.get_masks(model)
    assert report.total_params == sum(m.size for m in masks.values())
    assert report.total_nonzeros <= sum(int(m.sum()) for m in masks.values())
    assert 0.0 <= report.total_sparsity <= 1.0
    json.dumps(report.to_dict())
    target = {"dense_model": dense, "layer": keras.layers.Dense(2)}.get(bad, bad)
    try:
        keras_sparse.sparsity_report(target)
    except (ValueError, TypeError) as err:
        _check_clear(err, "report")
    else:
        raise AssertionError(f"sparsity_report accepted {target!r}")


test_report_fuzz, test_report_fuzz_slow = _both(
    _report_fuzz, fast=10, slow=60, sparsity=st.floats(0.0, 0.99), width=st.integers(1, 9),
    embed=st.booleans(), nonfinite=st.booleans(),
    bad=st.sampled_from([None, "model", 3, "dense_model", "layer"]))
