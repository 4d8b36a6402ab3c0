"""Bad input and faults: fuzzed public API, NaN/Inf, tampered .keras files, XLA/AMP."""

import json
import zipfile

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_sparse
from testing import all_masked_entries_zero

FUZZ_EXAMPLES = 30
FUZZ_STATS = {"ok": 0, "value_error": 0, "type_error": 0}

LAYERS = {
    "dense": lambda n: keras.layers.Dense(n),
    "conv1d": lambda n: keras.layers.Conv1D(n, 2, padding="same"),
    "sepconv1d": lambda n: keras.layers.SeparableConv1D(n, 2, padding="same"),
    "dwconv1d": lambda n: keras.layers.DepthwiseConv1D(2, padding="same"),
}

bad_numbers = st.sampled_from([-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", None, True, [0.5]])
sparsities = st.one_of(st.floats(0.0, 0.99), bad_numbers)




@pytest.mark.full
@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(sorted(LAYERS)), min_size=1, max_size=3),
    width=st.integers(1, 6),
    length=st.integers(1, 4),
    sparsity=sparsities,
    distribution=st.one_of(st.sampled_from(["uniform", "er", "erk", "bogus", 3]),
                           st.dictionaries(st.sampled_from(["head", "head/kernel", "nope", "l0"]),
                                           sparsities, max_size=2)),
    keep_dense=st.sampled_from(["auto", None, [], ["head"], ["nope"], "head", [3]]),
    seed=st.one_of(st.none(), st.integers(0, 2**31 - 1)),
)
def test_sparsify_fuzz_works_or_raises_clearly(kinds, width, length, sparsity, distribution,
                                               keep_dense, seed):
    keras.utils.clear_session()
    inputs = keras.Input((length, 3))
    x = inputs
    for i, kind in enumerate(kinds):
        layer = LAYERS[kind](width)
        layer._name = f"l{i}"  # stable names the dict strategy can hit
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    before = [w.copy() for w in model.get_weights()]
    try:
        sparse = keras_sparse.sparsify(model, sparsity, distribution=distribution,
                                       keep_dense=keep_dense, seed=seed)
    except (ValueError, TypeError) as err:
        assert str(err), "error without a message"
        FUZZ_STATS["value_error" if isinstance(err, ValueError) else "type_error"] += 1
    else:
        FUZZ_STATS["ok"] += 1
        total = active = 0
        for wrapper in keras_sparse.sparse_wrappers(sparse):
            for name, _, mask in wrapper.masked_weights:
                m = mask.numpy()
                assert np.all((m == 0) | (m == 1))
                assert int(m.sum()) == keras_sparse.masks.num_active(m.size, wrapper.sparsity_of(name))
                total += m.size
                active += int(m.sum())
        assert all_masked_entries_zero(sparse)
        if not isinstance(distribution, dict) and total:
            # allocation rounds per weight: global error below 1 weight per layer
            assert abs((1 - active / total) - sparsity) <= 1e-3 + len(kinds) * 2 / total
    after = model.get_weights()  # the input model is never touched
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def _dense_sparse(sparsity=0.5):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))
    return keras_sparse.sparsify(model, sparsity, distribution="uniform", keep_dense=None, seed=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_gradients_keep_pruned_entries_zero(bad):
    model = _dense_sparse()
    wrapper = keras_sparse.sparse_wrappers(model)[0]
    _, kernel, mask = wrapper.masked_weights[0]
    mask_before = mask.numpy().copy()
    opt = keras.optimizers.SGD(0.1)
    grad = np.full(kernel.shape, bad, np.float32)
    opt.apply_gradients([(grad, kernel)])
    w, m = kernel.numpy(), mask.numpy()
    np.testing.assert_array_equal(m, mask_before)  # mask untouched
    assert np.all(w[m == 0] == 0.0)  # select, not multiply: exactly 0, not NaN
    # Documented behaviour: kept entries take the non-finite value (no skip in
    # the layer; skipping is the optimizer's / loss scaler's job).
    assert not np.any(np.isfinite(w[m == 1]))


@pytest.mark.full
def test_nonfinite_weights_are_zeroed_where_pruned_by_apply_masks():
    model = _dense_sparse()
    wrapper = keras_sparse.sparse_wrappers(model)[0]
    _, kernel, mask = wrapper.masked_weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    wrapper.apply_masks()
    w, m = kernel.numpy(), mask.numpy()
    assert np.all(w[m == 0] == 0.0) and np.all(np.isnan(w[m == 1]))


def _rewrite_config(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)


def _wrapper_config(config):
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "SparseWrapper":
            return layer
    raise AssertionError("no SparseWrapper in config")


def _unknown_class(config):
    w = _wrapper_config(config)
    w["class_name"], w["registered_name"] = "EvilWrapper", "keras_sparse>EvilWrapper"


def _lambda_layer(config):
    w = _wrapper_config(config)
    w["config"]["layer"] = {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "config": {"name": "evil", "function": {
            "class_name": "__lambda__",
            "config": {"code": "4wEAAAAAAAAAAAAAAAEAAAADAAAA8wQAAAB8AFMAKQFOqQCpAdoBeHIBAAAAcgEAAAD6AjxzPtoIPGxhbWJkYT4BAAAAcwIAAAAEAHIDAAAA",
                       "defaults": None, "closure": None}}}}


def _bad_sparsity_type(config):
    _wrapper_config(config)["config"]["sparsity"] = "0.5; import os"


def _sparsity_out_of_range(config):
    _wrapper_config(config)["config"]["sparsity"] = 1.5


def _newer_version(config):
    _wrapper_config(config)["config"]["keras_sparse_version"] = "99.0.0"


def _garbage_version(config):
    _wrapper_config(config)["config"]["keras_sparse_version"] = ["not", "a", "version"]


TAMPERS = {"unknown_class": _unknown_class, "lambda": _lambda_layer,
           "sparsity_wrong_type": _bad_sparsity_type, "sparsity_out_of_range": _sparsity_out_of_range,
           "newer_version": _newer_version, "garbage_version": _garbage_version}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampered_keras_file_raises_clearly(tmp_path, tamper):
    model = _dense_sparse()
    src, dst = tmp_path / "ok.keras", tmp_path / "bad.keras"
    model.save(src)
    _rewrite_config(src, dst, TAMPERS[tamper])
    with pytest.raises((ValueError, TypeError)) as info:
        keras.models.load_model(dst)  # safe_mode=True by default
    message = str(info.value)
    assert message
    if tamper == "lambda":
        assert "safe_mode" in message or "unsafe" in message.lower()
    if tamper == "newer_version":
        assert "99.0.0" in message and "pip install -U keras_sparse" in message


@pytest.mark.full
def test_file_written_before_versions_were_recorded_loads(tmp_path):
    model = _dense_sparse()
    src, dst = tmp_path / "ok.keras", tmp_path / "old.keras"
    model.save(src)
    _rewrite_config(src, dst, lambda c: _wrapper_config(c)["config"].pop("keras_sparse_version"))
    loaded = keras.models.load_model(dst)
    x = np.ones((2,) + tuple(model.input_shape[1:]), "float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


@pytest.mark.full
@pytest.mark.parametrize("jit_compile", [False, True])
def test_mixed_precision_steps_per_execution_jit_keep_masks(jit_compile):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _dense_sparse(0.7)
    masks = keras_sparse.pruning.get_masks(model)
    model.compile(keras.optimizers.Adam(1e-2), "mse", steps_per_execution=3,
                  jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(36, 4)).astype("float32"), rng.normal(size=(36, 3)).astype("float32")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][-1])
    assert int(model.optimizer.iterations.numpy()) == 18
    for key, mask in keras_sparse.pruning.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])
    assert all_masked_entries_zero(model)
