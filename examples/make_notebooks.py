"""Writes the Colab notebooks in examples/ from the cells below (nbformat).

    python examples/make_notebooks.py          # (re)write the .ipynb files
    python examples/make_notebooks.py --check  # exit 1 if a file is stale

Edit the cells here, not the .ipynb files. Every notebook reads
`KERAS_SPARSE_NOTEBOOK_QUICK=1` (tiny settings, used by CI) and has a
`FULL_RECIPE` flag for the long run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

INSTALL_MD = """## Install

`keras_sparse` is **not on PyPI yet** (`pip install keras-sparse` does not
work) and has no public repository URL to default to, so the cell below
installs it from the first of these that it finds:

1. **`REPO_URL`**: set it in the cell to the git URL of your fork or clone
   (`https://github.com/<you>/keras_sparse.git`, or a `...@branch` URL):
   `pip install "keras_sparse[tflite,examples] @ git+REPO_URL"`.
2. **A checkout**: this notebook opened from `examples/` of the repository
   (locally, or after `!git clone` / uploading and unzipping it into
   Colab's `/content`): `pip install -e <checkout>[tflite,examples]`.
3. **An upload**: a wheel (`keras_sparse-*.whl`, from `python -m build
   --wheel` in a checkout) or the repository as a zip (`keras_sparse*.zip`)
   uploaded to `/content` (Colab's Files panel).

Otherwise it stops with a message listing these options. When
`keras_sparse` is already importable (e.g. `PYTHONPATH` points at the
repository, as in CI), the cell installs nothing."""

# The part of the install cell that is plain Python (no %pip), so
# tests/test_examples_notebooks.py can exercise it without a network.
INSTALL_HELPER = """import glob, importlib, importlib.util, os, shlex, sys
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
"""

INSTALL_CODE = INSTALL_HELPER + """
if importlib.util.find_spec("keras_sparse") is None:
    pip_args, checkout = install_source()
    print("pip install", pip_args)
    %pip install -q {pip_args}
    importlib.invalidate_caches()
    if checkout and importlib.util.find_spec("keras_sparse") is None:
        sys.path.insert(0, checkout)  # an editable install is seen only after a restart
if importlib.util.find_spec("keras_sparse") is None:
    raise RuntimeError("pip did not make keras_sparse importable: see its output above "
                       "(on Colab, Runtime > Restart session and rerun this cell).")
print("keras_sparse found:", importlib.util.find_spec("keras_sparse").origin)"""

SETTINGS_CODE = """import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CI sets KERAS_SPARSE_NOTEBOOK_QUICK=1: a few hundred steps on a data subset.
QUICK = os.environ.get("KERAS_SPARSE_NOTEBOOK_QUICK") == "1"
FULL_RECIPE = False  # True: the full recipe below (tens of minutes on a CPU)
"""

DATA_MD = """## Data

Fashion-MNIST, 60k/10k 28x28 images. `load_fashion_mnist` reads local IDX
files first (Debian's `dataset-fashion-mnist`, a `data_dir`, or
`$KERAS_SPARSE_FASHION_MNIST_DIR`), so it works **offline**; without local
files (e.g. on Colab) it falls back to the Keras downloader."""

DATA_CODE = """import numpy as np
from keras_sparse.datasets import load_fashion_mnist

(x_train, y_train), (x_test, y_test) = load_fashion_mnist()
if TRAIN_SIZE is not None:
    x_train, y_train = x_train[:TRAIN_SIZE], y_train[:TRAIN_SIZE]
if TEST_SIZE is not None:
    x_test, y_test = x_test[:TEST_SIZE], y_test[:TEST_SIZE]
print(x_train.shape, x_test.shape)"""

COMPILE_CODE = """import math
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
    return float(np.mean(model.predict(x_test, batch_size=1000, verbose=0).argmax(-1) == y_test))"""


def quickstart() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("""# keras_sparse quick start: 90% sparse CNN on Fashion-MNIST

Make a Keras 3 model sparse with the ERK per-layer allocation (RigL's),
train it with plain `model.fit`, compare fixed random masks (static sparse
training) with RigL dynamic sparse training and a dense baseline, and strip
the result back to a plain Keras model with exact zeros.

The same story as a script: `python examples/quickstart.py` (`--quick` for
this notebook's quick settings)."""),
        new_markdown_cell(INSTALL_MD),
        new_code_cell(INSTALL_CODE),
        new_code_cell(SETTINGS_CODE + """EPOCHS = 1 if QUICK else (20 if FULL_RECIPE else 3)
TRAIN_SIZE = 5000 if QUICK else None
TEST_SIZE = 2000 if QUICK else None
SPARSITY = 0.9"""),
        new_markdown_cell(DATA_MD),
        new_code_cell(DATA_CODE),
        new_code_cell(COMPILE_CODE),
        new_markdown_cell("""## Static sparse training (fixed ERK masks)

`ks.sparsify` wraps every prunable layer in a `SparseWrapper` with a seeded
random mask; pruned weights stay exactly zero after every optimizer step."""),
        new_code_cell("""import keras_sparse as ks
from keras_sparse.models import small_cnn

keras.utils.set_random_seed(0)
static = ks.sparsify(small_cnn(), sparsity=SPARSITY, distribution="erk", seed=0)
compile_sgd(static, EPOCHS)
static.fit(x_train, y_train, batch_size=128, epochs=EPOCHS,
           callbacks=[ks.callbacks.SparsityLogger()], verbose=2)
report = ks.summary(static)
print("static ERK accuracy:", accuracy(static))"""),
        new_markdown_cell("""## RigL: dynamic sparse training

Same masks budget; every `update_interval` steps RigL drops the smallest
weights and regrows where the dense gradient is largest."""),
        new_code_cell("""from keras_sparse import algorithms
import math
steps = EPOCHS * math.ceil(len(x_train) / 128)
keras.utils.set_random_seed(0)
rigl = ks.sparsify(small_cnn(), sparsity=SPARSITY, distribution="erk", seed=0)
compile_sgd(rigl, EPOCHS)
updater = algorithms.RigL(update_interval=int(min(100, max(10, steps // 10))), seed=0)
history = rigl.fit(x_train, y_train, batch_size=128, epochs=EPOCHS,
                   callbacks=[ks.callbacks.DynamicSparseTraining(updater)], verbose=2)
print("RigL ERK accuracy:", accuracy(rigl), " ITOP rate:", history.history.get("itop_rate", [None])[-1])"""),
        new_code_cell("""keras.utils.set_random_seed(0)
dense = compile_sgd(small_cnn(), EPOCHS)
dense.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2)
print(f"dense {accuracy(dense):.4f} | static ERK {accuracy(static):.4f} | RigL ERK {accuracy(rigl):.4f}")"""),
        new_markdown_cell("## Strip to a plain Keras model"),
        new_code_cell("""plain = ks.strip(rigl)
kernels = [w.numpy() for w in plain.weights if w.path.endswith("kernel")]
zeros = sum(int((k == 0).sum()) for k in kernels); total = sum(k.size for k in kernels)
print(type(plain).__name__, f"{zeros / total:.2%} of kernel entries exactly zero")
assert np.allclose(plain.predict(x_test[:256], verbose=0), rigl.predict(x_test[:256], verbose=0), atol=1e-5)"""),
    ])


def pai_tost() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("""# Pruning at initialization + ToST

Draw a mask before training with SNIP (or GraSP, SynFlow, random), or find a
lottery ticket by iterative magnitude pruning (`METHOD = "lth"`), train it
as is, and train the same mask with ToST's tweaks (ghost skips, ghost Swish,
LRSI, label smoothing), which are all removed at the end so the final
model is a plain sparse ReLU network of the original graph.

The same story as a script: `python examples/tost_on_fixed_mask.py`
(`--mask lth`, `--quick`).

Model: the library's CIFAR-style ResNet-20 for 28x28x1 inputs (ghost skips
are learned 1x1 jumps on the convolutions of residual blocks)."""),
        new_markdown_cell(INSTALL_MD),
        new_code_cell(INSTALL_CODE),
        new_code_cell(SETTINGS_CODE + """EPOCHS = 1 if QUICK else (30 if FULL_RECIPE else 3)
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
    raise ValueError(f"METHOD must be one of {METHODS}; received {METHOD!r}")"""),
        new_markdown_cell(DATA_MD),
        new_code_cell(DATA_CODE),
        new_code_cell(COMPILE_CODE),
        new_code_cell("""import keras_sparse as ks
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
print(f"{METHOD} mask sparsity: {ks.sparsity_report(plain_mask).total_sparsity:.4f}")"""),
        new_markdown_cell("## The mask, trained as is"),
        new_code_cell("""compile_sgd(plain_mask, EPOCHS)
plain_mask.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2)
acc_plain = accuracy(plain_mask)
print("without ToST:", acc_plain)"""),
        new_markdown_cell("## The same mask with ToST"),
        new_code_cell("""# LRSI searches the layer-wise init scales on training batches before
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
print(f"{METHOD} {SPARSITY:.0%}: without ToST {acc_plain:.4f}, with ToST {acc_tost:.4f}")"""),
        new_markdown_cell("""Short budgets are noisy: compare over several seeds and the
protocol's epoch budget (`python -m benchmarks.accuracy --methods snip snip_tost`,
`lth lth_tost` for tickets) before drawing conclusions."""),
    ])


