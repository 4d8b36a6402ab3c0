"""Model builders shared by the tflite_export tests."""

import numpy as np


def zero_out(model, density=0.1, block=1, seed=0):
    """Zeros (1 - density) of every kernel: random unstructured (block=1) or
    in 1 x `block` blocks along the Dense input dimension."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        k = np.asarray(kernel)
        if k.ndim == 2 and block > 1:
            n_in, n_out = k.shape
            keep = rng.random((n_in // block, n_out)) < density
            mask = np.repeat(keep, block, axis=0)
        else:
            mask = rng.random(k.shape) < density
        kernel.assign((k * mask).astype(k.dtype))
    return model


def mlp(sizes=(64, 128, 10), activation="relu", use_bias=True):
    import keras

    layers = [keras.Input((sizes[0],))]
    for n in sizes[1:-1]:
        layers.append(keras.layers.Dense(n, activation=activation,
                                         use_bias=use_bias))
    layers.append(keras.layers.Dense(sizes[-1], use_bias=use_bias))
    return keras.Sequential(layers)


def small_cnn(input_shape=(28, 28, 1), widths=(32, 64, 256), pool="max"):
    """conv32-pool-conv64-pool-dense256-dense10, ReLU."""
    import keras

    pool_cls = (keras.layers.MaxPooling2D if pool == "max"
                else keras.layers.AveragePooling2D)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(widths[0], 3, activation="relu"),
        pool_cls(2),
        keras.layers.Conv2D(widths[1], 3, activation="relu", padding="same"),
        pool_cls(2),
        keras.layers.Flatten(),
        keras.layers.Dense(widths[2], activation="relu"),
        keras.layers.Dense(10),
    ])


def tflite_runtime_python():
    """Path of the Python of the tflite-runtime 2.14 venv (numpy<2).

    `TFLITE_RUNTIME_PYTHON` wins; else `<repo>/.venv-tflrt/bin/python`
    (made by `make tflrt-venv`). Returns None when none exists.
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    for cand in (os.environ.get("TFLITE_RUNTIME_PYTHON"),
                 os.path.join(repo, ".venv-tflrt", "bin", "python")):
        if cand and os.path.exists(cand):
            return cand
    return None


def require_tflite_runtime_python():
    """The venv Python, failing (not skipping) under CI when it is absent."""
    import os

    import pytest

    py = tflite_runtime_python()
    if py is None:
        msg = ("tflite-runtime venv not found: create it with `python3 -m venv "
               ".venv-tflrt && .venv-tflrt/bin/pip install 'numpy<2' "
               "tflite-runtime==2.14.0` or set TFLITE_RUNTIME_PYTHON")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return py


def mask_constraint(mask):
    """A Keras constraint that multiplies by a fixed mask (the reference for
    on-device mask preservation; keras_sparse uses the same public hook)."""
    import keras

    class _Mask(keras.constraints.Constraint):
        def __call__(self, w):
            return w * mask

    return _Mask()


def keras_reference_steps(model, optimizer, loss, xs, ys):
    """Trains a clone of `model` with Keras on the batches; returns
    (losses, weights) with pruned kernel entries kept at zero."""
    import keras
    import numpy as np

    km = keras.models.clone_model(model)
    km.set_weights(model.get_weights())
    for layer in km.layers:
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.constraint = mask_constraint(
                (np.asarray(layer.kernel) != 0).astype("float32"))
    km.compile(optimizer=optimizer, loss=loss, jit_compile=False)
    losses = [float(km.train_on_batch(x, y)) for x, y in zip(xs, ys)]
    return losses, [np.asarray(v) for v in km.trainable_weights]


def randomize_batchnorm(model, seed=0):
    """Non-trivial BN statistics and affine parameters (in place)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


def train_in_tflite_runtime(tmp_path, path, xs, ys):
    """get_weights, one train step per batch, get_weights and infer on the
    first batch, in the tflite-runtime 2.14 venv (no TensorFlow, no Keras
    imported). Returns `(losses, weights before, weights after, output)`."""
    import subprocess

    py = require_tflite_runtime_python()
    np.savez(tmp_path / "batches.npz", xs=xs, ys=ys)
    script = f"""
import sys, numpy as np
from tflite_runtime.interpreter import Interpreter
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
it = Interpreter(model_path={str(path)!r}); it.allocate_tensors()
d = np.load({str(tmp_path / 'batches.npz')!r})
w0 = it.get_signature_runner("get_weights")()
train = it.get_signature_runner("train")
losses = [float(train(x=x, y=y)["loss"]) for x, y in zip(d["xs"], d["ys"])]
w1 = it.get_signature_runner("get_weights")()
out = it.get_signature_runner("infer")(x=d["xs"][0])["output"]
np.savez({str(tmp_path / 'out.npz')!r}, losses=np.array(losses), out=out,
         **{{"w0_" + k: v for k, v in w0.items()}},
         **{{"w1_" + k: v for k, v in w1.items()}})
"""
    res = subprocess.run([py, "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    w0 = {k[3:]: out[k] for k in out.files if k.startswith("w0_")}
    w1 = {k[3:]: out[k] for k in out.files if k.startswith("w1_")}
    return out["losses"], w0, w1, out["out"]
