import keras
import numpy as np
import pytest

import keras_sparse
from keras_sparse.layers import SparseWrapper

from testing import all_masked_entries_zero, small_cnn_functional


def _x(n=8, shape=(12, 12, 1)):
    return np.random.default_rng(0).random((n, *shape)).astype("float32")


def _masks(model):
    return [
        m.numpy() for w in keras_sparse.sparse_wrappers(model) for _, _, m in w.masked_weights
    ]


@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.98])
def test_global_sparsity_within_a_tenth_of_a_percent(distribution, sparsity):
    model = small_cnn_functional(input_shape=(28, 28, 1), num_classes=10)
    sparse = keras_sparse.sparsify(model, sparsity, distribution, seed=0)
    report = keras_sparse.sparsity_report(sparse)
    assert abs(report.total_sparsity - sparsity) < 1e-3
    assert all_masked_entries_zero(sparse)


def test_uniform_keeps_first_layer_dense_by_default_and_erk_does_not():
    model = small_cnn_functional()
    uniform = keras_sparse.sparsify(model, 0.9, "uniform", seed=0)
    assert [w.name for w in keras_sparse.sparse_wrappers(uniform)] == ["conv2d_1", "dense", "dense_1"]
    erk = keras_sparse.sparsify(model, 0.9, "erk", seed=0)
    assert len(keras_sparse.sparse_wrappers(erk)) == 4
    none_dense = keras_sparse.sparsify(model, 0.9, "uniform", keep_dense=None, seed=0)
    assert len(keras_sparse.sparse_wrappers(none_dense)) == 4


def test_original_model_is_untouched_and_weights_are_carried_over():
    model = small_cnn_functional()
    before = [w.copy() for w in model.get_weights()]
    sparse = keras_sparse.sparsify(model, 0.8, seed=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not any(isinstance(l, SparseWrapper) for l in model.layers)
    for wrapper in keras_sparse.sparse_wrappers(sparse):
        original = model.get_layer(wrapper.name).kernel.numpy()
        mask = wrapper.kernel_mask.numpy()
        np.testing.assert_array_equal(wrapper.layer.kernel.numpy(), original * mask)


def test_same_seed_same_masks_different_seed_different_masks():
    model = small_cnn_functional()
    a = _masks(keras_sparse.sparsify(model, 0.9, seed=3))
    b = _masks(keras_sparse.sparsify(model, 0.9, seed=3))
    c = _masks(keras_sparse.sparsify(model, 0.9, seed=4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_sequential_nested_and_shared_layers():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, name="inner_dense")], name="inner")
    shared = keras.layers.Dense(6, name="shared")
    inputs = keras.Input((6,))
    x = shared(inputs)
    x = inner(x)
    x = shared(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    sparse = keras_sparse.sparsify(model, 0.5, "uniform", keep_dense=None, seed=0)
    names = sorted(w.name for w in keras_sparse.sparse_wrappers(sparse))
    assert names == ["head", "inner_dense", "shared"]
    x = np.random.rand(4, 6).astype("float32")
    sparse.compile("sgd", "mse")
    sparse.fit(x, np.zeros((4, 2)), epochs=1, verbose=0)
    assert all_masked_entries_zero(sparse)
    seq = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    sparse_seq = keras_sparse.sparsify(seq, 0.5, "erk", seed=0)
    assert isinstance(sparse_seq, keras.Sequential)
    assert len(keras_sparse.sparse_wrappers(sparse_seq)) == 2


def test_dict_distribution_wraps_only_named_layers():
    model = small_cnn_functional()
    sparse = keras_sparse.sparsify(model, 0.0, {"dense": 0.9, "conv2d_1/kernel": 0.5}, seed=0)
    report = {r.layer: r.sparsity for r in keras_sparse.sparsity_report(sparse).rows}
    assert report == pytest.approx({"dense": 0.9, "conv2d_1": 0.5}, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sparsity": 1.0}, ValueError, r"\[0, 1\)"),
        ({"sparsity": -0.1}, ValueError, r"\[0, 1\)"),
        ({"distribution": "normal"}, ValueError, "Accepted: 'uniform', 'er', 'erk'"),
        ({"distribution": {"nope": 0.5}}, ValueError, "Accepted names: .*'conv2d'"),
        ({"distribution": {"dense/bias": 0.5}}, ValueError, "'dense/kernel'"),
        ({"distribution": {"dense": 1.5}}, ValueError, r"\[0, 1\)"),
        ({"keep_dense": ["missing"]}, ValueError, "Accepted names"),
        ({"keep_dense": "conv2d"}, TypeError, "list of layer names"),
    ],
)
def test_bad_input_raises_before_anything_changes(kwargs, error, match):
    model = small_cnn_functional()
    before = [w.copy() for w in model.get_weights()]
    args = {"sparsity": 0.9, "distribution": "erk", **kwargs}
    with pytest.raises(error, match=match):
        keras_sparse.sparsify(model, **args)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.full
def test_subclassed_model_gets_pointer_to_wrapping_layers():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.ones((1, 4)))
    with pytest.raises(TypeError, match="SparseWrapper"):
        keras_sparse.sparsify(net, 0.5)


