"""Device-side runner: inference and on-device training of a `.tflite` file.

Imports only numpy and a TFLite runtime (`ai_edge_litert`, else
`tflite_runtime`); never TensorFlow or Keras, so it runs in a bare device
venv (`pip install "numpy<2" tflite-runtime`).

Usage:

```
python -m tflite_export.runner infer model.tflite --data x.npy [--out y.npy]
python -m tflite_export.runner train model.tflite --data train.npz \
    --epochs 2 [--save-weights w.npz] [--load-weights w.npz] \
    [--save-checkpoint c.npz] [--resume c.npz]
```

`.npz` files hold `x` (and `y` for training); `.npy` files hold `x` only.
The op resolver a file needs is read from the flatbuffer's own metadata
(`tflite_export.metadata`; older files: the `<model>.json` sidecar written
by `export_inference`); `--no-default-delegates` forces the builtin op
resolver without XNNPACK.

Weights files (`--save-weights`) hold what `get_weights` returns; a
checkpoint (`--save-checkpoint`) holds `get_state`: the weights, the
optimizer slots, the step counter and the number of finished epochs, so
`--resume` continues a run exactly (same shuffling too, with the same
`--seed`). Bad input (labels out of range, wrong shapes, a train call on
an inference-only file, a weights file of another model) raises
`ValueError` naming what was received and what the file accepts, before
anything is run or changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from tflite_export._interpreter import dequantize, load_runtime, new_interpreter, quantize
from tflite_export.metadata import read_metadata

EPOCHS_KEY = "__epochs_done__"

def make_interpreter(path: str, no_default_delegates: bool | None = None,
                     num_threads: int = 1):
    """Creates an allocated interpreter for `path`.

    When `no_default_delegates` is None the file's own metadata decides
    (`op_resolver`), else the `<path>.json` sidecar of older exports.
    """
    if no_default_delegates is None:
        no_default_delegates = required_resolver(path) == \
            "builtin_without_default_delegates"
    return new_interpreter(
        model_path=path, num_threads=num_threads,
        resolver="builtin_without_default_delegates" if no_default_delegates else "default")


def required_resolver(path: str) -> str:
    """The op resolver recorded for `path`: flatbuffer metadata first,
    then the `.json` sidecar; `"default"` when neither says."""
    info = read_metadata(path) or {}
    if "op_resolver" in info:
        return info["op_resolver"]
    if os.path.exists(path + ".json"):
        with open(path + ".json") as f:
            return json.load(f).get("op_resolver", "default")
    return "default"


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


def _check_inputs(x: np.ndarray, want: tuple) -> None:
    if np.ndim(x) < 1 or tuple(np.shape(x)[1:]) != want:
        raise ValueError(
            f"Inputs x have shape {tuple(np.shape(x))}; this file accepts "
            f"samples of shape {want} (x of shape (n, "
            f"{', '.join(map(str, want))})).")


def run_inference(interp, x: np.ndarray, progress: bool = True) -> np.ndarray:
    """Runs `x` sample by sample through a single-signature model."""
    runners = interp.get_signature_list()
    if "infer" in runners:
        fn = interp.get_signature_runner("infer")
        want = tuple(int(d) for d in fn.get_input_details()["x"]["shape"])[1:]
        _check_inputs(x, want)
        out = []
        for i in range(len(x)):
            out.append(fn(x=x[i:i + 1].astype(np.float32))["output"])
            if progress and (i + 1 == len(x) or (i + 1) % 100 == 0):
                _progress(i + 1, len(x), "infer")
        return np.concatenate(out)
    ind = interp.get_input_details()[0]
    outd = interp.get_output_details()[0]
    _check_inputs(x, tuple(int(d) for d in ind["shape"])[1:])
    out = []
    for i in range(len(x)):
        interp.set_tensor(ind["index"], quantize(x[i:i + 1].astype(np.float32), ind))
        interp.invoke()
        out.append(dequantize(interp.get_tensor(outd["index"]), outd).copy())
        if progress and (i + 1 == len(x) or (i + 1) % 100 == 0):
            _progress(i + 1, len(x), "infer")
    return np.concatenate(out)


def _signatures(interp) -> list[str]:
    return sorted(interp.get_signature_list())


def require_training(interp) -> None:
    """Raises ValueError unless the file has the training signatures."""
    sigs = _signatures(interp)
    if "train" not in sigs:
        found = (f"its signatures are {sigs}" if sigs else
                 "it has no signatures (an inference-only file)")
        raise ValueError(
            f"This .tflite file cannot train: {found}. Training needs a "
            "file written by tflite_export.export_trainable (signatures "
            "train, infer, get_weights, set_weights, get_state, "
            "set_state); inference-only exports (export_inference) accept "
            "the infer mode only.")


def _num_classes(interp) -> int | None:
    """Width of the `infer` output (the number of classes)."""
    if "infer" in _signatures(interp):
        shape = interp.get_signature_runner("infer").get_output_details()[
            "output"]["shape"]
        return int(shape[-1])
    return None


def check_training_data(interp, x: np.ndarray, y: np.ndarray) -> None:
    """Validates a whole data set against the `train` signature.

    Raises:
        ValueError: a train call on a file without one, sample shapes that
            differ from the signature's, labels of the wrong shape, labels
            out of `[0, num_classes)`, non-integer or non-finite labels,
            fewer samples than one batch. The message names what was
            received and what is accepted.
    """
    require_training(interp)
    details = interp.get_signature_runner("train").get_input_details()
    x_shape = tuple(int(d) for d in details["x"]["shape"])
    y_shape = tuple(int(d) for d in details["y"]["shape"])
    batch = x_shape[0]
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or tuple(x.shape[1:]) != x_shape[1:]:
        raise ValueError(
            f"Training inputs x have shape {tuple(x.shape)}; this file "
            f"accepts samples of shape {x_shape[1:]} (x of shape "
            f"(n, {', '.join(map(str, x_shape[1:]))})).")
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}; they "
                         "must match.")
    if len(x) < batch:
        raise ValueError(f"Need at least one batch of {batch} samples; "
                         f"received {len(x)}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("Training inputs x contain NaN or Inf; accepted: "
                         "finite values.")
    classes = _num_classes(interp)
    if len(y_shape) == 1:  # integer labels
        if y.ndim != 1:
            raise ValueError(
                f"Labels y have shape {tuple(y.shape)}; this file accepts "
                "integer class ids of shape (n,).")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError("Labels y must be integer class ids; "
                                 "received non-integer values.")
        elif y.dtype.kind not in "iu":
            raise ValueError(f"Labels y have dtype {y.dtype}; accepted: "
                             "integer class ids.")
        if classes is not None and len(y) and (
                y.min() < 0 or y.max() >= classes):
            bad = y[(y < 0) | (y >= classes)]
            raise ValueError(
                f"Labels out of range: received values {sorted(set(bad.tolist()))[:5]}"
                f" (min {y.min()}, max {y.max()}); this file accepts class "
                f"ids in [0, {classes - 1}].")
    else:
        if y.ndim != 2 or y.shape[1] != y_shape[1]:
            raise ValueError(
                f"Labels y have shape {tuple(y.shape)}; this file accepts "
                f"one-hot / soft labels of shape (n, {y_shape[1]}).")
        if not np.all(np.isfinite(y)) or np.any(y < 0):
            raise ValueError("Soft labels y must be finite and "
                             "non-negative.")


def train_epochs(interp, x: np.ndarray, y: np.ndarray, epochs: int = 1,
                 seed: int = 0, shuffle: bool = True,
                 log: Callable[[str], None] | None = print,
                 start_epoch: int = 0) -> list[float]:
    """Runs the `train` signature over `(x, y)` for `epochs`.

    The batch size is the one fixed in the signature; a trailing partial
    batch is dropped. The data are validated first (`check_training_data`):
    nothing runs on bad input. `start_epoch` epochs of shuffling are
    skipped, so a run resumed from a checkpoint sees the same batches.
    Returns the mean loss per epoch.

    Files exported with `algorithm=` (on-device dynamic sparse training)
    also return `sparsity` and `regrown` (NeurRev: and `awakened`) from
    `train`; each epoch's log then reports the sparsity of the masked
    kernels and the numbers of the last mask update.
    """
    check_training_data(interp, x, y)
    train = interp.get_signature_runner("train")
    details = train.get_input_details()
    batch = int(details["x"]["shape"][0])
    y_dtype = details["y"]["dtype"]
    rng = np.random.default_rng(seed)
    for _ in range(start_epoch):
        if shuffle:
            rng.permutation(len(x))
    n = (len(x) // batch) * batch
    losses = []
    for epoch in range(start_epoch, start_epoch + epochs):
        order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
        total, steps, t0 = 0.0, n // batch, time.perf_counter()
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            out = train(x=x[idx].astype(np.float32), y=y[idx].astype(y_dtype))
            total += float(out["loss"])
            dst = {k: float(out[k]) for k in ("sparsity", "regrown",
                                              "awakened") if k in out}
            if log is not None and (s + 1 == steps or (s + 1) % 10 == 0):
                _progress(s + 1, steps, f"epoch {epoch + 1} loss "
                          f"{total / (s + 1):.4f}")
        losses.append(total / steps)
        if log is not None:
            log(f"epoch {epoch + 1}: mean loss {losses[-1]:.5f} "
                f"({(time.perf_counter() - t0) / steps * 1e3:.2f} ms/step)")
            if steps and dst:
                woke = (f", awakened {int(dst['awakened'])}"
                        if "awakened" in dst else "")
                log(f"epoch {epoch + 1}: sparsity {dst['sparsity']:.4f}, "
                    f"regrown at the last mask update "
                    f"{int(dst['regrown'])}{woke}")
    return losses


def get_weights(interp) -> dict[str, np.ndarray]:
    """What the file's `get_weights` returns (the trained weights)."""
    require_training(interp)
    return {k: np.array(v) for k, v in
            interp.get_signature_runner("get_weights")().items()}