def tflite_on_device() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("""# Sparse model to TFLite / LiteRT, and on-device training

Train a 90% sparse small CNN, strip it, export it to a float32 `.tflite`
with sparse tensor encoding, check it against Keras in the LiteRT
interpreter, then export a *trainable* model (train / infer / get_weights /
set_weights signatures, builtin ops only) and run training steps with the
device-side runner, which imports only numpy and a TFLite runtime.

The same story as a script: `python examples/export_and_train_on_device.py`
(`--quick` for this notebook's quick settings), which runs the runner's
command line in a separate process, as on a device."""),
        new_markdown_cell(INSTALL_MD + "\n\nThis notebook also needs `ai-edge-litert` (the `tflite` extra)."),
        new_code_cell(INSTALL_CODE),
        new_code_cell(SETTINGS_CODE + """EPOCHS = 1 if QUICK else (10 if FULL_RECIPE else 2)
TRAIN_SIZE = 5000 if QUICK else None
TEST_SIZE = 1000 if QUICK else None
DEVICE_EPOCHS = 2
DEVICE_SAMPLES = 512 if QUICK else 4096"""),
        new_markdown_cell(DATA_MD),
        new_code_cell(DATA_CODE),
        new_code_cell(COMPILE_CODE),
        new_code_cell("""import keras_sparse as ks
from keras_sparse.models import small_cnn

keras.utils.set_random_seed(0)
sparse = ks.sparsify(small_cnn(), 0.9, distribution="erk", seed=0)
compile_sgd(sparse, EPOCHS)
sparse.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2)
plain = ks.strip(sparse)
print("Keras accuracy:", accuracy(plain))"""),
        new_markdown_cell("## Inference export, verified in LiteRT"),
        new_code_cell("""import tempfile, tflite_export
from tflite_export import runner

out = tempfile.mkdtemp()
path = os.path.join(out, "sparse.tflite")
report = tflite_export.export_inference(plain, path, precision="float32",
                                        sample_inputs=x_test[:16], latency_invokes=100)
print(report.to_markdown())
interp = runner.make_interpreter(path)
lite = runner.run_inference(interp, x_test[:1000], progress=False).argmax(-1)
keras_pred = plain.predict(x_test[:1000], verbose=0).argmax(-1)
print(f"bytes {report.num_bytes:,} vs dense float32 {report.dense_float32_bytes:,}; "
      f"Keras/LiteRT agreement on 1000 images: {np.mean(lite == keras_pred):.4f}")"""),
        new_markdown_cell("## On-device training with the runner"),
        new_code_cell("""train_path = os.path.join(out, "trainable.tflite")
treport = tflite_export.export_trainable(
    plain, train_path, keras.optimizers.SGD(0.01, momentum=0.9),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True), batch_size=32)
print(treport.signatures, f"{treport.num_bytes:,} bytes")
device = runner.make_interpreter(train_path)
runner.maybe_init_sparse(device)
before = runner.get_weights(device)
losses = runner.train_epochs(device, x_train[:DEVICE_SAMPLES], y_train[:DEVICE_SAMPLES],
                             epochs=DEVICE_EPOCHS)
after = runner.get_weights(device)
kept = all(np.all(after[k][before[k] == 0] == 0) for k in before if "kernel" in k)
print("mean loss per epoch:", losses, "| pruned entries still zero:", kept)"""),
        new_markdown_cell("""The same two files run on a device with
`python -m tflite_export.runner infer sparse.tflite --data x.npy` and
`python -m tflite_export.runner train trainable.tflite --data train.npz`."""),
    ])


