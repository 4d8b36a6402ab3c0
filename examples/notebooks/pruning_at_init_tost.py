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
# # Pruning at initialization + ToST
#
# Draw a mask before training with SNIP (or GraSP, SynFlow, random), or find a
# lottery ticket by iterative magnitude pruning (`METHOD = "lth"`), train it
# as is, and train the same mask with ToST's tweaks (ghost skips, ghost Swish,
# LRSI, label smoothing), which are all removed at the end so the final
# model is a plain sparse ReLU network of the original graph.
#
# The same story as a script: `python examples/tost_on_fixed_mask.py`
# (`--mask lth`, `--quick`).
#
# Model: the library's CIFAR-style ResNet-20 for 28x28x1 inputs (ghost skips
# are learned 1x1 jumps on the convolutions of residual blocks).

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
EPOCHS = 1 if QUICK else (30 if FULL_RECIPE else 3)
TRAIN_SIZE = 2000 if QUICK else (None if FULL_RECIPE else 20000)
TEST_SIZE = 1000 if QUICK else None
SPARSITY = 0.95
METHOD = "snip"  # "snip", "grasp", "synflow", "random" or "lth" (lottery ticket)
# lth: largest fraction of the survivors pruned per IMP round (the paper: 0.2, i.e.
# 14 rounds of EPOCHS each to reach 95%; quick mode: 2 rounds)
LTH_MAX_PRUNE = 0.8 if QUICK else 0.2
DEPTH = 8 if QUICK else 20
METHODS = ("snip", "grasp", "synflow", "random", "lth")
if METHOD not in METHODS:
    raise ValueError(f"METHOD must be one of {METHODS}; received {METHOD!r}")

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


# %%
import keras_sparse as ks
from keras_sparse import lottery, pruning, tost
from keras_sparse.models import cifar_resnet

def new_model(seed=0):
    keras.utils.set_random_seed(seed)
    return cifar_resnet(DEPTH, input_shape=(28, 28, 1))

ticket = None
if METHOD == "lth":  # IMP: train, prune by global magnitude, rewind to init; repeat
    rounds, fraction = lottery.imp_schedule(SPARSITY, LTH_MAX_PRUNE)
    print(f"lottery ticket: {rounds} IMP rounds of {EPOCHS} epoch(s), "
          f"{fraction:.1%} of the survivors pruned each")
    ticket = lottery.find_ticket(compile_sgd(new_model(), EPOCHS),
                                 dict(x=x_train, y=y_train, batch_size=128, epochs=EPOCHS),
                                 rounds=rounds, prune_per_round=fraction, scope="global")

def make_mask(seed=0):
    model = new_model(seed)
    if METHOD == "lth":  # the same ticket, rewound, every time
        return ticket.apply(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    idx = np.random.default_rng(seed).choice(len(x_train), 256, replace=False)
    data = (x_train[idx], y_train[idx]) if METHOD in ("snip", "grasp") else None
    kwargs = dict(data=data, loss=loss) if data is not None else {}
    if METHOD == "random":
        kwargs["seed"] = seed
    return pruning.prune_at_init(model, METHOD, SPARSITY, **kwargs)

plain_mask = make_mask()
print(f"{METHOD} mask sparsity: {ks.sparsity_report(plain_mask).total_sparsity:.4f}")

# %% [markdown]
# ## The mask, trained as is

# %%
compile_sgd(plain_mask, EPOCHS)
plain_mask.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2)
acc_plain = accuracy(plain_mask)
print("without ToST:", acc_plain)

# %% [markdown]
# ## The same mask with ToST

# %%
# LRSI searches the layer-wise init scales on training batches before
# training (390 steps as in the authors' code; fewer in quick mode).
helper = tost.ToST(lrsi_iterations=10 if QUICK else 390)
prepared = helper.prepare(make_mask(), data=(x_train, y_train),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
compile_sgd(prepared, EPOCHS, loss=helper.loss(from_logits=True))
prepared.fit(x_train, y_train, batch_size=128, epochs=EPOCHS,
             callbacks=[helper.callback()], verbose=2)
final, report = helper.finalize(prepared, validation_data=(x_test, y_test))
final = ks.strip(final)
acc_tost = accuracy(final)
print(f"with ToST (plain ReLU model after removing every tweak): {acc_tost:.4f}")
print("Swish -> ReLU swap changed accuracy by", report.get("swap_accuracy_change"))
print(f"{METHOD} {SPARSITY:.0%}: without ToST {acc_plain:.4f}, with ToST {acc_tost:.4f}")

# %% [markdown]
# Short budgets are noisy: compare over several seeds and the
# protocol's epoch budget (`python -m benchmarks.accuracy --methods snip snip_tost`,
# `lth lth_tost` for tickets) before drawing conclusions.
