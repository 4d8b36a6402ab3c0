import os

import keras
import numpy as np
import pytest

import tflite_export
from tflite_export import inspect_flatbuffer
from tflite_export.convert import convert
from tflite_export.verify import make_interpreter, run_batch1

from tflite_helpers import mlp, small_cnn, zero_out

PRECISIONS = ["float32", "float16", "int8_dynamic", "int8_full"]


def _export(*args, **kwargs):
    """`export_inference` keeping the sparse encoding: these tests check it."""
    return tflite_export.export_inference(*args, optimize="sparse", **kwargs)


def _model(kind):
    if kind == "mlp_block":
        return zero_out(mlp((64, 128, 64, 10)), 0.1, block=4)
    if kind == "mlp_random":
        return zero_out(mlp((64, 128, 10)), 0.1, block=1)
    return zero_out(small_cnn((16, 16, 1), (8, 16, 32)), 0.1, block=4)


def _shape(kind):
    return (16, 16, 1) if kind == "cnn" else (64,)


@pytest.mark.parametrize("kind", ["mlp_block", "mlp_random", "cnn"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_export_matches_keras_in_litert(tmp_path, rng, kind, precision):
    model = _model(kind)
    rep = rng.random((32,) + _shape(kind)).astype(np.float32)
    path = str(tmp_path / "m.tflite")
    report = _export(
        model, path, precision=precision, representative_data=rep,
        latency_invokes=20, compare_dense=True)
    assert os.path.exists(path)
    with open(path, "rb") as f:
        data = f.read()
    assert report.num_bytes == len(data)
    # Independent re-check in the configuration the report names.
    x = rng.random((8,) + _shape(kind)).astype(np.float32)
    out = run_batch1(make_interpreter(data, report.op_resolver), [x])[0]
    ref = np.asarray(model(x))
    atol, rtol = tflite_export.verify.TOLERANCES[precision]
    assert np.max(np.abs(out - ref)) <= atol + rtol * np.max(np.abs(ref))
    assert report.size_ratio < 1.0
    assert report.latency_us > 0


def test_block_sparse_dense_stays_on_sparse_fc_kernel(tmp_path):
    model = _model("mlp_block")
    report = _export(
        model, str(tmp_path / "b.tflite"), latency_invokes=10)
    summary = inspect_flatbuffer(str(tmp_path / "b.tflite"))
    assert "DENSIFY" not in summary.operators
    kernels = [t for t in summary.sparse_tensors if len(t.shape) == 2]
    # All three 1x4-eligible kernels (64->128->64->10; 10 outputs is fine,
    # blocks run along the input dimension) are BSR with 1x4 blocks.
    assert len(kernels) == 3
    for t in kernels:
        assert t.format == "BSR" and t.block_shape == [1, 4]
        assert t.runtime_path == "sparse_fully_connected"
        assert t.consumers == ["FULLY_CONNECTED"]
    assert report.runtime_path == "sparse_fully_connected"
    assert report.op_resolver == "default"
    assert report.size_ratio <= 0.2


def test_unstructured_weights_are_csr_with_densify(tmp_path):
    model = _model("mlp_random")
    report = _export(
        model, str(tmp_path / "r.tflite"), latency_invokes=10)
    assert report.sparse_tensors
    assert all(t["format"] == "CSR" for t in report.sparse_tensors)
    assert "DENSIFY" in report.operators
    assert report.runtime_path == "densify"


def test_int8_1x16_block_xnnpack_fault_is_detected(tmp_path, rng):
    # Sparse int8 FC under the default XNNPACK delegate fails to prepare or
    # gives wrong outputs; the export must fall back to the builtin resolver.
    model = zero_out(mlp((64, 128, 16)), 0.1, block=16)
    report = _export(
        model, str(tmp_path / "q.tflite"), precision="int8_dynamic",
        latency_invokes=10)
    default = [a for a in report.attempts if a["resolver"] == "default"
               and a["sparse_encoding"]]
    assert default and not default[0]["ok"]
    assert report.op_resolver == "builtin_without_default_delegates"
    assert any("XNNPACK off" in n for n in report.notes)
    assert all(t["format"] == "BSR" and t["block_shape"] == [1, 16]
               for t in report.sparse_tensors)


def test_report_json_written_next_to_model(tmp_path):
    import json

    path = str(tmp_path / "m.tflite")
    report = _export(_model("mlp_block"), path,
                                            measure_latency=False)
    with open(path + ".json") as f:
        saved = json.load(f)
    assert saved["op_resolver"] == report.op_resolver
    assert saved["num_bytes"] == report.num_bytes
    assert "| tensor |" in report.to_markdown()


def test_relu_after_bias_free_matmul_survives_conversion(tmp_path, rng):
    # Pitfall: ReLU right after a bias-free matmul on a variable has been
    # seen to vanish in conversion. Negative pre-activations make it visible.
    model = zero_out(mlp((32, 64, 8), use_bias=False), 0.5)
    x = rng.standard_normal((8, 32)).astype(np.float32)
    report = _export(
        model, str(tmp_path / "nb.tflite"), sample_inputs=x,
        measure_latency=False)
    hidden = keras.Model(model.inputs, model.layers[0].output)
    assert np.min(np.asarray(hidden(x))) == 0.0  # ReLU clips something
    assert report.max_abs_err <= report.tolerance


def test_batchnorm_model_matches_keras(tmp_path, rng):
    model = zero_out(keras.Sequential([
        keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Flatten(), keras.layers.Dense(16, use_bias=False),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Dropout(0.5), keras.layers.Dense(3)]), 0.2)
    for layer in model.layers:  # non-trivial inference statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2.0, n).astype("float32"))
    x = rng.standard_normal((8, 8, 8, 2)).astype(np.float32)
    path = str(tmp_path / "bn.tflite")
    report = _export(model, path, sample_inputs=x,
                                            measure_latency=False,
                                            compare_dense=False)
    with open(path, "rb") as f:
        out = run_batch1(make_interpreter(f.read(), report.op_resolver),
                         [x])[0]
    np.testing.assert_allclose(out, np.asarray(model(x, training=False)),
                               rtol=1e-4, atol=1e-5)


def test_multi_input_model_matches_keras(tmp_path, rng):
    # Inputs of different widths, named so that alphabetical order differs
    # from the model's input order.
    a = keras.Input((12,), name="z_wide")
    b = keras.Input((4,), name="a_narrow")
    h = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu")(a),
                                    keras.layers.Dense(8, activation="relu")(b)])
    model = zero_out(keras.Model([a, b], keras.layers.Dense(3)(h)), 0.2)
    xs = [rng.standard_normal((6, 12)).astype(np.float32),
          rng.standard_normal((6, 4)).astype(np.float32)]
    path = str(tmp_path / "mi.tflite")
    report = _export(model, path, sample_inputs=xs,
                                            measure_latency=False,
                                            compare_dense=False)
    assert report.max_abs_err <= report.tolerance
    with open(path, "rb") as f:
        interp = make_interpreter(f.read(), report.op_resolver)
    shapes = [tuple(d["shape"][1:]) for d in interp.get_input_details()]
    order = [shapes.index((x.shape[1],)) for x in xs]
    feed = [None, None]
    for x, k in zip(xs, order):
        feed[k] = x
    out = run_batch1(interp, feed)[0]
    np.testing.assert_allclose(out, np.asarray(model(xs)), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("precision", ["int8_dynamic", "int8_full"])
def test_int8_1x4_blocks_are_reencoded_bsr(tmp_path, rng, precision):
    # The converter writes int8 1x4-block FC weights element-wise CSR
    # (uint16 index per non-zero); the export re-encodes them BSR 1x4.
    model = zero_out(mlp((64, 256, 256, 10)), 0.1, block=4)
    rep = rng.random((32, 64)).astype(np.float32)
    report = _export(
        model, str(tmp_path / "q.tflite"), precision=precision,
        representative_data=rep, measure_latency=False)
    kernels = [t for t in report.sparse_tensors if t["shape"][0] == 256]
    assert kernels and all(t["format"] == "BSR" and t["block_shape"] == [1, 4]
                           and t["dtype"] == "INT8" for t in kernels)
    assert report.runtime_path == "densify"
    assert any("re-encoded" in n for n in report.notes)
    plain = convert(model, precision, representative_data=rep)
    assert report.num_bytes < 0.9 * len(plain)  # 0.81x here; 0.47x on the
    # benchmark MLP (fixed overheads dominate this small model)


def test_block_sparse_float16_falls_back_to_dense_with_warning(tmp_path):
    model = _model("mlp_block")
    with pytest.warns(UserWarning, match="DEQUANTIZE without a DENSIFY"):
        report = _export(
            model, str(tmp_path / "h.tflite"), precision="float16",
            measure_latency=False)
    assert not report.sparse_encoding and report.sparse_tensors == []
    assert any("Fell back to dense" in n and "converter limitation" in n
               for n in report.notes)
    bad = [a for a in report.attempts if a["sparse_encoding"]]
    assert bad and not any(a["ok"] for a in bad)


def test_sparsify_block_size_16_exports_int8_1x16_blocks(tmp_path, rng):
    # `sparsify(structure="block", block_size=16)` makes the pattern of
    # TFLite's int8 sparse FULLY_CONNECTED kernel: every kernel is stored BSR 1x16.
    import keras_sparse as ks

    sparse = ks.sparsify(mlp((64, 128, 16)), 0.9, distribution="uniform", keep_dense=None, seed=0,
                         structure="block", block_size=16)
    plain = ks.strip(sparse)
    path = str(tmp_path / "q16.tflite")
    report = _export(plain, path, precision="int8_dynamic", latency_invokes=5)
    kernels = [t for t in report.sparse_tensors if len(t["shape"]) == 2]
    assert len(kernels) == 2
    assert all(t["format"] == "BSR" and t["block_shape"] == [1, 16] for t in kernels), kernels
    with open(path, "rb") as f:
        data = f.read()
    x = rng.random((4, 64)).astype(np.float32)
    out = run_batch1(make_interpreter(data, report.op_resolver), [x])[0]
    ref = np.asarray(plain(x))
    atol, rtol = tflite_export.verify.TOLERANCES["int8_dynamic"]
    assert np.max(np.abs(out - ref)) <= atol + rtol * np.max(np.abs(ref))
