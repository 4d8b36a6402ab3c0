import os

import keras
import numpy as np
import pytest

import tflite_export

from tflite_helpers import mlp, zero_out


class SparseWrapper(keras.layers.Wrapper):
    """Stand-in with the keras_sparse class name (not imported)."""

    def call(self, x):
        return self.layer(x)


def _no_files(tmp_path):
    return [p for p in os.listdir(tmp_path)]


def test_rejects_non_keras_objects(tmp_path):
    with pytest.raises(TypeError, match="Keras 3 model.*received builtins.str"):
        tflite_export.export_inference("model.keras", str(tmp_path / "a.tflite"))
    assert _no_files(tmp_path) == []


def test_rejects_unknown_precision(tmp_path):
    with pytest.raises(ValueError, match="'int4'.*'float32', 'float16'"):
        tflite_export.export_inference(mlp(), str(tmp_path / "a.tflite"),
                                       precision="int4")
    assert _no_files(tmp_path) == []


def test_int8_full_requires_representative_data(tmp_path):
    with pytest.raises(ValueError, match="representative_data=None"):
        tflite_export.export_inference(mlp(), str(tmp_path / "a.tflite"),
                                       precision="int8_full")
    assert _no_files(tmp_path) == []


def test_rejects_sparse_wrapper_layers(tmp_path):
    inp = keras.Input((8,))
    out = SparseWrapper(keras.layers.Dense(4))(inp)
    model = keras.Model(inp, out)
    with pytest.raises(TypeError, match=r"keras_sparse.strip\(model\)"):
        tflite_export.export_inference(model, str(tmp_path / "a.tflite"))
    assert _no_files(tmp_path) == []


def test_rejects_layers_without_builtin_lowering(tmp_path):
    inp = keras.Input((8,))
    x = keras.layers.Dense(8)(inp)
    out = keras.layers.Lambda(lambda t: keras.ops.cumprod(t, axis=-1),
                              name="cumprod_layer")(x)
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match=r"Cumprod.*cumprod_layer \(Lambda\)"):
        tflite_export.export_inference(model, str(tmp_path / "a.tflite"))
    assert _no_files(tmp_path) == []


def test_bad_sample_inputs_shape(tmp_path):
    with pytest.raises(ValueError, match=r"sample shape \(5,\)"):
        tflite_export.export_inference(
            mlp(), str(tmp_path / "a.tflite"),
            sample_inputs=np.zeros((2, 5), np.float32))
    assert _no_files(tmp_path) == []


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    from tflite_export import verify

    path = tmp_path / "a.tflite"
    path.write_bytes(b"previous")
    monkeypatch.setattr(verify, "TOLERANCES",
                        dict(verify.TOLERANCES, float32=(-1.0, 0.0)))
    with pytest.raises(verify.ExportVerificationError):
        tflite_export.export_inference(zero_out(mlp()), str(path))
    # The old file is untouched, no temp file remains.
    assert path.read_bytes() == b"previous"
    assert sorted(_no_files(tmp_path)) == ["a.tflite"]
