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
# # NeurRev vs RigL on a CIFAR ResNet-32 (the NeurRev paper's Table 1 setting)
#
# NeurRev (Li et al., ICLR 2024) is RigL plus *Search & Awake*: at every mask
# update it relaxes the sparsity a little, then prunes back only **negative**
# weights that barely changed since the last update, which wakes up dormant
# ReLU neurons. This notebook trains the same 90% ERK ResNet-32 with RigL and
# with NeurRev, reports test accuracy, the ITOP rate (share of weights ever
# active) and the fraction of dormant ReLU channels over training.
#
# * **Default** (minutes on a Colab GPU): CIFAR-10 through tensorflow-datasets,
#   a 10k-image subset, 10 epochs.
# * **`FULL_RECIPE = True`**: the papers' recipe: all 50k images, 160 epochs,
#   SGD 0.1 momentum 0.9, batch 128, weight decay 5e-4, cosine decay, random
#   crop + flip. The paper reports (CIFAR-10, ERK): RigL 93.55 / 92.39 / 90.22,
#   NeurRev 93.84 / 92.93 / 90.84 at 90 / 95 / 98% (Table 1; dense 94.88).
#   `examples/cifar_resnet32_recipe.py` is the same recipe as a script.
# * **Offline** (no network, or CI's `KERAS_SPARSE_NOTEBOOK_QUICK=1`): when
#   tensorflow-datasets cannot download CIFAR, the notebook falls back to the
#   local Fashion-MNIST files, so every cell still runs.
#
# Short runs do not reproduce the paper's numbers; see the project's
# `benchmarks/results/` for what our budget shows.

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
DATASET = "cifar10"  # or "cifar100"
SPARSITY = 0.9
DISTRIBUTION = "erk"
DEPTH = 8 if QUICK else 32
EPOCHS = 1 if QUICK else (160 if FULL_RECIPE else 10)
TRAIN_SIZE = 2000 if QUICK else (None if FULL_RECIPE else 10_000)
TEST_SIZE = 1000 if QUICK else None
AUGMENT = FULL_RECIPE
UPDATE_INTERVAL = 10 if QUICK else 100  # RigL's default: every 100 steps

# %% [markdown]
# ## Data
#
# CIFAR through `keras_sparse.datasets.load_cifar` (tensorflow-datasets,
# downloads about 160 MB the first time). In quick mode, or when that fails
# (no network), the local Fashion-MNIST files are used instead.

# %%
from keras_sparse import datasets

source = DATASET
try:
    if QUICK:
        raise RuntimeError("quick mode: offline data")
    (x_train, y_train), (x_test, y_test) = datasets.load_cifar(DATASET)
except Exception as e:  # no tensorflow-datasets, or no network
    print(f"CIFAR unavailable ({type(e).__name__}: {str(e)[:120]}); using Fashion-MNIST")
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
    source = "fashion_mnist"
if TRAIN_SIZE is not None:
    x_train, y_train = x_train[:TRAIN_SIZE], y_train[:TRAIN_SIZE]
if TEST_SIZE is not None:
    x_test, y_test = x_test[:TEST_SIZE], y_test[:TEST_SIZE]
mean, std = x_train.mean(axis=(0, 1, 2)), x_train.std(axis=(0, 1, 2))
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
NUM_CLASSES = int(y_train.max()) + 1
print(source, x_train.shape, x_test.shape, NUM_CLASSES, "classes")

# %% [markdown]
# ## One training run
#
# `ks.sparsify` draws the ERK masks; the DST algorithm runs as a `model.fit`
# callback and takes its dense gradients from the training step itself. A
# small callback records the dormant-channel fraction
# (`keras_sparse.diagnostics.dormant_fraction`: ReLU channels that are zero on
# at least 99% of a fixed probe batch) after every epoch.

# %%
import math
import keras
import tensorflow as tf
import keras_sparse as ks
from keras_sparse import algorithms, diagnostics
from keras_sparse.models import cifar_resnet

probe = x_test[:256]

class DormantTracker(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []
    def on_epoch_end(self, epoch, logs=None):
        self.values.append(diagnostics.dormant_fraction(self.model, probe)["all"])

def train_set():
    ds = tf.data.Dataset.from_tensor_slices((x_train.astype("float32"), y_train))
    ds = ds.shuffle(len(x_train), seed=0)
    if AUGMENT:  # 4-pixel pad + random crop + horizontal flip
        h, w, c = x_train.shape[1:]
        ds = ds.map(lambda x, y: (tf.image.random_flip_left_right(tf.image.random_crop(
            tf.image.pad_to_bounding_box(x, 4, 4, h + 8, w + 8), (h, w, c))), y))
    return ds.batch(128).prefetch(tf.data.AUTOTUNE)

def run(method):
    keras.utils.set_random_seed(0)
    model = cifar_resnet(DEPTH, input_shape=x_train.shape[1:], num_classes=NUM_CLASSES)
    sparse = ks.sparsify(model, SPARSITY, distribution=DISTRIBUTION, seed=0)
    steps = EPOCHS * math.ceil(len(x_train) / 128)
    sparse.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, steps),
                                       momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    updater = algorithms.get({"class_name": method,
                              "config": {"update_interval": UPDATE_INTERVAL, "seed": 0}})
    tracker = DormantTracker()
    history = sparse.fit(train_set(), epochs=EPOCHS, verbose=2,
                         callbacks=[ks.callbacks.DynamicSparseTraining(updater), tracker])
    _, acc = sparse.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    return {"accuracy": acc, "itop": history.history["itop_rate"][-1],
            "dormant": tracker.values, "sparsity": ks.sparsity_report(sparse).total_sparsity,
            "history": history.history}

results = {m: run(m) for m in ("rigl", "neurrev")}

# %% [markdown]
# ## Results
#
# In quick mode (CI) each run is a few dozen steps: too few for BatchNorm's
# moving averages, so test accuracy sits near chance there; that mode only
# checks that every cell runs.

# %%
for name, r in results.items():
    print(f"{name:8s} test accuracy {r['accuracy']:.4f}  sparsity {r['sparsity']:.4f}  "
          f"ITOP rate {r['itop']:.3f}  dormant channels at the end {r['dormant'][-1]:.3f}")
print("awakened (NeurRev, last update):", results["neurrev"]["history"].get("awakened", [None])[-1])
for r in results.values():
    assert abs(r["sparsity"] - SPARSITY) < 1e-3

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for name, r in results.items():
    epochs = range(1, len(r["dormant"]) + 1)
    ax[0].plot(epochs, r["dormant"], marker="o", label=name)
    ax[1].plot(epochs, r["history"]["itop_rate"], marker="o", label=name)
ax[0].set(xlabel="epoch", ylabel="dormant ReLU channels", title="dormant fraction")
ax[1].set(xlabel="epoch", ylabel="ITOP rate", title="weights ever active")
for a in ax:
    a.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ResNets with BatchNorm before every ReLU have few dormant channels to
# begin with (our Fashion-MNIST ResNet-20 runs: under 1%); NeurRev's effect on
# dormant neurons is clearest on networks without normalization (the small
# CNN in `benchmarks/results/dormant_itop.md`).
