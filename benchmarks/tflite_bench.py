"""TFLite export benchmark: sizes, batch-1 latency, on-device train step.

Run: `python -m benchmarks.tflite_bench [--quick]`. Writes
`benchmarks/results/tflite_bench.json` and `.md`.

Models (weights zeroed to 90% sparsity with numpy; sizes and latencies do
not depend on the weight values, so synthetic inputs are used):
- MLP 784-1024-1024-10 (ReLU), 1x4 blocks along the input dim
  ("block1x4"), 1x16 blocks ("block1x16", the int8 sparse FC pattern) or
  unstructured ("random").
- CNN A: conv32-pool-conv64-pool-dense256-dense10 on 28x28x1, ReLU.

Latency: single-thread batch-1 `invoke()` in ai-edge-litert, sparse and
dense models alternated in rounds of 20 invokes after warm-up; median of
all invokes. Train step: the `train` signature in LiteRT vs
`keras.Model.train_on_batch` (jit_compile=False) on the same batch,
alternated; medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

import tflite_export  # noqa: E402
from tflite_export.convert import convert  # noqa: E402
from tflite_export.verify import make_interpreter  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def zero_out(model, density, block, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        k = getattr(layer, "kernel", None)
        if k is None:
            continue
        w = np.asarray(k)
        if w.ndim == 2 and block > 1:
            keep = np.repeat(rng.random((w.shape[0] // block, w.shape[1]))
                             < density, block, axis=0)
        else:
            keep = rng.random(w.shape) < density
        k.assign(w * keep)
    return model


def mlp():
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(1024, activation="relu"),
        keras.layers.Dense(1024, activation="relu"),
        keras.layers.Dense(10)])


def cnn():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10)])


def _interp_feed(data, resolver):
    it = make_interpreter(data, resolver)
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).standard_normal(
        [1 if s < 0 else s for s in d["shape_signature"]]).astype(np.float32)
    if d["dtype"] == np.int8:
        x = np.zeros(x.shape, np.int8)
    it.set_tensor(d["index"], x)
    return it


def alternated_latency(entries, invokes, rounds_of=20):
    """entries: {name: interpreter}. Median us per invoke, alternated."""
    times = {k: [] for k in entries}
    for it in entries.values():
        for _ in range(20):
            it.invoke()
    for _ in range(max(1, invokes // rounds_of)):
        for k, it in entries.items():
            for _ in range(rounds_of):
                t0 = time.perf_counter()
                it.invoke()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v) * 1e6) for k, v in times.items()}


def bench_inference(quick, tmp, rows, lat_rows):
    invokes = 60 if quick else 400
    rep = np.random.default_rng(1).random((32, 784)).astype(np.float32)
    rep_cnn = np.random.default_rng(1).random((32, 28, 28, 1)).astype(
        np.float32)
    configs = [("mlp", "block1x4", 4), ("mlp", "block1x16", 16),
               ("mlp", "random", 1), ("cnn", "block1x4", 4),
               ("cnn", "random", 1)]
    precisions = (["float32", "int8_dynamic"] if quick else
                  ["float32", "float16", "int8_dynamic", "int8_full"])
    dense_cache = {}
    for arch, pattern, block in tqdm(configs, desc="inference exports"):
        build = mlp if arch == "mlp" else cnn
        data_rep = rep if arch == "mlp" else rep_cnn
        if arch not in dense_cache:
            dense = build()
            dense_cache[arch] = convert(dense, "float32", sparsity=False)
        dense_bytes = len(dense_cache[arch])
        model = zero_out(build(), 0.1, block)
        for prec in precisions:
            path = os.path.join(tmp, f"{arch}_{pattern}_{prec}.tflite")
            r = tflite_export.export_inference(
                model, path, precision=prec, representative_data=data_rep,
                measure_latency=False, compare_dense=False)
            with open(path, "rb") as f:
                data = f.read()
            lat = alternated_latency({
                "sparse": _interp_feed(data, r.op_resolver),
                "dense": _interp_feed(dense_cache[arch], "default")}, invokes)
            rows.append({
                "model": arch, "pattern": pattern, "precision": prec,
                "bytes": r.num_bytes, "dense_float32_bytes": dense_bytes,
                "size_ratio": r.num_bytes / dense_bytes,
                "sparse_formats": sorted({f"{t['format']} "
                                          f"{'x'.join(map(str, t['block_shape']))}"
                                          for t in r.sparse_tensors}),
                "runtime_path": r.runtime_path, "op_resolver": r.op_resolver,
                "latency_us": lat["sparse"],
                "dense_float32_latency_us": lat["dense"],
                "speedup_vs_dense_f32": lat["dense"] / lat["sparse"],
                "notes": r.notes,
            })


def bench_training(quick, tmp, train_rows):
    batch = 32
    steps = 10 if quick else 40
    rng = np.random.default_rng(2)
    for arch in ["mlp", "cnn"]:
        build = mlp if arch == "mlp" else cnn
        model = zero_out(build(), 0.1, 4)
        shape = (784,) if arch == "mlp" else (28, 28, 1)
        opt = lambda: keras.optimizers.SGD(0.01, momentum=0.9)  # noqa: E731
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        sizes = {}
        for storage in ["dense", "sparse"]:
            p = os.path.join(tmp, f"train_{arch}_{storage}.tflite")
            r = tflite_export.export_trainable(model, p, opt(), loss,
                                               batch_size=batch,
                                               weight_storage=storage)
            sizes[storage] = r.num_bytes
            dense_inf = r.dense_inference_float32_bytes
        with open(os.path.join(tmp, f"train_{arch}_dense.tflite"), "rb") as f:
            it = make_interpreter(f.read())
        train = it.get_signature_runner("train")
        km = keras.models.clone_model(model)
        km.set_weights(model.get_weights())
        km.compile(optimizer=opt(), loss=loss, jit_compile=False)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, 10, batch).astype(np.int32)
        for _ in range(3):
            train(x=x, y=y)
            km.train_on_batch(x, y)
        tl, tk = [], []
        for _ in tqdm(range(steps), desc=f"train step {arch}"):
            t0 = time.perf_counter()
            train(x=x, y=y)
            tl.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            km.train_on_batch(x, y)
            tk.append(time.perf_counter() - t0)
        train_rows.append({
            "model": arch, "batch": batch,
            "litert_step_ms": float(np.median(tl) * 1e3),
            "keras_step_ms": float(np.median(tk) * 1e3),
            "litert_over_keras": float(np.median(tl) / np.median(tk)),
            "trainable_bytes_dense_storage": sizes["dense"],
            "trainable_bytes_sparse_storage": sizes["sparse"],
            "dense_inference_float32_bytes": dense_inf,
        })


def to_markdown(res) -> str:
    m = res["machine"]
    out = [f"# TFLite export benchmark ({res['date']})", "",
           f"Machine: {m['cpu']} ({m['cores']} cores), {m['platform']}; "
           f"TF {m['tensorflow']}, Keras {m['keras']}, ai-edge-litert "
           f"{m['ai_edge_litert']}. 90% sparsity, synthetic inputs, "
           "batch-1 single-thread latency (median, alternated with dense "
           f"float32, {res['invokes']} invokes each).", "",
           "| model | pattern | precision | bytes | x dense f32 | formats | "
           "runtime path | resolver | latency us | dense f32 us | speed-up |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["inference"]:
        out.append(
            f"| {r['model']} | {r['pattern']} | {r['precision']} | "
            f"{r['bytes']} | {r['size_ratio']:.3f} | "
            f"{', '.join(r['sparse_formats']) or 'dense'} | "
            f"{r['runtime_path']} | {r['op_resolver']} | "
            f"{r['latency_us']:.1f} | {r['dense_float32_latency_us']:.1f} | "
            f"{r['speedup_vs_dense_f32']:.2f}x |")
    out += ["", "On-device training (train signature, batch 32, SGD momentum):",
            "", "| model | LiteRT ms/step | Keras ms/step | LiteRT/Keras | "
            "trainable bytes (dense storage) | (sparse storage) | dense "
            "inference f32 bytes |", "|---|---|---|---|---|---|---|"]
    for r in res["training"]:
        out.append(
            f"| {r['model']} | {r['litert_step_ms']:.2f} | "
            f"{r['keras_step_ms']:.2f} | {r['litert_over_keras']:.2f} | "
            f"{r['trainable_bytes_dense_storage']} | "
            f"{r['trainable_bytes_sparse_storage']} | "
            f"{r['dense_inference_float32_bytes']} |")
    notes = sorted({n for r in res["inference"] for n in r["notes"]})
    if notes:
        out += ["", "Notes from the exporter:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    import importlib.metadata as md

    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "quick": args.quick,
        "invokes": 60 if args.quick else 400,
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    "keras": keras.__version__,
                    "ai_edge_litert": md.version("ai-edge-litert"),
                    "numpy": np.__version__},
        "inference": [], "training": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        bench_inference(args.quick, tmp, res["inference"], None)
        bench_training(args.quick, tmp, res["training"])
    os.makedirs(args.out, exist_ok=True)
    name = "tflite_bench_quick" if args.quick else "tflite_bench"
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(res, f, indent=2)
    md_text = to_markdown(res)
    with open(os.path.join(args.out, name + ".md"), "w") as f:
        f.write(md_text)
    print(md_text)


if __name__ == "__main__":
    main()
