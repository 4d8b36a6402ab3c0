# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # keras_sparse quick start: 90% sparse CNN on Fashion-MNIST
#
# Make a Keras 3 model sparse with the ERK per-layer allocation (RigL's),
# train it with plain `model.fit`, compare fixed random masks (static sparse
# training) with RigL dynamic sparse training and a dense baseline, and strip
# the result back to a plain Keras model with exact zeros.
#
# The same story as a script: `python examples/quickstart.py` (`--quick` for
# this notebook's quick settings).

# %% [markdown]
# ## Install
#
# `keras_sparse` is **not on PyPI yet** (`pip install keras-sparse` does not
# work) and has no public repository URL to default to, so the cell below
# installs it from the first of these that it finds:
#
# 1. **`REPO_URL`**: set it in the cell to the git URL of your fork or clone
#    (`https://github.com/<you>/keras_sparse.git`, or a `...@branch` URL):
#    `pip install "keras_sparse[tflite,examples] @ git+REPO_URL"`.
# 2. **A checkout**: this notebook opened from `examples/` of the repository
#    (locally, or after `!git clone` / uploading and unzipping it into
#    Colab's `/content`): `pip install -e <checkout>[tflite,examples]`.
# 3. **An upload**: a wheel (`keras_sparse-*.whl`, from `python -m build
#    --wheel` in a checkout) or the repository as a zip (`keras_sparse*.zip`)
#    uploaded to `/content` (Colab's Files panel).
#
# Otherwise it stops with a message listing these options. When
# `keras_sparse` is already importable (e.g. `PYTHONPATH` points at the
# repository, as in CI), the cell installs nothing.

# %%
import glob
import importlib
import importlib.util
import os
import shlex
import sys
from pathlib import Path

IN_COLAB = "google.colab" in sys.modules
REPO_URL = ""  # your fork's / clone's git URL, e.g. "https://github.com/<you>/keras_sparse.git"
EXTRAS = "[tflite,examples]"

# A keras_sparse checkout: `start` or a folder above it, else a keras_sparse*/ folder in it.
def find_checkout(start="."):
    def is_checkout(path):
        return (os.path.isfile(os.path.join(path, "setup.py"))
                and os.path.isfile(os.path.join(path, "keras_sparse", "__init__.py")))
    path = os.path.abspath(start)
    while True:
        if is_checkout(path):
            return path
        if os.path.dirname(path) == path:
            break
        path = os.path.dirname(path)
    below = [p for p in sorted(glob.glob(os.path.join(os.path.abspath(start), "keras_sparse*")))
             if is_checkout(p)]
    return below[0] if below else None

# (pip arguments, checkout or None), from REPO_URL, else a checkout, else an upload.
def install_source(repo_url=REPO_URL, start=".", upload_dir="/content"):
    if repo_url:
        url = repo_url if repo_url.startswith("git+") else "git+" + repo_url
        return shlex.quote(f"keras_sparse{EXTRAS} @ {url}"), None
    checkout = find_checkout(start)
    if checkout:
        return "-e " + shlex.quote(checkout + EXTRAS), checkout
    uploads = (sorted(glob.glob(os.path.join(upload_dir, "keras_sparse*.whl")))
               or sorted(glob.glob(os.path.join(upload_dir, "keras_sparse*.zip"))))
    if uploads:  # a wheel first; the newest name when there are several
        uri = Path(uploads[-1]).resolve().as_uri()
        return shlex.quote(f"keras_sparse{EXTRAS} @ {uri}"), None
    raise RuntimeError(
        "keras_sparse is not installed, and it is not on PyPI yet. Do one of these, then rerun "
        "this cell: (1) set REPO_URL in this cell to the git URL of your fork or clone of the "
        "repository; (2) open this notebook from a checkout's examples/ folder, or clone / "
        f"upload and unzip the repository into {upload_dir} (no setup.py was found from "
        f"{os.path.abspath(start)} upwards, nor in a keras_sparse*/ folder there); (3) upload "
        f"a keras_sparse*.whl (python -m build --wheel) or keras_sparse*.zip to {upload_dir}.")

if importlib.util.find_spec("keras_sparse") is None:
    pip_args, checkout = install_source()
    print("pip install", pip_args)
    # %pip install -q {pip_args}
    importlib.invalidate_caches()
    if checkout and importlib.util.find_spec("keras_sparse") is None:
        sys.path.insert(0, checkout)  # an editable install is seen only after a restart
