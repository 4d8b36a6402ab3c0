"""TFLite export benchmark: sizes, batch-1 latency, on-device train step.

Run: `python -m benchmarks.tflite_bench [--quick]`. Writes
`benchmarks/results/tflite_bench.json`, `.md` and `.png` (bytes and
latency relative to dense float32). Resumable: each (model, pattern) export
group and each train-step row is kept in `tflite_bench[_quick].partial.json`
as soon as it is measured; a killed run started again continues from there
(the JSON lists those `resumed_pieces`).

Models (weights zeroed to 90% sparsity with numpy; sizes and latencies do
not depend on the weight values, so synthetic inputs are used):
- MLP 784-1024-1024-10 (ReLU), 1x4 blocks along the input dim
  ("block1x4"), 1x16 blocks ("block1x16", the int8 sparse FC pattern) or
  unstructured ("random").
- CNN A: conv32-pool-conv64-pool-dense256-dense10 on 28x28x1, ReLU.

Latency: single-thread batch-1 `invoke()` in ai-edge-litert, sparse and
dense models alternated in rounds of 20 invokes after warm-up; median of
all invokes. Train step: the `train` signature in LiteRT (dense and sparse
weight storage) vs `keras.Model.train_on_batch` (jit_compile=False) on the
same batch, alternated; medians.
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
from benchmarks._common import PieceCheckpoint, cpu_model  # noqa: E402
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


def bench_inference(quick, tmp, rows, checkpoint=None):
    """Appends one row per (model, pattern, precision) to `rows`.

    Each (model, pattern) is one resumable piece of `checkpoint`
    (`benchmarks._common.PieceCheckpoint`): its exports and alternated
    latencies are measured together.
    """
    checkpoint = checkpoint or PieceCheckpoint(None, {})
    invokes = 60 if quick else 400
    rep = np.random.default_rng(1).random((32, 784)).astype(np.float32)
    rep_cnn = np.random.default_rng(1).random((32, 28, 28, 1)).astype(
        np.float32)
    configs = [("mlp", "block1x4", 4), ("mlp", "block1x16", 16),
               ("mlp", "random", 1), ("cnn", "block1x4", 4),
               ("cnn", "random", 1)]
    precisions = (["float32", "int8_dynamic"] if quick else
                  ["float32", "float16", "int8_dynamic", "int8_full"])
    dense_cache: dict[tuple[str, str], bytes] = {}

    def dense_at(arch, prec):
        """The dense model's file at `prec` (the baseline of every export at that precision)."""
        if (arch, prec) not in dense_cache:
            path = os.path.join(tmp, f"{arch}_dense_{prec}.tflite")
            tflite_export.export_inference(
                mlp() if arch == "mlp" else cnn(), path, precision=prec,
                representative_data=rep if arch == "mlp" else rep_cnn,
                measure_latency=False, compare_dense=False, write_report_json=False)
            with open(path, "rb") as f:
                dense_cache[(arch, prec)] = f.read()
        return dense_cache[(arch, prec)]

    def measure(arch, pattern, block):
        build = mlp if arch == "mlp" else cnn
        data_rep = rep if arch == "mlp" else rep_cnn
        dense_f32 = dense_at(arch, "float32")
        dense_bytes = len(dense_f32)
        model = zero_out(build(), 0.1, block)
        out = []
        for prec in precisions:
            path = os.path.join(tmp, f"{arch}_{pattern}_{prec}.tflite")
            r = tflite_export.export_inference(
                model, path, precision=prec, representative_data=data_rep,
                measure_latency=False, compare_dense=False, optimize="sparse")
            with open(path, "rb") as f:
                data = f.read()
            # What a user gets by default (optimize="latency"): the faster encoding.
            default_path = os.path.join(tmp, f"{arch}_{pattern}_{prec}_default.tflite")
            d = tflite_export.export_inference(
                model, default_path, precision=prec, representative_data=data_rep,
                compare_dense=False, write_report_json=False)
            with open(default_path, "rb") as f:
                default_data = f.read()
            lat = alternated_latency({
                "sparse": _interp_feed(data, r.op_resolver),
                "default": _interp_feed(default_data, d.op_resolver),
                "dense_same": _interp_feed(dense_at(arch, prec), "default"),
                "dense": _interp_feed(dense_f32, "default")}, invokes)
            out.append({
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
                "dense_same_precision_bytes": len(dense_at(arch, prec)),
                "dense_same_precision_latency_us": lat["dense_same"],
                "speedup_vs_dense_same_precision": lat["dense_same"] / lat["sparse"],
                "default_choice": (d.encoding_choice or {}).get("chosen"),
                "default_latency_us": lat["default"],
                "default_vs_dense_same_precision": lat["dense_same"] / lat["default"],
                "notes": r.notes,
            })
        return out

    for arch, pattern, block in tqdm(configs, desc="inference exports"):
        rows.extend(checkpoint.run(f"inference/{arch}/{pattern}",
                                   lambda arch=arch, pattern=pattern, block=block: measure(arch, pattern, block)))


