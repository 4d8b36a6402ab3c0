import json
import os
import subprocess
import sys

import keras
import pytest
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
    tflite_export.export_inference(model, inf, precision="int8_dynamic", optimize="sparse",
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


@pytest.mark.full
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


@pytest.mark.full
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


@pytest.mark.full
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
    assert info["metadata"]["kind"] == "inference"
    assert {t["format"] for t in info["sparse_tensors"]} == {"BSR"}


@pytest.mark.full
def test_bare_files_carry_their_op_resolver(tmp_path, rng):
    from tflite_export.metadata import read_metadata

    model, x, inf, tr = _exports(tmp_path, rng)
    with open(inf + ".json") as f:
        sidecar = json.load(f)
    meta = read_metadata(inf)
    assert meta["kind"] == "inference"
    assert meta["op_resolver"] == sidecar["op_resolver"]
    os.remove(inf + ".json")  # a bare file copied to a device
    res = _run(sys.executable, "infer", inf, "--data",
               str(tmp_path / "data.npz"), "--out", str(tmp_path / "p.npy"))
    assert res.returncode == 0, res.stderr[-2000:]
    ref = np.asarray(model(x))
    pred = np.load(tmp_path / "p.npy")
    assert np.max(np.abs(pred - ref)) <= 0.06 * np.max(np.abs(ref)) + 1e-3
    tmeta = read_metadata(tr)
    assert tmeta["kind"] == "trainable" and tmeta["num_classes"] == 4
    assert read_metadata(b"not a flatbuffer") is None


def _error(res):
    assert res.returncode == 2, (res.stdout, res.stderr)
    return res.stderr


@pytest.mark.full
def test_runner_errors_name_received_and_accepted_before_any_change(
        tmp_path, rng):
    model, x, inf, tr = _exports(tmp_path, rng)
    data = str(tmp_path / "data.npz")
    w = str(tmp_path / "w.npz")
    y = rng.integers(0, 4, 40).astype(np.int32)
    y[5] = 7
    np.savez(tmp_path / "bad_y.npz", x=x, y=y)
    err = _error(_run(sys.executable, "train", tr, "--data",
                      str(tmp_path / "bad_y.npz"), "--save-weights", w))
    assert "Labels out of range" in err and "[7]" in err and "[0, 3]" in err
    assert not os.path.exists(w)
    np.savez(tmp_path / "bad_x.npz", x=x[:, :12], y=y % 4)
    err = _error(_run(sys.executable, "train", tr, "--data",
                      str(tmp_path / "bad_x.npz")))
    assert "(40, 12)" in err and "(16,)" in err
    err = _error(_run(sys.executable, "infer", inf, "--data",
                      str(tmp_path / "bad_x.npz")))
    assert "(40, 12)" in err and "(16,)" in err
    err = _error(_run(sys.executable, "train", inf, "--data", data))
    assert "cannot train" in err and "no signatures" in err
    assert "export_trainable" in err
    other = tflite_export.export_trainable(
        zero_out(mlp((16, 8, 4)), 0.3), str(tmp_path / "other.tflite"),
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=8, compare_dense=False)
    res = _run(sys.executable, "train", other.path, "--data", data,
               "--save-weights", str(tmp_path / "other_w.npz"))
    assert res.returncode == 0, res.stderr[-2000:]
    err = _error(_run(sys.executable, "train", tr, "--data", data,
                      "--load-weights", str(tmp_path / "other_w.npz"),
                      "--save-weights", w))
    assert "do not belong to this model" in err and "accepts 4 arrays" in err
    assert not os.path.exists(w)


@pytest.mark.full
def test_runner_functions_raise_before_any_weight_change(tmp_path, rng):
    from tflite_export import runner

    model, x, inf, tr = _exports(tmp_path, rng)
    interp = runner.make_interpreter(tr)
    before = runner.get_weights(interp)
    y = rng.integers(0, 4, 40)
    for bad_y, match in ((np.where(y == 0, -1, y), "out of range"),
                         (y[:, None], r"shape \(40, 1\)"),
                         (y + 0.5, "integer")):
        with pytest.raises(ValueError, match=match):
            runner.train_epochs(interp, x, bad_y, log=None)
    with pytest.raises(ValueError, match="do not belong"):
        runner.set_weights(interp, {"dense_kernel": np.zeros((3, 3))})
    after = runner.get_weights(interp)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    with pytest.raises(ValueError, match="cannot train"):
        runner.get_weights(runner.make_interpreter(inf))


@pytest.mark.full
@pytest.mark.parametrize("python", ["main", "tflite_runtime"])
def test_checkpoint_resume_continues_exactly(tmp_path, rng, python):
    py = (sys.executable if python == "main"
          else require_tflite_runtime_python())
    model = zero_out(mlp((16, 32, 4)), 0.2)
    tr = str(tmp_path / "adam.tflite")
    tflite_export.export_trainable(
        model, tr, keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=8, compare_dense=False, weight_storage="sparse")
    x = rng.standard_normal((40, 16)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=rng.integers(0, 4, 40))
    data = str(tmp_path / "data.npz")
    full = _run(py, "train", tr, "--data", data, "--epochs", "3",
                "--save-weights", str(tmp_path / "full.npz"))
    assert full.returncode == 0, full.stderr[-2000:]
    part = _run(py, "train", tr, "--data", data, "--epochs", "2",
                "--save-checkpoint", str(tmp_path / "ckpt.npz"))
    assert part.returncode == 0, part.stderr[-2000:]
    rest = _run(py, "train", tr, "--data", data, "--epochs", "1",
                "--resume", str(tmp_path / "ckpt.npz"),
                "--save-weights", str(tmp_path / "resumed.npz"))
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert "resumed from" in rest.stdout and "after 2 epochs" in rest.stdout

    def losses(res):
        return json.loads(res.stdout.split("losses: ")[1].splitlines()[0])

    assert losses(part) + losses(rest) == losses(full)
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