@pytest.mark.full
def test_not_a_model_unbuilt_no_prunable_and_already_sparse():
    with pytest.raises(TypeError, match="Received"):
        keras_sparse.sparsify(keras.layers.Dense(3), 0.5)
    with pytest.raises(ValueError, match="not built"):
        keras_sparse.sparsify(keras.Sequential([keras.layers.Dense(3)]), 0.5)
    relu_only = keras.Sequential([keras.Input((3,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no prunable layer"):
        keras_sparse.sparsify(relu_only, 0.5)
    sparse = keras_sparse.sparsify(small_cnn_functional(), 0.5, seed=0)
    with pytest.raises(ValueError, match="already sparsified"):
        keras_sparse.sparsify(sparse, 0.5)


@pytest.mark.full
def test_strip_matches_wrapped_and_has_exact_zeros():
    sparse = keras_sparse.sparsify(small_cnn_functional(), 0.9, seed=0)
    sparse.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _x(32)
    sparse.fit(x, np.arange(32) % 4, epochs=1, batch_size=8, verbose=0)
    plain = keras_sparse.strip(sparse)
    assert not keras_sparse.sparse_wrappers(plain)
    assert [l.name for l in plain.layers[1:]] == [l.name for l in sparse.layers[1:]]
    np.testing.assert_array_equal(plain.predict(x, verbose=0), sparse.predict(x, verbose=0))
    for wrapper in keras_sparse.sparse_wrappers(sparse):
        kernel = plain.get_layer(wrapper.name).kernel.numpy()
        assert np.count_nonzero(kernel) <= wrapper.kernel_mask.numpy().sum()
        assert np.all(kernel[wrapper.kernel_mask.numpy() == 0] == 0.0)


@pytest.mark.full
def test_keras_file_round_trip_without_custom_objects(tmp_path):
    sparse = keras_sparse.sparsify(small_cnn_functional(), 0.9, seed=0)
    sparse.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _x(16)
    sparse.fit(x, np.arange(16) % 4, epochs=1, verbose=0)
    path = tmp_path / "sparse.keras"
    sparse.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects, safe_mode on
    assert all(np.array_equal(a, b) for a, b in zip(_masks(sparse), _masks(loaded)))
    for a, b in zip(sparse.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sparse.predict(x, verbose=0), loaded.predict(x, verbose=0))
    # Training the reloaded model keeps the masks enforced.
    loaded.fit(x, np.arange(16) % 4, epochs=1, verbose=0)
    assert all_masked_entries_zero(loaded)
    assert all(np.array_equal(a, b) for a, b in zip(_masks(sparse), _masks(loaded)))


@pytest.mark.full
def test_mixed_float16_keeps_masks():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = small_cnn_functional()
    sparse = keras_sparse.sparsify(model, 0.8, seed=0)
    masks_before = _masks(sparse)
    sparse.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sparse.fit(_x(16), np.arange(16) % 4, epochs=1, batch_size=8, verbose=0)
    assert sparse.layers[1].layer.compute_dtype == "float16"
    assert all(np.array_equal(a, b) for a, b in zip(masks_before, _masks(sparse)))
    assert all_masked_entries_zero(sparse)


@pytest.mark.full
def test_duplicate_layer_names_in_nested_submodels_raise_before_wrapping():
    def sub(name):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(4, name="c1")(inputs), name=name)

    inputs = keras.Input((4,))
    outputs = sub("b")(sub("a")(inputs))
    model = keras.Model(inputs, outputs)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match="named 'c1'"):
        keras_sparse.sparsify(model, 0.5, distribution="uniform", keep_dense=None, seed=0)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


# ------------------------------------------------------- argument checks
@pytest.mark.parametrize("seed, error", [
    (1.5, TypeError), (True, TypeError), ("a", TypeError), ([0], TypeError), (-1, ValueError),
])
def test_bad_seed_is_refused_naming_seed_before_anything_changes(seed, error):
    model = small_cnn_functional()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(error, match=r"`seed` must be a non-negative int or None") as e:
        keras_sparse.sparsify(model, 0.9, seed=seed)
    assert repr(seed) in str(e.value)
    assert e.traceback[-1].path.name == "masks.py"  # keras_sparse's check, not NumPy's
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.full
def test_numpy_int_seed_is_accepted_and_equals_the_python_int():
    model = small_cnn_functional()
    a = _masks(keras_sparse.sparsify(model, 0.9, seed=np.int64(3)))
    b = _masks(keras_sparse.sparsify(model, 0.9, seed=3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.full
def test_empty_distribution_dict_is_refused():
    with pytest.raises(ValueError, match=r"empty dict.*Accepted: 'uniform', 'er', 'erk'"):
        keras_sparse.sparsify(small_cnn_functional(), 0.9, distribution={})


@pytest.mark.full
def test_sparsity_leaving_one_weight_per_layer_warns_with_layer_and_count():
    model = small_cnn_functional()
    with pytest.warns(UserWarning, match=r"keep at most one entry") as record:
        sparse = keras_sparse.sparsify(model, 0.9999999, distribution="uniform", keep_dense=None,
                                       seed=0)
    message = str([w for w in record if "at most one" in str(w.message)][0].message)
    for wrapper in keras_sparse.sparse_wrappers(sparse):
        for name, _, mask in wrapper.masked_weights:
            m = mask.numpy()
            assert m.sum() == 1  # what the warning is about
            assert f"{wrapper.name}/{name} keeps 1 of {m.size}" in message, message


@pytest.mark.full
def test_ordinary_sparsity_does_not_warn():
    import warnings

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        keras_sparse.sparsify(small_cnn_functional(), 0.95, seed=0)
    assert not [w for w in record if "at most one" in str(w.message)]
