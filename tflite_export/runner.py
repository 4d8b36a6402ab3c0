"""Device-side runner: inference and on-device training of a `.tflite` file.

Imports only numpy and a TFLite runtime (`ai_edge_litert`, else
`tflite_runtime`); never TensorFlow or Keras, so it runs in a bare device
venv (`pip install "numpy<2" tflite-runtime`).

Usage:

```
python -m tflite_export.runner infer model.tflite --data x.npy [--out y.npy]
python -m tflite_export.runner train model.tflite --data train.npz \
    --epochs 2 [--save-weights w.npz] [--load-weights w.npz]
```

`.npz` files hold `x` (and `y` for training); `.npy` files hold `x` only.
For inference exports the resolver recorded in `<model>.json` (written by
`export_inference`) is honoured; `--no-default-delegates` forces the builtin
op resolver without XNNPACK.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import numpy as np


def load_runtime():
    """Returns `(Interpreter class, OpResolverType or None, runtime name)`."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "ai_edge_litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter

        try:
            from tflite_runtime.interpreter import OpResolverType
        except ImportError:  # very old tflite-runtime
            OpResolverType = None
        return Interpreter, OpResolverType, "tflite_runtime"


def make_interpreter(path: str, no_default_delegates: bool | None = None,
                     num_threads: int = 1):
    """Creates an allocated interpreter for `path`.

    When `no_default_delegates` is None it is read from `<path>.json`.
    """
    interp_cls, resolver, _ = load_runtime()
    if no_default_delegates is None:
        no_default_delegates = False
        if os.path.exists(path + ".json"):
            with open(path + ".json") as f:
                meta = json.load(f)
            no_default_delegates = (meta.get("op_resolver") ==
                                    "builtin_without_default_delegates")
    kwargs = {"model_path": path, "num_threads": num_threads}
    if no_default_delegates and resolver is not None:
        kwargs["experimental_op_resolver_type"] = (
            resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp = interp_cls(**kwargs)
    interp.allocate_tensors()
    return interp


def load_data(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads `x` (and `y`) from a .npz, or `x` from a .npy."""
    if path.endswith(".npz"):
        with np.load(path) as d:
            if "x" not in d:
                raise ValueError(f"{path} must contain an array named 'x'; "
                                 f"found {list(d.keys())}.")
            return d["x"], (d["y"] if "y" in d else None)
    return np.load(path), None


def _progress(i: int, n: int, msg: str, out=sys.stdout) -> None:
    width = 24
    done = int(width * i / max(n, 1))
    out.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {msg}")
    if i == n:
        out.write("\n")
    out.flush()


def run_inference(interp, x: np.ndarray, progress: bool = True) -> np.ndarray:
    """Runs `x` sample by sample through a single-signature model."""
    runners = interp.get_signature_list()
    if "infer" in runners:
        fn = interp.get_signature_runner("infer")
        out = []
        for i in range(len(x)):
            out.append(fn(x=x[i:i + 1].astype(np.float32))["output"])
            if progress and (i + 1 == len(x) or (i + 1) % 100 == 0):
                _progress(i + 1, len(x), "infer")
        return np.concatenate(out)
    ind = interp.get_input_details()[0]
    outd = interp.get_output_details()[0]
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1].astype(np.float32)
        if ind["dtype"] == np.int8:
            s, z = ind["quantization"]
            xi = np.clip(np.round(xi / s + z), -128, 127).astype(np.int8)
        interp.set_tensor(ind["index"], xi)
        interp.invoke()
        y = interp.get_tensor(outd["index"])
        if outd["dtype"] == np.int8:
            s, z = outd["quantization"]
            y = (y.astype(np.float32) - z) * s
        out.append(y.copy())
        if progress and (i + 1 == len(x) or (i + 1) % 100 == 0):
            _progress(i + 1, len(x), "infer")
    return np.concatenate(out)


def train_epochs(interp, x: np.ndarray, y: np.ndarray, epochs: int = 1,
                 seed: int = 0, shuffle: bool = True,
                 log: Callable[[str], None] | None = print) -> list[float]:
    """Runs the `train` signature over `(x, y)` for `epochs`.

    The batch size is the one fixed in the signature; a trailing partial
    batch is dropped. Returns the mean loss per epoch.
    """
    train = interp.get_signature_runner("train")
    details = train.get_input_details()
    batch = int(details["x"]["shape"][0])
    y_dtype = details["y"]["dtype"]
    if len(x) < batch:
        raise ValueError(f"Need at least one batch of {batch} samples; "
                         f"received {len(x)}.")
    rng = np.random.default_rng(seed)
    n = (len(x) // batch) * batch
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
        total, steps, t0 = 0.0, n // batch, time.perf_counter()
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            out = train(x=x[idx].astype(np.float32), y=y[idx].astype(y_dtype))
            total += float(out["loss"])
            if log is not None and (s + 1 == steps or (s + 1) % 10 == 0):
                _progress(s + 1, steps, f"epoch {epoch + 1}/{epochs} loss "
                          f"{total / (s + 1):.4f}")
        losses.append(total / steps)
        if log is not None:
            log(f"epoch {epoch + 1}: mean loss {losses[-1]:.5f} "
                f"({(time.perf_counter() - t0) / steps * 1e3:.2f} ms/step)")
    return losses


def get_weights(interp) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in
            interp.get_signature_runner("get_weights")().items()}


def set_weights(interp, weights: dict[str, np.ndarray]) -> None:
    interp.get_signature_runner("set_weights")(
        **{k: np.asarray(v, np.float32) for k, v in weights.items()})


def maybe_init_sparse(interp) -> bool:
    """Runs `init_sparse` when the model has it.

    Only files exported before compact sparse storage had this signature
    (their variables started at zero); current files need no init step and
    this returns False.
    """
    if "init_sparse" in interp.get_signature_list():
        interp.get_signature_runner("init_sparse")()
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tflite_export.runner",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["infer", "train"])
    p.add_argument("model")
    p.add_argument("--data", required=True, help=".npz (x, y) or .npy (x)")
    p.add_argument("--out", help="write predictions (.npy) here")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-default-delegates", action="store_true",
                   default=None)
    p.add_argument("--save-weights", help="write weights (.npz) after training")
    p.add_argument("--load-weights", help="restore weights (.npz) first")
    args = p.parse_args(argv)
    _, _, runtime = load_runtime()
    print(f"runtime: {runtime}; model: {args.model}")
    interp = make_interpreter(args.model, args.no_default_delegates,
                              args.threads)
    if maybe_init_sparse(interp):
        print("initialized weights from sparse storage")
    if args.load_weights:
        with np.load(args.load_weights) as d:
            set_weights(interp, dict(d))
        print(f"restored weights from {args.load_weights}")
    x, y = load_data(args.data)
    if args.mode == "infer":
        pred = run_inference(interp, x)
        if y is not None and y.ndim == 1:
            print(f"accuracy: {np.mean(np.argmax(pred, -1) == y):.4f}")
        if args.out:
            np.save(args.out, pred)
        print(f"predictions: {pred.shape}")
        return 0
    if y is None:
        p.error("train mode needs a .npz with arrays 'x' and 'y'")
    losses = train_epochs(interp, x, y, args.epochs, args.seed)
    print("losses: " + json.dumps([round(v, 6) for v in losses]))
    if args.save_weights:
        np.savez(args.save_weights, **get_weights(interp))
        print(f"saved weights to {args.save_weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