def bench_training(quick, tmp, train_rows, checkpoint=None):
    """Appends one row per model to `train_rows`; each model is one piece of `checkpoint`."""
    checkpoint = checkpoint or PieceCheckpoint(None, {})
    for arch in ["mlp", "cnn"]:
        train_rows.append(checkpoint.run(f"training/{arch}", lambda arch=arch: _train_row(quick, tmp, arch)))


def _train_row(quick, tmp, arch):
    batch = 32
    steps = 10 if quick else 40
    rng = np.random.default_rng({"mlp": 2, "cnn": 3}[arch])
    build = mlp if arch == "mlp" else cnn
    model = zero_out(build(), 0.1, 4)
    shape = (784,) if arch == "mlp" else (28, 28, 1)
    opt = lambda: keras.optimizers.SGD(0.01, momentum=0.9)  # noqa: E731
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    sizes, runners = {}, {}
    for storage in ["dense", "sparse"]:
        p = os.path.join(tmp, f"train_{arch}_{storage}.tflite")
        r = tflite_export.export_trainable(model, p, opt(), loss,
                                           batch_size=batch,
                                           weight_storage=storage)
        sizes[storage] = r.num_bytes
        dense_inf = r.dense_inference_float32_bytes
        with open(p, "rb") as f:
            it = make_interpreter(f.read())
        runners[storage] = it.get_signature_runner("train")
    sparse_inf = len(convert(model, "float32"))
    km = keras.models.clone_model(model)
    km.set_weights(model.get_weights())
    km.compile(optimizer=opt(), loss=loss, jit_compile=False)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    fns = {"litert_dense_storage": lambda: runners["dense"](x=x, y=y),
           "litert_sparse_storage": lambda: runners["sparse"](x=x, y=y),
           "keras": lambda: km.train_on_batch(x, y)}
    for fn in fns.values():
        for _ in range(3):
            fn()
    times = {k: [] for k in fns}
    for _ in tqdm(range(steps), desc=f"train step {arch}"):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v) * 1e3) for k, v in times.items()}
    return {
        "model": arch, "batch": batch, "steps": steps,
        "litert_step_ms": med["litert_dense_storage"],
        "litert_sparse_storage_step_ms": med["litert_sparse_storage"],
        "keras_step_ms": med["keras"],
        "litert_over_keras": med["litert_dense_storage"] / med["keras"],
        "litert_sparse_storage_over_keras":
            med["litert_sparse_storage"] / med["keras"],
        "trainable_bytes_dense_storage": sizes["dense"],
        "trainable_bytes_sparse_storage": sizes["sparse"],
        "dense_inference_float32_bytes": dense_inf,
        "sparse_inference_float32_bytes": sparse_inf,
    }


def plot(res, path):
    """Bytes and batch-1 latency of every export relative to dense f32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["inference"]
    labels = [f"{r['model']} {r['pattern']}\n{r['precision']}" for r in rows]
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True)
    xs = np.arange(len(rows))
    axes[0].bar(xs, [r["size_ratio"] for r in rows], color="tab:blue")
    axes[0].axhline(0.2, ls="--", c="gray", lw=1, label="0.2x (float32 target)")
    axes[0].axhline(0.06, ls=":", c="red", lw=1, label="0.06x (int8 target)")
    axes[0].set_ylabel("bytes / dense float32")
    axes[0].legend(fontsize=8)
    axes[1].bar(xs, [r["latency_us"] / r["dense_float32_latency_us"]
                     for r in rows], color="tab:orange")
    axes[1].axhline(1.0, ls="--", c="gray", lw=1)
    axes[1].set_ylabel("latency / dense float32")
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels(labels, rotation=75, fontsize=7)
    fig.suptitle(f"TFLite exports at 90% sparsity ({res['date'][:10]}, "
                 "batch 1, 1 thread, LiteRT)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FORMAT_NOTES = """Formats (what the files contain):

- Trainable, sparse storage: each kernel with >= 50% pruned entries is a
  `[nnz]` float32 variable of its non-zeros + a constant `[nnz, 1]` int32
  index tensor, scattered into the dense kernel (SCATTER_ND) by every
  signature; gradients are gathered back (GATHER_ND) and the optimizer
  slots are `[nnz]` (one shared all-zero initial buffer). About 12 bytes
  per non-zero. Dense storage keeps full dense variables + a bool mask.
- int8 with 1x4 blocks: the converter writes element-wise CSR (int8 value
  + uint16 column index per non-zero + int64 per-channel zero points); the
  export re-encodes it BSR 1x4 (one uint8 block index per 4 values), still
  expanded by DENSIFY at load (the int8 sparse FC kernel exists only for
  1x16 blocks). Sparse int8 files need the builtin resolver without
  XNNPACK, and the TF 2.21 converter emits FULLY_CONNECTED version 12,
  which tflite-runtime 2.14 cannot load.