def get_state(interp) -> dict[str, np.ndarray]:
    """Weights, optimizer slots and `step` (the file's `get_state`)."""
    require_training(interp)
    if "get_state" not in _signatures(interp):
        raise ValueError("This file has no get_state signature (exported "
                         "before checkpoints existed); re-export it.")
    return {k: np.array(v) for k, v in
            interp.get_signature_runner("get_state")().items()}


def _check_arrays(interp, signature: str, arrays: dict, what: str) -> None:
    details = interp.get_signature_runner(signature).get_input_details()
    want = {k: tuple(int(d) for d in v["shape"]) for k, v in details.items()}
    got = {k: tuple(np.shape(v)) for k, v in arrays.items()}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"The {what} do not belong to this model: missing "
            f"{missing[:6]}{'...' if len(missing) > 6 else ''}, unexpected "
            f"{extra[:6]}{'...' if len(extra) > 6 else ''}; this file "
            f"accepts {len(want)} arrays named {sorted(want)[:6]}"
            f"{'...' if len(want) > 6 else ''}.")
    wrong = [f"{k}: received {got[k]}, accepted {want[k]}"
             for k in sorted(want) if got[k] != want[k]]
    if wrong:
        raise ValueError(f"The {what} do not belong to this model (shape "
                         f"mismatch): {'; '.join(wrong[:4])}.")
    bad = [k for k, v in arrays.items()
           if not np.all(np.isfinite(np.asarray(v, np.float64)))]
    if bad:
        raise ValueError(f"The {what} contain NaN or Inf in {bad[:4]}; "
                         "accepted: finite values.")


