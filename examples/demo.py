"""keras_sparse demo: sparse training of a small CNN on Fashion-MNIST, to TFLite.

Sparsifies the benchmark protocol's small CNN (Model A) at 90% sparsity with
the ERK per-layer allocation, trains it with plain `model.fit` (SGD momentum
0.9, cosine decay, batch 128) on the real Fashion-MNIST data with NeurRev
dynamic sparse training (`--algorithm static` for fixed masks), prints the
sparsity report, trains a dense baseline with the same budget in the same
run and prints both accuracies; strips the sparse model to a plain Keras
model, exports it to TFLite (float32, sparse encoding) and runs it in
LiteRT (bytes vs dense, agreement with Keras over 1000 test images); then
exports a trainable TFLite model and runs a few on-device training steps
through `tflite_export.runner`.

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
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

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
AGREEMENT_IMAGES = 1000
ON_DEVICE_STEPS = 5
ON_DEVICE_BATCH = 32
# "static" = fixed random masks; any name of keras_sparse.algorithms runs DST.
ALGORITHMS = ("static", "neurrev", "rigl", "set", "mest", "dsr", "deep_r")


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
    parser.add_argument("--algorithm", default="neurrev", choices=ALGORITHMS,
                        help="mask updates during training (default neurrev; static = fixed masks)")
    parser.add_argument("--out-dir", default=None,
                        help="where the .tflite files go (default: a temporary directory)")
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


def sparse_training_callbacks(args: argparse.Namespace, num_examples: int) -> list:
    """The callbacks that make training sparse-to-sparse.

    DST HOOK: this is the one place that picks the mask-update algorithm.
    `--algorithm static` keeps the masks fixed (`SparsityLogger` only logs);
    any other name runs that `keras_sparse.algorithms` updater (NeurRev by
    default, at RigL's schedule) through `DynamicSparseTraining`.
    """
    if args.algorithm == "static":
        return [ks.callbacks.SparsityLogger()]
    from keras_sparse import algorithms

    total_steps = args.epochs * math.ceil(num_examples / args.batch_size)
    # RigL's 100-step interval, shortened so a quick run still gets updates.
    interval = int(min(100, max(10, total_steps // 10)))
    updater = type(algorithms.get(args.algorithm))(update_interval=interval, seed=args.seed)
    return [ks.callbacks.DynamicSparseTraining(updater)]


def step_sparse_training(ctx: DemoContext) -> None:
    args = ctx.args
    what = "Static sparse training" if args.algorithm == "static" else f"{args.algorithm} DST"
    banner(f"{what}: {args.sparsity:.0%} {args.distribution.upper()}")
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
        callbacks=sparse_training_callbacks(args, len(ctx.x_train)),
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
        "algorithm": args.algorithm,
    }
    if "itop_rate" in history.history:
        ctx.results["sparse"]["itop_rate"] = float(history.history["itop_rate"][-1])


def step_dense_baseline(ctx: DemoContext) -> None:
    args = ctx.args
    banner("Dense baseline (same model, budget, data and seed)")
    keras.utils.set_random_seed(args.seed)
    dense = small_cnn()
    compile_for_training(dense, args, len(ctx.x_train))
    start = time.perf_counter()
    dense.fit(ctx.x_train, ctx.y_train, batch_size=args.batch_size, epochs=args.epochs,
              verbose=args.verbose)
    seconds = time.perf_counter() - start
    ctx.models["dense"] = dense
    ctx.results["dense"] = {"test_accuracy": test_accuracy(dense, ctx), "train_seconds": seconds}
    print(f"dense test accuracy {ctx.results['dense']['test_accuracy']:.4f}   "
          f"sparse ({args.sparsity:.0%} {args.distribution.upper()}) "
          f"{ctx.results['sparse']['test_accuracy']:.4f}")


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


def _out_dir(ctx: DemoContext) -> str:
    if ctx.args.out_dir:
        os.makedirs(ctx.args.out_dir, exist_ok=True)
        return ctx.args.out_dir
    if "out_dir" not in ctx.results:
        ctx.results["out_dir"] = tempfile.mkdtemp(prefix="keras_sparse_demo_")
    return ctx.results["out_dir"]


def step_tflite_export(ctx: DemoContext) -> None:
    banner("TFLite export (float32, the faster of sparse and dense encoding) and LiteRT agreement")
    import tflite_export
    from tflite_export import runner

    plain = ctx.models["stripped"]
    path = os.path.join(_out_dir(ctx), "small_cnn_sparse.tflite")
    report = tflite_export.export_inference(
        plain, path, precision="float32", sample_inputs=ctx.x_test[:16], latency_invokes=100
    )
    x = ctx.x_test[:AGREEMENT_IMAGES]
    keras_pred = np.argmax(plain.predict(x, batch_size=1000, verbose=0), axis=-1)
    interp = runner.make_interpreter(path)
    lite_logits = runner.run_inference(interp, x, progress=False)
    lite_pred = np.argmax(lite_logits, axis=-1)
    agreement = float(np.mean(lite_pred == keras_pred))
    lite_acc = float(np.mean(lite_pred == ctx.y_test[:AGREEMENT_IMAGES]))
    ratio = report.num_bytes / report.dense_float32_bytes if report.dense_float32_bytes else None
    print(f"file: {path}")
    print(f"bytes: {report.num_bytes:,} vs dense float32 {report.dense_float32_bytes:,}"
          f" ({ratio:.3f}x)" if ratio else f"bytes: {report.num_bytes:,}")
    print(f"runtime path: {report.runtime_path}; op resolver: {report.op_resolver}; "
          f"batch-1 latency {report.latency_us:.0f} us" if report.latency_us else "")
    print(f"agreement Keras vs LiteRT on {len(x)} test images: {agreement:.4f} "
          f"(LiteRT accuracy on them {lite_acc:.4f}); max |diff| in verification "
          f"{report.max_abs_err:.2e}")
    for note in report.notes:
        print(f"note: {note}")
    ctx.results["tflite"] = {
        "path": path, "bytes": report.num_bytes, "dense_float32_bytes": report.dense_float32_bytes,
        "size_ratio": ratio, "agreement": agreement, "litert_accuracy": lite_acc,
        "images": int(len(x)), "latency_us": report.latency_us, "runtime_path": report.runtime_path,
        "encoding_choice": report.encoding_choice,
    }


def step_on_device_training(ctx: DemoContext) -> None:
    banner(f"On-device training: {ON_DEVICE_STEPS} train-signature steps in LiteRT")
    import tflite_export
    from tflite_export import runner

    plain = ctx.models["stripped"]
    path = os.path.join(_out_dir(ctx), "small_cnn_trainable.tflite")
    report = tflite_export.export_trainable(
        plain, path, keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=ON_DEVICE_BATCH, weight_storage="sparse", compare_dense=False)
    interp = runner.make_interpreter(path)
    runner.maybe_init_sparse(interp)
    train = interp.get_signature_runner("train")
    before = runner.get_weights(interp)
    rng = np.random.default_rng(ctx.args.seed)
    losses = []
    for step in range(ON_DEVICE_STEPS):
        idx = rng.choice(len(ctx.x_train), ON_DEVICE_BATCH, replace=False)
        out = train(x=ctx.x_train[idx].astype(np.float32), y=ctx.y_train[idx].astype(np.int32))
        losses.append(float(out["loss"]))
        print(f"  step {step + 1}: loss {losses[-1]:.4f}")
    after = runner.get_weights(interp)
    kept = all(np.all(after[k][before[k] == 0.0] == 0.0) for k in before if "kernel" in k)
    print(f"file: {path} ({report.num_bytes:,} bytes: kernels stored as non-zeros + indices; "
          f"signatures {report.signatures}); "
          f"pruned kernel entries still exactly zero: {kept}")
    ctx.results["on_device"] = {"losses": losses, "bytes": report.num_bytes,
                                "zeros_kept": bool(kept)}


def step_summary(ctx: DemoContext) -> None:
    banner("Summary")
    args = ctx.args
    sparse = ctx.results["sparse"]
    print(
        f"small CNN, {args.distribution.upper()} at {args.sparsity:.0%} target sparsity, "
        f"{args.epochs} epoch(s) on {len(ctx.x_train)} examples"
    )
    print(f"  mask updates: {sparse['algorithm']}")
    print(f"  actual sparsity of prunable weights: {sparse['total_sparsity']:.4f}")
    print(f"  test accuracy: {sparse['test_accuracy']:.4f}")
    if "dense" in ctx.results:
        print(f"  dense baseline, same budget: {ctx.results['dense']['test_accuracy']:.4f}")
    print(f"  training time: {sparse['train_seconds']:.1f} s "
          f"({sparse['seconds_per_epoch']:.1f} s/epoch)")
    if "tflite" in ctx.results:
        t = ctx.results["tflite"]
        print(f"  TFLite float32: {t['bytes']:,} bytes vs dense {t['dense_float32_bytes']:,}; "
              f"Keras/LiteRT agreement {t['agreement']:.4f} on {t['images']} images")
    if "on_device" in ctx.results:
        losses = ", ".join(f"{v:.3f}" for v in ctx.results["on_device"]["losses"])
        print(f"  on-device training losses: {losses}")


# Later features append their step functions here (before step_summary).
STEPS: list[Callable[[DemoContext], None]] = [
    step_load_data,
    step_sparse_training,
    step_dense_baseline,
    step_strip,
    step_tflite_export,
    step_on_device_training,
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