- float16 with blocks: the converter writes a BSR float16 tensor fed to
  DEQUANTIZE without DENSIFY (NaN at run time, minimal case: one 16x8
  Dense); verification catches it and the export falls back to dense
  float16 (0.5x) with a warning. Unstructured float16 (CSR + DENSIFY) is
  correct.
"""


def to_markdown(res) -> str:
    m = res["machine"]
    out = [f"# TFLite export benchmark ({res['date']})", "",
           f"Machine: {m['cpu']} ({m['cores']} cores), {m['platform']}; "
           f"TF {m['tensorflow']}, Keras {m['keras']}, ai-edge-litert "
           f"{m['ai_edge_litert']}. 90% sparsity, synthetic inputs, "
           "batch-1 single-thread latency (median, alternated with dense "
           f"float32, {res['invokes']} invokes each).", "",
           "| model | pattern | precision | bytes | x dense f32 | formats | "
           "runtime path | resolver | sparse us | dense same-precision us | sparse speed-up | "
           "default choice | default speed-up | dense f32 us |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["inference"]:
        same = r.get("dense_same_precision_latency_us")
        out.append(
            f"| {r['model']} | {r['pattern']} | {r['precision']} | "
            f"{r['bytes']} | {r['size_ratio']:.3f} | "
            f"{', '.join(r['sparse_formats']) or 'dense'} | "
            f"{r['runtime_path']} | {r['op_resolver']} | "
            f"{r['latency_us']:.1f} | {'-' if same is None else f'{same:.1f}'} | "
            f"{r.get('speedup_vs_dense_same_precision', float('nan')):.2f}x | "
            f"{r.get('default_choice') or '-'} | "
            f"{r.get('default_vs_dense_same_precision', float('nan')):.2f}x | "
            f"{r['dense_float32_latency_us']:.1f} |")
    out += ["", "Speed-ups are against the dense model exported at the same precision, timed "
            "alternately in the same run; \"default\" is what `export_inference` ships with its "
            "default `optimize=\"latency\"` (it times both encodings and keeps the faster)."]
    out += ["", "On-device training (train signature, batch 32, SGD "
            "momentum, 90% 1x4-block sparsity; medians of "
            f"{res['training'][0]['steps'] if res['training'] else 0} steps, "
            "LiteRT dense storage / LiteRT sparse storage / Keras "
            "train_on_batch alternated on the same batch):", "",
            "| model | LiteRT ms/step (dense storage) | LiteRT ms/step "
            "(sparse storage) | Keras ms/step | LiteRT/Keras (dense "
            "storage) | LiteRT/Keras (sparse storage) |",
            "|---|---|---|---|---|---|"]
    for r in res["training"]:
        out.append(
            f"| {r['model']} | {r['litert_step_ms']:.2f} | "
            f"{r['litert_sparse_storage_step_ms']:.2f} | "
            f"{r['keras_step_ms']:.2f} | {r['litert_over_keras']:.2f} | "
            f"{r['litert_sparse_storage_over_keras']:.2f} |")
    out += ["", "File bytes (x = relative to the dense float32 inference "
            "file):", "",
            "| model | dense inference f32 | sparse inference f32 | "
            "trainable, dense storage | trainable, sparse storage |",
            "|---|---|---|---|---|"]
    for r in res["training"]:
        d = r["dense_inference_float32_bytes"]
        cells = [f"{r[k]} ({r[k] / d:.3f}x)" for k in (
            "sparse_inference_float32_bytes",
            "trainable_bytes_dense_storage",
            "trainable_bytes_sparse_storage")]
        out.append(f"| {r['model']} | {d} | " + " | ".join(cells) + " |")
    out += ["", FORMAT_NOTES]
    notes = sorted({n for r in res["inference"] for n in r["notes"]})
    if notes:
        out += ["", "Notes from the exporter:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    import importlib.metadata as md

    res = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"),
        "quick": args.quick,
        "invokes": 60 if args.quick else 400,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    "keras": keras.__version__,
                    "ai_edge_litert": md.version("ai-edge-litert"),
                    "numpy": np.__version__},
        "inference": [], "training": [],
    }
    name = "tflite_bench_quick" if args.quick else "tflite_bench"
    os.makedirs(args.out, exist_ok=True)
    checkpoint = PieceCheckpoint(os.path.join(args.out, name + ".partial.json"),
                                 {"quick": args.quick})
    if checkpoint.pieces:
        print(f"Resuming from {checkpoint.path}: {len(checkpoint.pieces)} finished piece(s) kept.")
        res["resumed_pieces"] = sorted(checkpoint.pieces)
    with tempfile.TemporaryDirectory() as tmp:
        bench_inference(args.quick, tmp, res["inference"], checkpoint)
        bench_training(args.quick, tmp, res["training"], checkpoint)
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(res, f, indent=2)
    plot(res, os.path.join(args.out, name + ".png"))
    md_text = to_markdown(res)
    with open(os.path.join(args.out, name + ".md"), "w") as f:
        f.write(md_text)
    checkpoint.finish()  # everything is in the JSON now
    print(md_text)


if __name__ == "__main__":
    main()
