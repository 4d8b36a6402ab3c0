"""Personalise a classifier head on a frozen sparse backbone, on the device.

The standard phone use of on-device training (as in the LiteRT
model-personalization example): a backbone trained on the server stays
fixed, and a small head learns the user's own classes from a few samples.

1. Server side (Keras): train `keras_sparse.models.mobilenet_v2_small` at
   90% ERK sparsity on a base task, strip the masks, put a new head for the
   user's classes on its pooled features and freeze everything else
   (`trainable=False`).
2. `tflite_export.export_trainable`: the frozen backbone becomes constants
   of the file (no backward pass below the head); only the head is in
   `get_weights`/`set_weights` and in checkpoints.
3. Device side, as a separate process that imports neither TensorFlow nor
   Keras: `python -m tflite_export.runner train ... --save-checkpoint`,
   then `infer ... --resume` on held-out samples.

The data are synthetic (class prototypes plus noise), so the script runs
offline in a minute:

    python examples/personalize_head_on_device.py
    python examples/personalize_head_on_device.py --quick     # seconds of training (tests)
    python examples/personalize_head_on_device.py --runner-python .venv-tflrt/bin/python
        # device side under tflite-runtime 2.14 (numpy<2), `make tflrt-venv`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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

SHAPE = (16, 16, 1)
BASE_CLASSES, USER_CLASSES = 10, 4
DEVICE_BATCH = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small data and few epochs (smoke tests)")
    p.add_argument("--base-samples", type=int, default=2048)
    p.add_argument("--base-epochs", type=int, default=4)
    p.add_argument("--user-samples", type=int, default=96,
                   help="the user's own labelled samples (training)")
    p.add_argument("--device-epochs", type=int, default=8)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--runner-python", default=sys.executable,
                   help="interpreter that runs `python -m tflite_export.runner`")
    p.add_argument("--out-dir", default=None,
                   help="where the files go (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.base_samples, args.base_epochs = 256, 1
        args.user_samples, args.device_epochs = 48, 3
    if args.user_samples < DEVICE_BATCH:
        p.error(f"--user-samples must be >= the on-device batch "
                f"{DEVICE_BATCH}; received {args.user_samples}")
    if not 0.0 <= args.sparsity < 1.0:
        p.error(f"--sparsity must be in [0, 1); received {args.sparsity}")
    return args


def prototypes(rng, n_classes: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, (n_classes,) + SHAPE).astype(np.float32)


def sample(rng, protos: np.ndarray, n: int, noise: float = 0.8):
    y = rng.integers(0, len(protos), n)
    x = protos[y] + rng.normal(0.0, noise, (n,) + SHAPE).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int32)


def server_side(args, rng) -> keras.Model:
    """A sparse backbone trained on the base task, with a new frozen-backbone
    head for the user's classes."""
    keras.utils.set_random_seed(args.seed)
    x, y = sample(rng, prototypes(rng, BASE_CLASSES), args.base_samples)
    base = ks.sparsify(ks.models.mobilenet_v2_small(SHAPE, BASE_CLASSES),
                       sparsity=args.sparsity, distribution="erk",
                       seed=args.seed)
    base.compile(optimizer=keras.optimizers.Adam(3e-3),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
    base.fit(x, y, batch_size=64, epochs=args.base_epochs, verbose=0)
    plain = ks.strip(base)
    features = plain.get_layer("avg_pool").output
    head = keras.layers.Dense(USER_CLASSES, name="user_head")(features)
    personal = keras.Model(plain.inputs, head, name="personal")
    for layer in personal.layers:
        layer.trainable = layer.name == "user_head"
    return personal


def device_runner(args, *cli: str) -> str:
    """`python -m tflite_export.runner ...` in its own process (stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [args.runner_python, "-m", "tflite_export.runner", *cli]
    print("$ " + " ".join(["python"] + cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the device runner exited {proc.returncode}:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    lines = [ln.split("\r")[-1] for ln in proc.stdout.split("\n")]
    print("\n".join("  | " + ln for ln in lines if ln.strip()), flush=True)
    return proc.stdout


def _accuracy(stdout: str) -> float:
    return float(stdout.split("accuracy: ")[1].split()[0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="personalize_"))
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    personal = server_side(args, rng)
    path = str(out / "personal.tflite")
    report = tflite_export.export_trainable(
        personal, path, keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=DEVICE_BATCH, weight_storage="sparse")
    print(f"exported {path}: {report.num_bytes} bytes (dense float32 "
          f"inference file: {report.dense_inference_float32_bytes}); "
          f"trains {report.weight_names}, {len(report.frozen_layers)} "
          "frozen layers are constants")
    user = prototypes(rng, USER_CLASSES)
    x, y = sample(rng, user, args.user_samples)
    xt, yt = sample(rng, user, 200)
    np.savez(out / "user_train.npz", x=x, y=y)
    np.savez(out / "user_test.npz", x=xt, y=yt)
    before = _accuracy(device_runner(args, "infer", path, "--data",
                                     str(out / "user_test.npz")))
    stdout = device_runner(args, "train", path, "--data",
                           str(out / "user_train.npz"), "--epochs",
                           str(args.device_epochs), "--save-checkpoint",
                           str(out / "checkpoint.npz"))
    losses = json.loads(stdout.split("losses: ")[1].splitlines()[0])
    after = _accuracy(device_runner(args, "infer", path, "--data",
                                    str(out / "user_test.npz"), "--resume",
                                    str(out / "checkpoint.npz")))
    with np.load(out / "checkpoint.npz") as ckpt:
        saved = sorted(k for k in ckpt.files if not k.startswith("__"))
    result = {
        "file_bytes": report.num_bytes,
        "dense_float32_inference_bytes": report.dense_inference_float32_bytes,
        "trained_weights": report.weight_names,
        "frozen_layers": len(report.frozen_layers),
        "checkpoint_arrays": saved,
        "device_losses": losses,
        "accuracy_before": before,
        "accuracy_after": after,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
