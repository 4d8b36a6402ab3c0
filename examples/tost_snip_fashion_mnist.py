"""SNIP (or GraSP / SynFlow / random) masks trained with and without ToST.

Fashion-MNIST from the Debian package `dataset-fashion-mnist` (IDX .gz files
in /usr/share/datasets/fashion-mnist). The model is a small CIFAR-style
ResNet for 28x28 inputs built inline (stem + 3 stages of one basic block,
widths 16/32/64), so ghost skips have blocks to go around.

    python examples/tost_snip_fashion_mnist.py --method snip --sparsity 0.95 \
        --epochs 3 --train-size 20000 --seeds 0 1

Prints one line per run and a Markdown table; `--out results.json` saves
the numbers. The ToST row reports the final accuracy of the plain sparse
ReLU model (after ghost removal, Swish->ReLU swap and LRSI folding) and the
accuracy change caused by the swap.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sparse  # noqa: E402
from keras_sparse import pruning, tost  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(root=DATA):
    x = load_idx(f"{root}/train-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    y = load_idx(f"{root}/train-labels-idx1-ubyte.gz").astype("int32")
    xt = load_idx(f"{root}/t10k-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
    yt = load_idx(f"{root}/t10k-labels-idx1-ubyte.gz").astype("int32")
    mean, std = x.mean(), x.std()
    return (x - mean) / std, y, (xt - mean) / std, yt


def small_resnet(input_shape=(28, 28, 1), num_classes=10, widths=(16, 32, 64)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    for s, width in enumerate(widths):
        stride = 1 if s == 0 else 2
        y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                                name=f"s{s}_c1")(x)
        y = keras.layers.ReLU(name=f"s{s}_r1")(keras.layers.BatchNormalization(name=f"s{s}_bn1")(y))
        y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{s}_c2")(y)
        y = keras.layers.BatchNormalization(name=f"s{s}_bn2")(y)
        if stride != 1:
            x = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"s{s}_proj")(x)
            x = keras.layers.BatchNormalization(name=f"s{s}_pbn")(x)
        x = keras.layers.ReLU(name=f"s{s}_out")(keras.layers.Add(name=f"s{s}_add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="fc")(x))


def make_mask(method, sparsity, x, y, seed):
    keras.utils.set_random_seed(seed)
    dense = small_resnet()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), 256, replace=False)
    if method in ("snip", "grasp"):
        return pruning.prune_at_init(dense, method, sparsity, data=(x[idx], y[idx]), loss=loss)
    if method == "synflow":
        return pruning.synflow(dense, sparsity, iterations=100)
    return pruning.random_pruning(dense, sparsity, distribution="erk", seed=seed)


def train(model, x, y, xt, yt, epochs, batch_size, seed, tost_kwargs=None):
    keras.utils.set_random_seed(seed)
    steps = epochs * int(np.ceil(len(x) / batch_size))
    lr = keras.optimizers.schedules.CosineDecay(0.1, steps)
    callbacks = []
    helper = None
    if tost_kwargs is not None:
        helper = tost.ToST(**tost_kwargs)
        model = helper.prepare(model)
        loss = helper.loss(from_logits=True)
        callbacks.append(helper.callback())
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(lr, momentum=0.9, weight_decay=5e-4), loss,
                  metrics=["accuracy"])
    start = time.time()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks, verbose=0)
    seconds = time.time() - start
    report = {}
    if helper is not None:
        model, report = helper.finalize(model, validation_data=(xt, yt))
    final = keras_sparse.strip(model)
    pred = final.predict(xt, batch_size=512, verbose=0).argmax(-1)
    kernels = [w for w in final.weights if w.name in ("kernel",)]
    zeros = sum(int(np.sum(w.numpy() == 0)) for w in kernels)
    total = sum(int(np.prod(w.shape)) for w in kernels)
    return {"accuracy": float(np.mean(pred == yt)), "sparsity": zeros / total,
            "train_seconds": seconds, **report}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="snip", choices=["snip", "grasp", "synflow", "random"])
    p.add_argument("--sparsity", type=float, default=0.95)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=["none", "tost"],
                   help="none, tost, or single tweaks: gsk gsw lrsi ls")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    x, y, xt, yt = load_fashion_mnist()
    x, y = x[: args.train_size], y[: args.train_size]
    singles = {"gsk": dict(ghost_skip=True, ghost_swish=False, lrsi=False, label_smoothing=0.0),
               "gsw": dict(ghost_skip=False, ghost_swish=True, lrsi=False, label_smoothing=0.0),
               "lrsi": dict(ghost_skip=False, ghost_swish=False, lrsi=True, label_smoothing=0.0),
               "ls": dict(ghost_skip=False, ghost_swish=False, lrsi=False, label_smoothing=0.1),
               "tost": {}}
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            model = make_mask(args.method, args.sparsity, x, y, seed)
            result = train(model, x, y, xt, yt, args.epochs, args.batch_size, seed,
                           None if variant == "none" else singles[variant])
            result.update(method=args.method, variant=variant, seed=seed,
                          target_sparsity=args.sparsity, epochs=args.epochs,
                          train_size=args.train_size)
            rows.append(result)
            print(json.dumps(result), flush=True)
    print(f"\n| mask | variant | acc (mean ± std) | sparsity | swap Δacc |\n|---|---|---|---|---|")
    for variant in args.variants:
        rs = [r for r in rows if r["variant"] == variant]
        accs = np.array([r["accuracy"] for r in rs]) * 100
        swap = [r.get("swap_accuracy_change") for r in rs if "swap_accuracy_change" in r]
        swap_s = f"{100 * np.mean(swap):+.2f} pp" if swap else "-"
        print(f"| {args.method} {args.sparsity:.0%} | {variant} | {accs.mean():.2f} ± {accs.std():.2f} "
              f"| {np.mean([r['sparsity'] for r in rs]):.3f} | {swap_s} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