def set_weights(interp, weights: dict[str, np.ndarray]) -> None:
    """Restores weights (names and shapes are checked first; values at
    pruned positions are dropped by the file itself)."""
    require_training(interp)
    weights = {k: v for k, v in weights.items() if not k.startswith("__")}
    _check_arrays(interp, "set_weights", weights, "weights")
    interp.get_signature_runner("set_weights")(
        **{k: np.asarray(v, np.float32) for k, v in weights.items()})


def set_state(interp, state: dict[str, np.ndarray]) -> None:
    """Restores a checkpoint from `get_state` (checked first)."""
    require_training(interp)
    if "set_state" not in _signatures(interp):
        raise ValueError("This file has no set_state signature (exported "
                         "before checkpoints existed); re-export it.")
    state = {k: v for k, v in state.items() if not k.startswith("__")}
    _check_arrays(interp, "set_state", state, "checkpoint arrays")
    interp.get_signature_runner("set_state")(
        **{k: np.asarray(v, np.float32) for k, v in state.items()})


def save_checkpoint(interp, path: str, epochs_done: int = 0) -> None:
    """Writes `get_state` plus the finished epoch count to `.npz`."""
    np.savez(path, **get_state(interp),
             **{EPOCHS_KEY: np.array(epochs_done, np.int64)})


def load_checkpoint(interp, path: str) -> int:
    """Restores a checkpoint written by `save_checkpoint`; returns the
    number of epochs it had finished."""
    with np.load(path) as d:
        state = {k: d[k] for k in d.files}
    done = int(state.pop(EPOCHS_KEY, 0))
    set_state(interp, state)
    return done


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
    p.add_argument("--save-checkpoint",
                   help="write weights + optimizer state (.npz) after training")
    p.add_argument("--resume", help="restore a checkpoint (.npz) first")
    args = p.parse_args(argv)
    try:
        return _run(p, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(p, args) -> int:
    _, _, runtime = load_runtime()
    print(f"runtime: {runtime}; model: {args.model}")
    if not os.path.exists(args.model):
        raise ValueError(f"Model file {args.model!r} does not exist.")
    interp = make_interpreter(args.model, args.no_default_delegates,
                              args.threads)
    x, y = load_data(args.data)
    if args.mode == "train":
        if y is None:
            p.error("train mode needs a .npz with arrays 'x' and 'y'")
        # Everything is checked before any weight changes.
        check_training_data(interp, x, y)
    if maybe_init_sparse(interp):
        print("initialized weights from sparse storage")
    start_epoch = 0
    if args.resume:
        require_training(interp)
        start_epoch = load_checkpoint(interp, args.resume)
        print(f"resumed from {args.resume} after {start_epoch} epochs")
    if args.load_weights:
        with np.load(args.load_weights) as d:
            set_weights(interp, {k: d[k] for k in d.files})
        print(f"restored weights from {args.load_weights}")
    if args.mode == "infer":
        pred = run_inference(interp, x)
        if y is not None and y.ndim == 1:
            print(f"accuracy: {np.mean(np.argmax(pred, -1) == y):.4f}")
        if args.out:
            np.save(args.out, pred)
        print(f"predictions: {pred.shape}")
        return 0
    losses = train_epochs(interp, x, y, args.epochs, args.seed,
                          start_epoch=start_epoch)
    print("losses: " + json.dumps([round(v, 6) for v in losses]))
    if args.save_weights:
        np.savez(args.save_weights, **get_weights(interp))
        print(f"saved weights to {args.save_weights}")
    if args.save_checkpoint:
        save_checkpoint(interp, args.save_checkpoint,
                        start_epoch + args.epochs)
        print(f"saved checkpoint to {args.save_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
