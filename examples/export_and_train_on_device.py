"""Sparse Keras 3 model to TFLite, then inference and training on the device side.

The script twin of `tflite_on_device_training.ipynb`. Trains the small CNN
(`keras_sparse.models.small_cnn`, ReLU) at 90% ERK sparsity for a short
budget, strips it to a plain Keras model, and exports it twice with
`tflite_export`:

1. `export_inference`: float32 (or `--precision`) with sparse tensor
   encoding, verified against Keras in the LiteRT interpreter;
2. `export_trainable`: `train` / `infer` / `get_weights` / `set_weights`
   signatures, builtin ops only, pruned kernel entries kept at exact zero.

Then it runs the device-side runner, `python -m tflite_export.runner` (numpy
and a TFLite runtime only: no TensorFlow, no Keras), as a separate process,
exactly as on a device: `infer` on test images (agreement with Keras) and
`train` for a few on-device epochs (loss per epoch, weights saved and
checked: pruned entries still zero). Prints file bytes vs the dense float32
export, agreement and losses.

    python examples/export_and_train_on_device.py            # 2 epochs on 60k, 4096 on-device samples
    python examples/export_and_train_on_device.py --quick    # 1 epoch on 5k, 512 on-device samples
    python examples/export_and_train_on_device.py --synthetic --quick   # no data files (tests)
    python examples/export_and_train_on_device.py --runner-python .venv-tflrt/bin/python
        # runner under tflite-runtime 2.14 (numpy<2), as on a small device (`make tflrt-venv`)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]

try:
    import keras_sparse as ks
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
    import keras_sparse as ks

import keras  # noqa: E402
import tflite_export  # noqa: E402
from tflite_export import runner  # noqa: E402
from keras_sparse.datasets import load_fashion_mnist  # noqa: E402
from keras_sparse.models import small_cnn  # noqa: E402

QUICK_TRAIN, QUICK_TEST, QUICK_DEVICE = 5000, 1000, 512  # the notebook's QUICK settings
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 512, 128
DEVICE_BATCH = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="Keras training epochs before export")
    p.add_argument("--quick", action="store_true",
                   help=f"1 epoch on {QUICK_TRAIN} images, {QUICK_TEST} test images, "
                        f"{QUICK_DEVICE} on-device samples")
    p.add_argument("--synthetic", action="store_true",
                   help="random arrays of Fashion-MNIST's shape instead of the real data (smoke tests)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--device-samples", type=int, default=4096, help="training samples on the device")
    p.add_argument("--device-epochs", type=int, default=2, help="on-device training epochs")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--precision", default="float32",
                   choices=["float32", "float16", "int8_dynamic", "int8_full"])
    p.add_argument("--weight-storage", default="dense", choices=["dense", "sparse"],
                   help="trainable file: dense variable initializers or non-zeros + indices")
    p.add_argument("--sparse-matmul", default="off", choices=["off", "on", "auto"],
                   help="with --weight-storage sparse: compute compact Dense kernels with "
                   "gather + segment-sum products (on), the faster form measured here (auto)")
    p.add_argument("--runner-python", default=sys.executable,
                   help="interpreter that runs `python -m tflite_export.runner` (the device side)")
    p.add_argument("--out-dir", default=None, help="where the files go (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST IDX .gz files")
    p.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 1
        args.device_samples = min(args.device_samples, QUICK_DEVICE)
        if not args.synthetic:
            args.train_size = args.train_size or QUICK_TRAIN
            args.test_size = args.test_size or QUICK_TEST
    if args.epochs < 1 or args.device_epochs < 1:
        p.error(f"--epochs and --device-epochs must be >= 1, received {args.epochs}, {args.device_epochs}")
    if args.device_samples < DEVICE_BATCH:
        p.error(f"--device-samples must be >= the on-device batch {DEVICE_BATCH}, received {args.device_samples}")
    return args


def load_data(args: argparse.Namespace):
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        n, nt = args.train_size or SYNTHETIC_TRAIN, args.test_size or SYNTHETIC_TEST
        x = rng.random((n + nt, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, n + nt)
        return (x[:n], y[:n]), (x[n:], y[n:])
    (x, y), (xt, yt) = load_fashion_mnist(args.data_dir)
    return (x[:args.train_size], y[:args.train_size]), (xt[:args.test_size], yt[:args.test_size])


def train_sparse(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> keras.Model:
    """The small CNN, 90% ERK static masks, SGD momentum 0.9 + cosine decay."""
    keras.utils.set_random_seed(args.seed)
    model = ks.sparsify(small_cnn(), sparsity=args.sparsity, distribution="erk", seed=args.seed)
    steps = args.epochs * math.ceil(len(x) / 128)
    model.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, steps), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=args.verbose,
              callbacks=[ks.callbacks.SparsityLogger()])
    return model


def device_runner(args: argparse.Namespace, *cli: str) -> str:
    """Runs `python -m tflite_export.runner ...` in its own process; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [args.runner_python, "-m", "tflite_export.runner", *cli]
    print("$ " + " ".join(["python"] + cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the device runner exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    lines = [ln.split("\r")[-1] for ln in proc.stdout.split("\n")]  # last progress-bar redraw only
    print("\n".join("  | " + ln for ln in lines if ln.strip()), flush=True)
    return proc.stdout


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="keras_sparse_on_device_"))
    out.mkdir(parents=True, exist_ok=True)
    (x, y), (xt, yt) = load_data(args)
    print(f"data: {'synthetic' if args.synthetic else 'Fashion-MNIST'}, train {x.shape}, test {xt.shape}; "
          f"files in {out}")

    print(f"\n== Train: small CNN, {args.sparsity:.0%} ERK, {args.epochs} epoch(s)")
    sparse = train_sparse(args, x, y)
    plain = ks.strip(sparse)  # plain Keras model, exact zeros: what tflite_export takes
    keras_logits = plain.predict(xt, batch_size=1000, verbose=0)
    results: dict[str, Any] = {"sparsity": float(ks.sparsity_report(sparse).total_sparsity),
                               "keras_accuracy": float(np.mean(keras_logits.argmax(-1) == yt))}
    print(f"Keras test accuracy {results['keras_accuracy']:.4f}, sparsity {results['sparsity']:.4f}")

    print(f"\n== Inference export ({args.precision}, the faster of sparse and dense encoding), "
          "verified in LiteRT")
    infer_path = out / f"small_cnn_{args.precision}.tflite"
    report = tflite_export.export_inference(
        plain, str(infer_path), precision=args.precision, representative_data=x[:256],
        sample_inputs=xt[:16], latency_invokes=50)
    print(report.to_markdown())

    print("\n== Trainable export (train / infer / get_weights / set_weights signatures)")
    train_path = out / "small_cnn_trainable.tflite"
    treport = tflite_export.export_trainable(
        plain, str(train_path), keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=DEVICE_BATCH, weight_storage=args.weight_storage, compare_dense=False,
        sparse_matmul=args.sparse_matmul)
    print(f"{train_path.name}: {treport.num_bytes:,} bytes, signatures {treport.signatures}, "
          f"{treport.num_masked} masked kernels, weight storage {treport.weight_storage}")
    for note in treport.notes:
        print(f"note: {note}")

    print("\n== Device side: the runner (numpy + a TFLite runtime only), its own process")
    np.save(out / "x_test.npy", xt)
    device_runner(args, "infer", str(infer_path), "--data", str(out / "x_test.npy"),
                  "--out", str(out / "pred.npy"))
    lite_pred = np.load(out / "pred.npy").argmax(-1)
    agreement = float(np.mean(lite_pred == keras_logits.argmax(-1)))
    lite_accuracy = float(np.mean(lite_pred == yt))

    idx = np.random.default_rng(args.seed).permutation(len(x))[:args.device_samples]
    np.savez(out / "device_train.npz", x=x[idx], y=y[idx])
    stdout = device_runner(args, "train", str(train_path), "--data", str(out / "device_train.npz"),
                           "--epochs", str(args.device_epochs), "--seed", str(args.seed),
                           "--save-weights", str(out / "device_weights.npz"))
    losses = json.loads(next(ln for ln in stdout.split("\n") if ln.startswith("losses: "))[len("losses: "):])
    # Pruned kernel entries must still be exactly zero after on-device training.
    interp = runner.make_interpreter(str(train_path))
    runner.maybe_init_sparse(interp)
    before = runner.get_weights(interp)
    with np.load(out / "device_weights.npz") as after:
        zeros_kept = all(np.all(after[k][before[k] == 0.0] == 0.0) for k in before if "kernel" in k)

    results.update(
        inference={"path": str(infer_path), "bytes": report.num_bytes,
                   "dense_float32_bytes": report.dense_float32_bytes,
                   "size_ratio": (report.num_bytes / report.dense_float32_bytes
                                  if report.dense_float32_bytes else None),
                   "runtime_path": report.runtime_path, "latency_us": report.latency_us,
                   "encoding_choice": report.encoding_choice,
                   "agreement": agreement, "litert_accuracy": lite_accuracy, "images": int(len(xt))},
        trainable={"path": str(train_path), "bytes": treport.num_bytes,
                   "weight_storage": treport.weight_storage},
        on_device={"epochs": args.device_epochs, "samples": int(len(idx)), "batch": DEVICE_BATCH,
                   "losses": losses, "zeros_kept": bool(zeros_kept)},
    )

    inf = results["inference"]
    print("\n== Summary")
    ratio = f" ({inf['size_ratio']:.3f}x)" if inf["size_ratio"] else ""
    print(f"inference file: {inf['bytes']:,} bytes vs dense float32 {inf['dense_float32_bytes']:,}{ratio}, "
          f"runtime path {inf['runtime_path']}")
    print(f"Keras vs LiteRT (device runner) agreement on {inf['images']} test images: {agreement:.4f} "
          f"(accuracy: Keras {results['keras_accuracy']:.4f}, LiteRT {lite_accuracy:.4f})")
    print(f"trainable file: {treport.num_bytes:,} bytes ({treport.weight_storage} weight storage)")
    print(f"on-device training, {args.device_epochs} epoch(s) on {len(idx)} samples, batch {DEVICE_BATCH}: "
          f"mean loss per epoch {', '.join(f'{v:.4f}' for v in losses)}; "
          f"pruned entries still exactly zero: {zeros_kept}")
    results["seconds"] = time.perf_counter() - start
    print(f"finished in {results['seconds']:.1f} s")
    return results


if __name__ == "__main__":
    main()
