"""keras_sparse demo: static sparse training of a small CNN on Fashion-MNIST.

Sparsifies the benchmark protocol's small CNN (Model A) at 90% sparsity with
the ERK per-layer allocation, trains it with plain `model.fit` (SGD momentum
0.9, cosine decay, batch 128) on the real Fashion-MNIST data, then prints the
sparsity report and the test accuracy, and checks that `ks.strip` gives a
plain Keras model with exact zeros and the same predictions.

Run with `make demo`, or:

    python examples/demo.py            # 3 epochs on 60k examples
    python examples/demo.py --quick    # 1 epoch on 10k examples (smoke test)

The demo is a list of steps (`STEPS`), each a function taking the shared
`DemoContext`; later features (dense baseline, TFLite export, on-device
training) are added as new step functions appended to that list.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

# Quieter TensorFlow start-up (C++ info logs); set before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import keras_sparse as ks
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_sparse as ks

import keras
from keras_sparse.datasets import load_fashion_mnist
from keras_sparse.models import small_cnn

QUICK_TRAIN_EXAMPLES = 10_000


@dataclass
class DemoContext:
    """State shared by the demo steps."""

    args: argparse.Namespace
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    models: dict[str, keras.Model] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: 1 epoch on {QUICK_TRAIN_EXAMPLES} training examples",
    )
    parser.add_argument("--sparsity", type=float, default=0.9, help="target sparsity (default 0.9)")
    parser.add_argument(
        "--distribution",
        default="erk",
        choices=["uniform", "er", "erk"],
        help="per-layer sparsity allocation (default erk)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="initial SGD learning rate (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST IDX .gz files")
    parser.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity (1 = progress bar)")
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_SPARSE_DEMO_QUICK") == "1":
        args.quick = True
    if args.quick:
        args.epochs = 1
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, received {args.epochs}")
    return args


def banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def compile_for_training(model: keras.Model, args: argparse.Namespace, num_examples: int) -> None:
    """SGD momentum 0.9 with cosine decay to zero over the whole run."""
    steps = args.epochs * math.ceil(num_examples / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr, decay_steps=steps
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def test_accuracy(model: keras.Model, ctx: DemoContext) -> float:
    logits = model.predict(ctx.x_test, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == ctx.y_test))


# --------------------------------------------------------------------- steps


def step_load_data(ctx: DemoContext) -> None:
    banner("Data: Fashion-MNIST")
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(ctx.args.data_dir)
    if ctx.args.quick:
        x_train, y_train = x_train[:QUICK_TRAIN_EXAMPLES], y_train[:QUICK_TRAIN_EXAMPLES]
    ctx.x_train, ctx.y_train, ctx.x_test, ctx.y_test = x_train, y_train, x_test, y_test
    print(f"train {x_train.shape}, test {x_test.shape}")


def step_sparse_training(ctx: DemoContext) -> None:
    args = ctx.args
    banner(f"Static sparse training: {args.sparsity:.0%} {args.distribution.upper()}")
    keras.utils.set_random_seed(args.seed)
    dense = small_cnn()
    sparse = ks.sparsify(
        dense, sparsity=args.sparsity, distribution=args.distribution, seed=args.seed
    )
    compile_for_training(sparse, args, len(ctx.x_train))
    start = time.perf_counter()
    history = sparse.fit(
        ctx.x_train,
        ctx.y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=[ks.callbacks.SparsityLogger()],
        verbose=args.verbose,
    )
    train_seconds = time.perf_counter() - start

    banner("Sparsity report")
    report = ks.sparsity_report(sparse)
    print(report)

    accuracy = test_accuracy(sparse, ctx)
    ctx.models["sparse"] = sparse
    ctx.results["sparse"] = {
        "test_accuracy": accuracy,
        "total_sparsity": float(report.total_sparsity),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / args.epochs,
        "final_train_loss": float(history.history["loss"][-1]),
    }


def step_strip(ctx: DemoContext) -> None:
    banner("Strip to a plain Keras model")
    sparse = ctx.models["sparse"]
    plain = ks.strip(sparse)
    x = ctx.x_test[:512]
    diff = float(
        np.max(np.abs(sparse.predict(x, verbose=0) - plain.predict(x, verbose=0)))
    )
    kernels = [w for layer in plain.layers for w in layer.weights if "kernel" in w.path]
    zeros = sum(int(np.sum(keras.ops.convert_to_numpy(w) == 0.0)) for w in kernels)
    total = sum(int(np.prod(w.shape)) for w in kernels)
    print(f"plain model: {type(plain).__name__} '{plain.name}', "
          f"{zeros}/{total} kernel entries exactly zero ({zeros / total:.2%})")
    print(f"max |sparse - stripped| on 512 test images: {diff:.2e}")
    ctx.models["stripped"] = plain
    ctx.results["strip"] = {"max_abs_output_diff": diff, "kernel_zero_fraction": zeros / total}


def step_summary(ctx: DemoContext) -> None:
    banner("Summary")
    args = ctx.args
    sparse = ctx.results["sparse"]
    print(
        f"small CNN, {args.distribution.upper()} at {args.sparsity:.0%} target sparsity, "
        f"{args.epochs} epoch(s) on {len(ctx.x_train)} examples"
    )
    print(f"  actual sparsity of prunable weights: {sparse['total_sparsity']:.4f}")
    print(f"  test accuracy: {sparse['test_accuracy']:.4f}")
    print(f"  training time: {sparse['train_seconds']:.1f} s "
          f"({sparse['seconds_per_epoch']:.1f} s/epoch)")


# Later features append their step functions here (before step_summary).
STEPS: list[Callable[[DemoContext], None]] = [
    step_load_data,
    step_sparse_training,
    step_strip,
    step_summary,
]


def main(argv: list[str] | None = None) -> DemoContext:
    ctx = DemoContext(args=parse_args(argv))
    start = time.perf_counter()
    for step in STEPS:
        step(ctx)
    print(f"\nDemo finished in {time.perf_counter() - start:.1f} s.")
    return ctx


if __name__ == "__main__":
    main()
