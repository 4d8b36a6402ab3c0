import json
import os
import subprocess
import sys

import keras
import numpy as np

import tflite_export

from tflite_helpers import mlp, require_tflite_runtime_python, zero_out

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def _run(python, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([python, "-m", "tflite_export.runner", *args],
                          capture_output=True, text=True, timeout=180,
                          env=env, cwd=REPO)


def _exports(tmp_path, rng):
    model = zero_out(mlp((16, 32, 4)), 0.1, block=4)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    inf = str(tmp_path / "inf.tflite")
    tflite_export.export_inference(model, inf, precision="int8_dynamic",
                                   measure_latency=False)
    tr = str(tmp_path / "train.tflite")
    tflite_export.export_trainable(
        model, tr, keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=8, compare_dense=False, weight_storage="sparse")
    return model, x, inf, tr


def test_runner_imports_no_tensorflow_or_keras(tmp_path):
    code = ("import sys, tflite_export.runner as r; r.load_runtime(); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=REPO),
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_runner_end_to_end_in_main_venv(tmp_path, rng):
    model, x, inf, tr = _exports(tmp_path, rng)
    res = _run(sys.executable, "infer", inf, "--data",
               str(tmp_path / "data.npz"), "--out", str(tmp_path / "p.npy"))
    assert res.returncode == 0, res.stderr
    assert "accuracy:" in res.stdout
    pred = np.load(tmp_path / "p.npy")
    ref = np.asarray(model(x))
    assert np.max(np.abs(pred - ref)) <= 0.06 * np.max(np.abs(ref)) + 1e-3
    res = _run(sys.executable, "train", tr, "--data",
               str(tmp_path / "data.npz"), "--epochs", "3",
               "--save-weights", str(tmp_path / "w.npz"))
    assert res.returncode == 0, res.stderr
    # Compact storage needs no init step (only pre-compact files had one).
    assert "initialized weights from sparse storage" not in res.stdout
    losses = json.loads(res.stdout.split("losses: ")[1].splitlines()[0])
    assert len(losses) == 3 and losses[-1] < losses[0]
    w = np.load(tmp_path / "w.npz")
    kernel = w[f"{model.layers[0].name}_kernel"]
    orig = np.asarray(model.layers[0].kernel)
    assert np.all(kernel[orig == 0] == 0.0)


def test_runner_in_tflite_runtime_venv(tmp_path, rng):
    py = require_tflite_runtime_python()
    model, x, inf, tr = _exports(tmp_path, rng)
    res = _run(py, "train", tr, "--data", str(tmp_path / "data.npz"),
               "--epochs", "2", "--save-weights", str(tmp_path / "w.npz"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "runtime: tflite_runtime" in res.stdout
    # The main venv's LiteRT gives the same epoch losses (same shuffling).
    main = _run(sys.executable, "train", tr, "--data",
                str(tmp_path / "data.npz"), "--epochs", "2")
    a = json.loads(res.stdout.split("losses: ")[1].splitlines()[0])
    b = json.loads(main.stdout.split("losses: ")[1].splitlines()[0])
    np.testing.assert_allclose(a, b, rtol=1e-4)
    res = _run(py, "infer", inf, "--data", str(tmp_path / "data.npz"),
               "--out", str(tmp_path / "p.npy"))
    assert res.returncode == 0, res.stderr[-2000:]
    pred = np.load(tmp_path / "p.npy")
    ref = np.asarray(model(x))
    assert np.max(np.abs(pred - ref)) <= 0.06 * np.max(np.abs(ref)) + 1e-3


def test_cli_export_and_inspect(tmp_path):
    model = zero_out(mlp((16, 32, 4)), 0.1, block=4)
    model.save(tmp_path / "m.keras")
    out = str(tmp_path / "m.tflite")
    res = subprocess.run([sys.executable, "-m", "tflite_export", "export",
                          str(tmp_path / "m.keras"), out],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sparse_fully_connected" in res.stdout
    res = subprocess.run([sys.executable, "-m", "tflite_export", "inspect",
                          out], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    info = json.loads(res.stdout)
    assert not info["has_densify"]
    assert {t["format"] for t in info["sparse_tensors"]} == {"BSR"}
