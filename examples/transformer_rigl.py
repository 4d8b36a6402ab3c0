"""A sparse transformer encoder block trained with RigL on Fashion-MNIST rows.

Each 28x28 image is read as a sequence of 28 rows (28 features per step):
a Dense embedding, a learned position embedding, one encoder block
(`keras.layers.MultiHeadAttention` + feed-forward, residuals, LayerNorm) and
a linear classifier. `keras_sparse.sparsify` masks the attention's query,
key, value and output kernels and every Dense kernel (ERK); RigL updates the
masks during `model.fit`. The progress bar shows `model_sparsity` (pruned
entries over all parameters: biases, LayerNorm and the position embedding
count as dense) beside `masked_sparsity` (over the masked weights only), and
`ks.summary` prints both.

    python examples/transformer_rigl.py                # 3 epochs on 60k images
    python examples/transformer_rigl.py --quick        # 1 epoch on 5k images
    python examples/transformer_rigl.py --synthetic    # random arrays (tests)
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
from keras_sparse.datasets import load_fashion_mnist

QUICK_TRAIN, QUICK_TEST = 5000, 2000
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 256, 64


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each sequence position (not masked)."""

    def build(self, input_shape):
        self.positions = self.add_weight(
            shape=tuple(input_shape[1:]), initializer="random_normal", name="positions")

    def call(self, x):
        return x + self.positions


def encoder_classifier(steps: int = 28, features: int = 28, width: int = 64, heads: int = 4,
                       ffn: int = 128, num_classes: int = 10) -> keras.Model:
    """Embedding, one post-norm transformer encoder block, flatten, logits."""
    inputs = keras.Input((steps, features))
    x = PositionEmbedding(name="position")(keras.layers.Dense(width, name="embed")(inputs))
    attention = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm1")(x + attention)
    h = keras.layers.Dense(ffn, activation="relu", name="ffn_in")(x)
    x = keras.layers.LayerNormalization(name="norm2")(x + keras.layers.Dense(width, name="ffn_out")(h))
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="encoder")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help=f"1 epoch on {QUICK_TRAIN} training images")
    p.add_argument("--synthetic", action="store_true", help="random arrays instead of the real data")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 1
        if not args.synthetic:
            args.train_size = args.train_size or QUICK_TRAIN
            args.test_size = args.test_size or QUICK_TEST
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, received {args.epochs}")
    if not 0.0 <= args.sparsity < 1.0:
        p.error(f"--sparsity must be in [0, 1), received {args.sparsity}")
    return args


def load_rows(args: argparse.Namespace):
    """Fashion-MNIST images as (N, 28 rows, 28 features) sequences."""
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        n, nt = args.train_size or SYNTHETIC_TRAIN, args.test_size or SYNTHETIC_TEST
        x = rng.random((n + nt, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, n + nt)
        return (x[:n], y[:n]), (x[n:], y[n:])
    (x, y), (xt, yt) = load_fashion_mnist(args.data_dir)
    x, xt = x[..., 0], xt[..., 0]
    return (x[:args.train_size], y[:args.train_size]), (xt[:args.test_size], yt[:args.test_size])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    (x, y), (xt, yt) = load_rows(args)
    keras.utils.set_random_seed(args.seed)
    model = ks.sparsify(encoder_classifier(), sparsity=args.sparsity, distribution="erk", seed=args.seed)
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    interval = int(min(100, max(2, steps // 10)))
    history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose,
                        callbacks=[ks.callbacks.RigL(update_interval=interval, seed=args.seed)])
    report = ks.summary(model)
    _, test_accuracy = model.evaluate(xt, yt, batch_size=1000, verbose=0)
    plain = ks.strip(model)
    diff = float(np.max(np.abs(plain.predict(xt[:256], verbose=0) - model.predict(xt[:256], verbose=0))))
    results = {
        "test_accuracy": float(test_accuracy),
        "masked_sparsity": float(report.total_sparsity),
        "model_sparsity": float(report.model_sparsity),
        "masked_layers": sorted({r.layer for r in report.rows}),
        "update_interval": interval,
        "regrown_max": max(history.history.get("regrown", [0.0])),
        "max_abs_strip_diff": diff,
        "seconds": time.perf_counter() - start,
    }
    print(f"test accuracy {results['test_accuracy']:.4f}; sparsity {results['model_sparsity']:.2%} of all "
          f"parameters ({results['masked_sparsity']:.2%} of the masked weights); "
          f"max |stripped - sparse| {diff:.1e}; {results['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