if importlib.util.find_spec("keras_sparse") is None:
    raise RuntimeError("pip did not make keras_sparse importable: see its output above "
                       "(on Colab, Runtime > Restart session and rerun this cell).")
print("keras_sparse found:", importlib.util.find_spec("keras_sparse").origin)

# %%
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CI sets KERAS_SPARSE_NOTEBOOK_QUICK=1: a few hundred steps on a data subset.
QUICK = os.environ.get("KERAS_SPARSE_NOTEBOOK_QUICK") == "1"
FULL_RECIPE = False  # True: the full recipe below (tens of minutes on a CPU)
EPOCHS = 1 if QUICK else (20 if FULL_RECIPE else 3)
TRAIN_SIZE = 5000 if QUICK else None
TEST_SIZE = 2000 if QUICK else None
SPARSITY = 0.9

# %% [markdown]
# ## Data
#
# Fashion-MNIST, 60k/10k 28x28 images. `load_fashion_mnist` reads local IDX
# files first (Debian's `dataset-fashion-mnist`, a `data_dir`, or
# `$KERAS_SPARSE_FASHION_MNIST_DIR`), so it works **offline**; without local
# files (e.g. on Colab) it falls back to the Keras downloader.

# %%
import numpy as np
from keras_sparse.datasets import load_fashion_mnist

(x_train, y_train), (x_test, y_test) = load_fashion_mnist()
if TRAIN_SIZE is not None:
    x_train, y_train = x_train[:TRAIN_SIZE], y_train[:TRAIN_SIZE]
if TEST_SIZE is not None:
    x_test, y_test = x_test[:TEST_SIZE], y_test[:TEST_SIZE]
print(x_train.shape, x_test.shape)

# %%
import math
import keras

def compile_sgd(model, epochs, loss=None, lr=0.1):
    steps = epochs * math.ceil(len(x_train) / 128)
    model.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(lr, steps),
                                       momentum=0.9),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    return model

def accuracy(model):
    return float(np.mean(model.predict(x_test, batch_size=1000, verbose=0).argmax(-1) == y_test))


# %% [markdown]
# ## Static sparse training (fixed ERK masks)
#
# `ks.sparsify` wraps every prunable layer in a `SparseWrapper` with a seeded
# random mask; pruned weights stay exactly zero after every optimizer step.

# %%
import keras_sparse as ks
from keras_sparse.models import small_cnn

keras.utils.set_random_seed(0)
static = ks.sparsify(small_cnn(), sparsity=SPARSITY, distribution="erk", seed=0)
compile_sgd(static, EPOCHS)
static.fit(x_train, y_train, batch_size=128, epochs=EPOCHS,
           callbacks=[ks.callbacks.SparsityLogger()], verbose=2)
report = ks.summary(static)
print("static ERK accuracy:", accuracy(static))

# %% [markdown]
# ## RigL: dynamic sparse training
#
# Same masks budget; every `update_interval` steps RigL drops the smallest
# weights and regrows where the dense gradient is largest.

# %%
from keras_sparse import algorithms

steps = EPOCHS * math.ceil(len(x_train) / 128)
keras.utils.set_random_seed(0)
rigl = ks.sparsify(small_cnn(), sparsity=SPARSITY, distribution="erk", seed=0)
compile_sgd(rigl, EPOCHS)
updater = algorithms.RigL(update_interval=int(min(100, max(10, steps // 10))), seed=0)
history = rigl.fit(x_train, y_train, batch_size=128, epochs=EPOCHS,
                   callbacks=[ks.callbacks.DynamicSparseTraining(updater)], verbose=2)
print("RigL ERK accuracy:", accuracy(rigl), " ITOP rate:", history.history.get("itop_rate", [None])[-1])

# %%
keras.utils.set_random_seed(0)
dense = compile_sgd(small_cnn(), EPOCHS)
dense.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2)
print(f"dense {accuracy(dense):.4f} | static ERK {accuracy(static):.4f} | RigL ERK {accuracy(rigl):.4f}")

# %% [markdown]
# ## Strip to a plain Keras model

# %%
plain = ks.strip(rigl)
kernels = [w.numpy() for w in plain.weights if w.path.endswith("kernel")]
zeros = sum(int((k == 0).sum()) for k in kernels)
total = sum(k.size for k in kernels)
print(type(plain).__name__, f"{zeros / total:.2%} of kernel entries exactly zero")
assert np.allclose(plain.predict(x_test[:256], verbose=0), rigl.predict(x_test[:256], verbose=0), atol=1e-5)
