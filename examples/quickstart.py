"""keras_sparse quick start: static ERK masks vs RigL on Fashion-MNIST.

The script twin of `quickstart_static_erk.ipynb`. Makes the small CNN
(`keras_sparse.models.small_cnn`, the benchmark's Model A) 90% sparse with
the ERK per-layer allocation, trains it with plain `model.fit` and fixed
masks (static sparse training), prints the per-layer sparsity report, trains
the same sparse start with RigL dynamic sparse training and a dense baseline
with the same budget (SGD momentum 0.9, cosine decay, batch 128), and strips
the RigL model to a plain Keras model with exact zeros.

    python examples/quickstart.py               # 3 epochs on 60k images
    python examples/quickstart.py --quick       # 1 epoch on 5k images, 2k test images
    python examples/quickstart.py --synthetic   # random arrays, no data files (tests)

Data: `keras_sparse.datasets.load_fashion_mnist` (Debian's
`dataset-fashion-mnist` files offline, else the Keras downloader).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import keras_sparse as ks
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_sparse as ks

import keras
from keras_sparse import algorithms
from keras_sparse.datasets import load_fashion_mnist
from keras_sparse.models import small_cnn

QUICK_TRAIN, QUICK_TEST = 5000, 2000  # the notebook's QUICK settings
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 512, 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help=f"1 epoch on {QUICK_TRAIN} training / {QUICK_TEST} test images")
    p.add_argument("--synthetic", action="store_true",
                   help="random arrays of Fashion-MNIST's shape instead of the real data (smoke tests)")
    p.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-size", type=int, default=None, help="use the first N test images")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--distribution", default="erk", choices=["uniform", "er", "erk"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    p.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST IDX .gz files")
    p.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 1
        if not args.synthetic:  # synthetic data is small already
            args.train_size = args.train_size or QUICK_TRAIN
            args.test_size = args.test_size or QUICK_TEST
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, received {args.epochs}")
    return args


def load_data(args: argparse.Namespace):
    """((x_train, y_train), (x_test, y_test)), subset to --train-size/--test-size."""
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        n, nt = args.train_size or SYNTHETIC_TRAIN, args.test_size or SYNTHETIC_TEST
        x = rng.random((n + nt, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, n + nt)
        return (x[:n], y[:n]), (x[n:], y[n:])
    (x, y), (xt, yt) = load_fashion_mnist(args.data_dir)
    return (x[:args.train_size], y[:args.train_size]), (xt[:args.test_size], yt[:args.test_size])


def compile_sgd(model: keras.Model, args: argparse.Namespace, num_examples: int) -> keras.Model:
    """SGD momentum 0.9 with cosine decay to 0 over the run (the notebook's `compile_sgd`)."""
    steps = args.epochs * math.ceil(num_examples / args.batch_size)
    model.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(args.lr, steps),
                                       momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    return model


def rigl_interval(total_steps: int) -> int:
    """RigL's 100-step interval, shortened so a short run still gets ~10 updates."""
    return int(min(100, max(10, total_steps // 10)))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x, batch_size=1000, verbose=0).argmax(-1) == y))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    (x, y), (xt, yt) = load_data(args)
    print(f"data: {'synthetic' if args.synthetic else 'Fashion-MNIST'}, train {x.shape}, test {xt.shape}")
    fit = dict(batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose)
    results: dict[str, Any] = {"train_size": int(len(x)), "test_size": int(len(xt)), "epochs": args.epochs}

    print(f"\n== Static sparse training: fixed {args.distribution.upper()} masks at {args.sparsity:.0%}")
    keras.utils.set_random_seed(args.seed)
    static = ks.sparsify(small_cnn(), sparsity=args.sparsity, distribution=args.distribution, seed=args.seed)
    compile_sgd(static, args, len(x)).fit(x, y, callbacks=[ks.callbacks.SparsityLogger()], **fit)
    report = ks.summary(static)  # per-layer shape, non-zeros, sparsity, FLOPs
    results["static"] = {"accuracy": accuracy(static, xt, yt), "sparsity": float(report.total_sparsity)}

    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    interval = rigl_interval(steps)
    print(f"\n== RigL dynamic sparse training: same start, masks updated every {interval} steps")
    keras.utils.set_random_seed(args.seed)
    rigl = ks.sparsify(small_cnn(), sparsity=args.sparsity, distribution=args.distribution, seed=args.seed)
    updater = algorithms.RigL(update_interval=interval, seed=args.seed)
    history = compile_sgd(rigl, args, len(x)).fit(
        x, y, callbacks=[ks.callbacks.DynamicSparseTraining(updater)], **fit)
    results["rigl"] = {"accuracy": accuracy(rigl, xt, yt), "update_interval": interval,
                       "sparsity": float(ks.sparsity_report(rigl).total_sparsity),
                       "itop_rate": history.history.get("itop_rate", [None])[-1]}

    if not args.no_dense:
        print("\n== Dense baseline (same model, budget, data and seed)")
        keras.utils.set_random_seed(args.seed)
        dense = compile_sgd(small_cnn(), args, len(x))
        dense.fit(x, y, **fit)
        results["dense"] = {"accuracy": accuracy(dense, xt, yt)}

    print("\n== Strip RigL's model to a plain Keras model")
    plain = ks.strip(rigl)
    kernels = [keras.ops.convert_to_numpy(w) for w in plain.weights if w.path.endswith("kernel")]
    zeros, total = sum(int((k == 0).sum()) for k in kernels), sum(k.size for k in kernels)
    diff = float(np.max(np.abs(plain.predict(xt[:256], verbose=0) - rigl.predict(xt[:256], verbose=0))))
    print(f"{type(plain).__name__} '{plain.name}': {zeros / total:.2%} of kernel entries exactly zero; "
          f"max |stripped - sparse| on 256 test images {diff:.1e}")
    results["strip"] = {"kernel_zero_fraction": zeros / total, "max_abs_output_diff": diff}

    print(f"\n== Summary ({args.epochs} epoch(s) on {len(x)} images, test on {len(xt)})")
    line = (f"static {args.distribution.upper()} {results['static']['accuracy']:.4f} "
            f"(sparsity {results['static']['sparsity']:.4f}) | RigL {results['rigl']['accuracy']:.4f} "
            f"(sparsity {results['rigl']['sparsity']:.4f}")
    itop = results["rigl"]["itop_rate"]
    line += f", ITOP rate {itop:.3f})" if itop is not None else ")"
    if "dense" in results:
        line += f" | dense {results['dense']['accuracy']:.4f}"
    print("test accuracy: " + line)
    results["seconds"] = time.perf_counter() - start
    print(f"finished in {results['seconds']:.1f} s")
    return results


if __name__ == "__main__":
    main()