def neurrev_cifar() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("""# NeurRev vs RigL on a CIFAR ResNet-32 (the NeurRev paper's Table 1 setting)

NeurRev (Li et al., ICLR 2024) is RigL plus *Search & Awake*: at every mask
update it relaxes the sparsity a little, then prunes back only **negative**
weights that barely changed since the last update, which wakes up dormant
ReLU neurons. This notebook trains the same 90% ERK ResNet-32 with RigL and
with NeurRev, reports test accuracy, the ITOP rate (share of weights ever
active) and the fraction of dormant ReLU channels over training.

* **Default** (minutes on a Colab GPU): CIFAR-10 through tensorflow-datasets,
  a 10k-image subset, 10 epochs.
* **`FULL_RECIPE = True`**: the papers' recipe: all 50k images, 160 epochs,
  SGD 0.1 momentum 0.9, batch 128, weight decay 5e-4, cosine decay, random
  crop + flip. The paper reports (CIFAR-10, ERK): RigL 93.55 / 92.39 / 90.22,
  NeurRev 93.84 / 92.93 / 90.84 at 90 / 95 / 98% (Table 1; dense 94.88).
  `examples/cifar_resnet32_recipe.py` is the same recipe as a script.
* **Offline** (no network, or CI's `KERAS_SPARSE_NOTEBOOK_QUICK=1`): when
  tensorflow-datasets cannot download CIFAR, the notebook falls back to the
  local Fashion-MNIST files, so every cell still runs.

Short runs do not reproduce the paper's numbers; see the project's
`benchmarks/results/` for what our budget shows."""),
        new_markdown_cell(INSTALL_MD),
        new_code_cell(INSTALL_CODE),
        new_code_cell(SETTINGS_CODE + """DATASET = "cifar10"  # or "cifar100"
SPARSITY = 0.9
DISTRIBUTION = "erk"
DEPTH = 8 if QUICK else 32
EPOCHS = 1 if QUICK else (160 if FULL_RECIPE else 10)
TRAIN_SIZE = 2000 if QUICK else (None if FULL_RECIPE else 10_000)
TEST_SIZE = 1000 if QUICK else None
AUGMENT = FULL_RECIPE
UPDATE_INTERVAL = 10 if QUICK else 100  # RigL's default: every 100 steps"""),
        new_markdown_cell("""## Data

CIFAR through `keras_sparse.datasets.load_cifar` (tensorflow-datasets,
downloads about 160 MB the first time). In quick mode, or when that fails
(no network), the local Fashion-MNIST files are used instead."""),
        new_code_cell("""import numpy as np
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
print(source, x_train.shape, x_test.shape, NUM_CLASSES, "classes")"""),
        new_markdown_cell("""## One training run

`ks.sparsify` draws the ERK masks; the DST algorithm runs as a `model.fit`
callback and takes its dense gradients from the training step itself. A
small callback records the dormant-channel fraction
(`keras_sparse.diagnostics.dormant_fraction`: ReLU channels that are zero on
at least 99% of a fixed probe batch) after every epoch."""),
        new_code_cell("""import math
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

results = {m: run(m) for m in ("rigl", "neurrev")}"""),
        new_markdown_cell("""## Results

In quick mode (CI) each run is a few dozen steps: too few for BatchNorm's
moving averages, so test accuracy sits near chance there; that mode only
checks that every cell runs."""),
        new_code_cell("""for name, r in results.items():
    print(f"{name:8s} test accuracy {r['accuracy']:.4f}  sparsity {r['sparsity']:.4f}  "
          f"ITOP rate {r['itop']:.3f}  dormant channels at the end {r['dormant'][-1]:.3f}")
print("awakened (NeurRev, last update):", results["neurrev"]["history"].get("awakened", [None])[-1])
for r in results.values():
    assert abs(r["sparsity"] - SPARSITY) < 1e-3"""),
        new_code_cell("""import matplotlib.pyplot as plt

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
plt.show()"""),
        new_markdown_cell("""ResNets with BatchNorm before every ReLU have few dormant channels to
begin with (our Fashion-MNIST ResNet-20 runs: under 1%); NeurRev's effect on
dormant neurons is clearest on networks without normalization (the small
CNN in `benchmarks/results/dormant_itop.md`)."""),
    ])


NOTEBOOKS = {
    "quickstart_static_erk.ipynb": quickstart,
    "pruning_at_init_tost.ipynb": pai_tost,
    "tflite_on_device_training.ipynb": tflite_on_device,
    "neurrev_cifar_resnet32.ipynb": neurrev_cifar,
}


def render(builder) -> str:
    nb = builder()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives identical files
        cell["id"] = f"cell-{i}"
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    stale = []
    for name, builder in NOTEBOOKS.items():
        text, path = render(builder), HERE / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print("wrote", path)
    if stale:
        print("stale notebooks (run python examples/make_notebooks.py):", stale)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
