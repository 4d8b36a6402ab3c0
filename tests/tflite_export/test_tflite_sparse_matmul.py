"""Sparse compute of compact Dense kernels on the device
(`export_trainable(..., weight_storage="sparse", sparse_matmul=...)`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sparse
import tflite_export
from tflite_export import _sparse_matmul as sm
from tflite_export.verify import make_interpreter

B = 8
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(seed=0, sparsity=0.9):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((32,)), keras.layers.Dense(48, activation="relu", name="d1"),
        keras.layers.Dense(40, activation="relu", name="d2"),
        keras.layers.Dense(6, name="d3")])
    return keras_sparse.sparsify(model, sparsity, distribution="uniform",
                                 keep_dense=None, seed=seed)


def _export(tmp_path, model, name, **kw):
    path = str(tmp_path / f"{name}.tflite")
    kw.setdefault("weight_storage", "sparse")
    report = tflite_export.export_trainable(
        model, path, kw.pop("opt", None) or keras.optimizers.Adam(0.01), LOSS,
        batch_size=B, compare_dense=False, **kw)
    with open(path, "rb") as f:
        return report, make_interpreter(f.read())


def _train(interp, steps, seed=0, features=32, classes=6):
    rng = np.random.default_rng(seed)
    train = interp.get_signature_runner("train")
    outs = []
    for _ in range(steps):
        x = rng.standard_normal((B, features)).astype(np.float32)
        y = rng.integers(0, classes, B).astype(np.int32)
        outs.append(train(x=x, y=y))
    return outs, interp.get_signature_runner("get_state")()


def test_sparse_matmul_matches_the_dense_product_and_its_gradients():
    rng = np.random.default_rng(0)
    n_in, n_out = 7, 5
    mask = rng.random((n_in, n_out)) < 0.4
    w = rng.standard_normal((n_in, n_out)).astype(np.float32) * mask
    nz = np.flatnonzero(mask.reshape(-1)).astype(np.int32)[:, None]
    rows, cols = sm.row_col(tf.constant(nz), n_out)
    values = tf.constant(w.reshape(-1)[nz[:, 0]])
    x = tf.constant(rng.standard_normal((3, n_in)).astype(np.float32))
    dy = tf.constant(rng.standard_normal((3, n_out)).astype(np.float32))
    dense = tf.constant(w)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, values, dense])
        y_sparse = sm.sparse_matmul(x, values, rows, cols, n_in, n_out)
        y_dense = tf.matmul(x, dense)
    dx_s, dv = tape.gradient(y_sparse, [x, values], output_gradients=dy)
    dx_d, dw = tape.gradient(y_dense, [x, dense], output_gradients=dy)
    np.testing.assert_allclose(y_sparse, y_dense, atol=1e-5)
    np.testing.assert_allclose(dx_s, dx_d, atol=1e-5)
    # The values' gradient is the dense gradient at the kept entries.
    np.testing.assert_allclose(dv, np.asarray(dw).reshape(-1)[nz[:, 0]], atol=1e-5)


def test_on_trains_exactly_like_off_without_dense_matmuls(tmp_path):
    report_off, off = _export(tmp_path, _mlp(), "off")
    report_on, on = _export(tmp_path, _mlp(), "on", sparse_matmul="on")
    assert set(report_on.sparse_matmul) == {"d1_kernel", "d2_kernel", "d3_kernel"}
    assert all(c == {"form": "sparse"} for c in report_on.sparse_matmul.values())
    assert report_off.sparse_matmul == {}
    # Every Dense computes with gathers and segment sums: no matmul left.
    assert report_on.operators.get("UNSORTED_SEGMENT_SUM", 0) >= 3
    assert "FULLY_CONNECTED" not in report_on.operators
    assert "BATCH_MATMUL" not in report_on.operators
    assert any("FULLY_CONNECTED" in op or "BATCH_MATMUL" in op
               for op in report_off.operators)
    outs_off, state_off = _train(off, 6)
    outs_on, state_on = _train(on, 6)
    np.testing.assert_allclose([o["loss"] for o in outs_on],
                               [o["loss"] for o in outs_off], rtol=1e-5)
    assert set(state_on) == set(state_off)
    for name in state_off:  # weights and Adam slots
        np.testing.assert_allclose(state_on[name], state_off[name], atol=1e-5,
                                   err_msg=name)
        if name.endswith("kernel"):
            # Pruned entries stay exactly zero.
            assert np.count_nonzero(state_on[name]) <= \
                np.count_nonzero(state_off[name])
    x = np.random.default_rng(1).standard_normal((3, 32)).astype(np.float32)
    np.testing.assert_allclose(on.get_signature_runner("infer")(x=x)["output"],
                               off.get_signature_runner("infer")(x=x)["output"],
                               atol=1e-5)


def test_on_with_on_device_set_matches_off_masks_and_weights(tmp_path):
    algorithm = keras_sparse.algorithms.SET(update_interval=2, stop_step=6,
                                            drop_fraction=0.3, seed=3)
    _, off = _export(tmp_path, _mlp(sparsity=0.8), "off", algorithm=algorithm)
    report, on = _export(tmp_path, _mlp(sparsity=0.8), "on",
                         algorithm=algorithm, sparse_matmul="on")
    assert len(report.sparse_matmul) == 3
    outs_off, state_off = _train(off, 7)
    outs_on, state_on = _train(on, 7)
    assert [float(o["regrown"]) for o in outs_on] == \
        [float(o["regrown"]) for o in outs_off]
    assert max(float(o["regrown"]) for o in outs_on) > 0  # masks moved
    for name in state_off:
        np.testing.assert_allclose(state_on[name], state_off[name], atol=1e-5,
                                   err_msg=name)


def test_auto_keeps_the_measured_faster_form(tmp_path, monkeypatch):
    times = {48: (10.0, 4.0), 40: (3.0, 9.0), 6: (5.04, 4.96)}  # by n_out
    monkeypatch.setattr(sm, "measure",
                        lambda n_in, n_out, idx, batch: times[n_out])
    report, interp = _export(tmp_path, _mlp(), "auto", sparse_matmul="auto")
    assert report.sparse_matmul == {
        "d1_kernel": {"form": "sparse", "masked_us": 10.0, "sparse_us": 4.0},
        "d2_kernel": {"form": "masked", "masked_us": 3.0, "sparse_us": 9.0},
        # A tie at the reported 0.1 us keeps the dense matmul.
        "d3_kernel": {"form": "masked", "masked_us": 5.0, "sparse_us": 5.0}}
    assert report.operators.get("UNSORTED_SEGMENT_SUM", 0) >= 1
    assert any("FULLY_CONNECTED" in op or "BATCH_MATMUL" in op
               for op in report.operators)
    assert any("1 of 3 compact Dense kernels" in n for n in report.notes)
    _train(interp, 2)


def test_auto_measures_both_forms_on_this_machine(tmp_path):
    report, _ = _export(tmp_path, _mlp(), "auto", sparse_matmul="auto")
    assert len(report.sparse_matmul) == 3
    for choice in report.sparse_matmul.values():
        assert choice["masked_us"] > 0 and choice["sparse_us"] > 0
        faster = "sparse" if choice["sparse_us"] < choice["masked_us"] else "masked"
        assert choice["form"] == faster


def test_auto_with_gradient_growth_keeps_dense_matmuls(tmp_path):
    algorithm = keras_sparse.algorithms.RigL(update_interval=2, stop_step=6)
    report, _ = _export(tmp_path, _mlp(), "rigl", algorithm=algorithm,
                        sparse_matmul="auto")
    assert report.sparse_matmul == {}
    assert "UNSORTED_SEGMENT_SUM" not in report.operators
    assert any("no compact Dense kernel" in n for n in report.notes)


@pytest.mark.parametrize("mode", ["yes", True, None, "ON"])
def test_unknown_mode_is_refused_before_writing(tmp_path, mode):
    path = tmp_path / "bad.tflite"
    with pytest.raises(ValueError, match=r"sparse_matmul must be one of .*received"):
        tflite_export.export_trainable(
            _mlp(), str(path), keras.optimizers.SGD(0.1), LOSS, batch_size=B,
            weight_storage="sparse", sparse_matmul=mode, compare_dense=False)
    assert not path.exists()


def test_sparse_matmul_needs_sparse_storage(tmp_path):
    path = tmp_path / "bad.tflite"
    with pytest.raises(ValueError, match="needs weight_storage='sparse'.*'dense'"):
        tflite_export.export_trainable(
            _mlp(), str(path), keras.optimizers.SGD(0.1), LOSS, batch_size=B,
            sparse_matmul="on", compare_dense=False)
    assert not path.exists()


@pytest.mark.parametrize("algorithm", ["rigl", "neurrev"])
def test_on_is_refused_with_gradient_growth(tmp_path, algorithm):
    path = tmp_path / "bad.tflite"
    with pytest.raises(ValueError, match=f"on-device '{algorithm}'.*dense gradient"):
        tflite_export.export_trainable(
            _mlp(), str(path), keras.optimizers.SGD(0.1), LOSS, batch_size=B,
            weight_storage="sparse", sparse_matmul="on", compare_dense=False,
            algorithm={"class_name": algorithm,
                       "config": {"update_interval": 2, "stop_step": 6}})
    assert not path.exists()


def test_on_without_a_compact_dense_kernel_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    # Only the conv is pruned: the Dense kernel is dense.
    sparse = keras_sparse.sparsify(model, 0.9, distribution="uniform",
                                   keep_dense=["dense"], seed=0)
    path = tmp_path / "bad.tflite"
    with pytest.raises(ValueError, match="found no kernel to compute sparsely"):
        tflite_export.export_trainable(
            sparse, str(path), keras.optimizers.SGD(0.1), LOSS, batch_size=B,
            weight_storage="sparse", sparse_matmul="on", compare_dense=False)
    assert not path.exists()
