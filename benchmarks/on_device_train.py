"""On-device training benchmark: LiteRT train step vs Keras, head-only vs
full, file bytes and peak memory.

Run: `python -m benchmarks.on_device_train [--quick]`. Writes
`benchmarks/results/on_device_train[_quick].json` and `.md`.

Models (all at 90% ERK sparsity from `keras_sparse.sparsify`, BatchNorm
frozen on both sides, batch 32, 28x28x1 inputs):
- small CNN (`keras_sparse.models.small_cnn`, Model A),
- ResNet-20 (`cifar_resnet(20)`, Model B),
- MobileNetV2-style (`mobilenet_v2_small`).
`--quick` uses tiny versions (8x8 inputs, 4-wide, batch 4, 3 timed steps):
a smoke test of the script, not a measurement.

Per model:
- train step: the exported `train` signature in ai-edge-litert (one
  thread) against the sparse Keras model's `train_on_batch`
  (`jit_compile=False`) on the same batch, full training and head-only
  (every layer but the logits frozen, on both sides); the four are
  alternated step by step after warm-up, medians reported;
- bytes: the trainable file (sparse weight storage, full and head-only)
  against the dense float32 inference export of the same model;
- peak RSS: a fresh process that imports only the runtime, loads the file
  and runs the train steps; its peak resident set (`ru_maxrss`) and the
  part added after the runtime import.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import keras_sparse  # noqa: E402
import tflite_export  # noqa: E402
from benchmarks._common import (  # noqa: E402
    RESULTS_DIR, LoadProbe, load_note, machine_info, machine_markdown,
    markdown_table, write_json)
from tflite_export.verify import make_interpreter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TARGET_STEP_RATIO = 1.5
TARGET_BYTES_RATIO = 0.35


def _opt():
    return keras.optimizers.SGD(0.01, momentum=0.9)


def models(quick: bool) -> dict[str, Any]:
    """Builders of the benchmarked models (tiny ones with `quick`)."""
    m = keras_sparse.models
    if quick:
        return {
            "small_cnn": lambda: m.small_cnn((12, 12, 1)),
            "resnet20": lambda: m.cifar_resnet(8, (8, 8, 1), width=4),
            "mobilenet_v2_small": lambda: m.mobilenet_v2_small(
                (8, 8, 1), width=4, expansion=2, blocks_per_stage=(1, 1, 1)),
        }
    return {
        "small_cnn": lambda: m.small_cnn((28, 28, 1)),
        "resnet20": lambda: m.cifar_resnet(20, (28, 28, 1)),
        "mobilenet_v2_small": lambda: m.mobilenet_v2_small((28, 28, 1)),
    }


def _prepare(build, head_only: bool):
    """(sparse Keras model, compiled; its stripped copy), BN frozen, and
    with `head_only` every layer but `logits` frozen."""
    sparse = keras_sparse.sparsify(build(), 0.9, distribution="erk", seed=0)
    for layer in sparse.layers:
        if isinstance(layer, keras.layers.BatchNormalization) or (
                head_only and layer.name != "logits"):
            layer.trainable = False
    sparse.compile(optimizer=_opt(), loss=LOSS, jit_compile=False)
    return sparse, keras_sparse.strip(sparse)


_RSS_SCRIPT = """
import resource, sys, numpy as np
from tflite_export.runner import load_runtime


def hwm():
    # VmHWM (KiB) is per address space and restarts at exec; ru_maxrss
    # would include the parent's size at fork time on Linux.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


Interpreter = load_runtime()[0]
base = hwm()
it = Interpreter(model_path=sys.argv[1], num_threads=1); it.allocate_tensors()
d = np.load(sys.argv[2])
train = it.get_signature_runner("train")
for _ in range(int(sys.argv[3])):
    train(x=d["x"], y=d["y"])
print(base, hwm())
"""


def peak_rss(path: str, batch_file: str, steps: int) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh runtime-only process training `steps`."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, path, batch_file,
                          str(steps)], capture_output=True, text=True,
                         env=env, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    base, peak = (float(v) / 1024.0 for v in
                  res.stdout.strip().splitlines()[-1].split())
    return {"peak_rss_mib": peak, "added_after_runtime_import_mib": peak - base}


def measure(name: str, build, quick: bool, tmp: str) -> dict[str, Any]:
    """One row: step times, bytes and peak RSS of one model."""
    batch = 4 if quick else 32
    steps = 3 if quick else 30
    rng = np.random.default_rng(0)
    runs, files = {}, {}
    for mode in ("full", "head"):
        sparse, plain = _prepare(build, head_only=mode == "head")
        path = os.path.join(tmp, f"{name}_{mode}.tflite")
        report = tflite_export.export_trainable(
            plain, path, _opt(), LOSS, batch_size=batch,
            weight_storage="sparse", compare_dense=mode == "full")
        files[mode] = report
        with open(path, "rb") as f:
            interp = make_interpreter(f.read())
        runs[f"litert_{mode}"] = interp.get_signature_runner("train")
        runs[f"keras_{mode}"] = sparse
    shape = tuple(plain.inputs[0].shape[1:])
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    fns = {k: (lambda r=r: r(x=x, y=y)) if k.startswith("litert")
           else (lambda r=r: r.train_on_batch(x, y)) for k, r in runs.items()}
    for fn in fns.values():  # warm-up (tracing, allocation)
        for _ in range(2 if quick else 5):
            fn()
    probe = LoadProbe()
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():  # alternated
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    load = probe.record()
    med = {k: float(np.median(v) * 1e3) for k, v in times.items()}
    batch_file = os.path.join(tmp, f"{name}_batch.npz")
    np.savez(batch_file, x=x, y=y)
    rss = {mode: peak_rss(files[mode].path, batch_file, steps)
           for mode in ("full", "head")}
    dense = files["full"].dense_inference_float32_bytes
    return {
        "model": name, "batch": batch, "steps": steps,
        "litert_full_ms": med["litert_full"], "keras_full_ms": med["keras_full"],
        "litert_head_ms": med["litert_head"], "keras_head_ms": med["keras_head"],
        "full_over_keras": med["litert_full"] / med["keras_full"],
        "head_over_keras": med["litert_head"] / med["keras_head"],
        "head_over_full_litert": med["litert_head"] / med["litert_full"],
        "trainable_bytes": files["full"].num_bytes,
        "head_only_trainable_bytes": files["head"].num_bytes,
        "dense_inference_float32_bytes": dense,
        "bytes_over_dense": files["full"].num_bytes / dense,
        "head_only_bytes_over_dense": files["head"].num_bytes / dense,
        "peak_rss": rss,
        "load": load,
    }


def render_markdown(res: dict[str, Any]) -> str:
    rows = res["rows"]
    lines = [
        "## On-device training (LiteRT) vs Keras",
        "",
        machine_markdown(res["machine"]),
        f"Command: `{res['command']}`." + (" **Quick smoke run: tiny models, "
                                           "not a measurement.**"
                                           if res["quick"] else ""),
        "",
        "Medians of alternated steps, one LiteRT thread; 90% ERK; BN frozen "
        "on both sides; head-only = every layer but the logits frozen.",
        "",
        markdown_table(
            ["model", "batch", "LiteRT full ms", "Keras full ms",
             "full / Keras", "LiteRT head ms", "Keras head ms",
             "head / Keras", "head / full (LiteRT)"],
            [[r["model"], r["batch"], f"{r['litert_full_ms']:.2f}",
              f"{r['keras_full_ms']:.2f}", f"{r['full_over_keras']:.2f}x",
              f"{r['litert_head_ms']:.2f}", f"{r['keras_head_ms']:.2f}",
              f"{r['head_over_keras']:.2f}x",
              f"{r['head_over_full_litert']:.2f}x"] for r in rows]),
        "",
        markdown_table(
            ["model", "trainable file (sparse storage)", "head-only file",
             "dense f32 inference", "trainable / dense", "head-only / dense",
             "peak RSS full MiB (added)", "peak RSS head MiB (added)"],
            [[r["model"], r["trainable_bytes"], r["head_only_trainable_bytes"],
              r["dense_inference_float32_bytes"],
              f"{r['bytes_over_dense']:.3f}x",
              f"{r['head_only_bytes_over_dense']:.3f}x",
              f"{r['peak_rss']['full']['peak_rss_mib']:.0f} "
              f"({r['peak_rss']['full']['added_after_runtime_import_mib']:.0f})",
              f"{r['peak_rss']['head']['peak_rss_mib']:.0f} "
              f"({r['peak_rss']['head']['added_after_runtime_import_mib']:.0f})"]
             for r in rows]),
        "",
        f"Targets: step <= {TARGET_STEP_RATIO}x Keras, trainable file <= "
        f"{TARGET_BYTES_RATIO}x dense at 90%.",
    ]
    missed = [f"{r['model']}: step {r['full_over_keras']:.2f}x"
              for r in rows if r["full_over_keras"] > TARGET_STEP_RATIO]
    missed += [f"{r['model']}: file {r['bytes_over_dense']:.3f}x"
               for r in rows if r["bytes_over_dense"] > TARGET_BYTES_RATIO]
    if missed:
        lines.append("Missed: " + "; ".join(missed) + ".")
    for r in rows:
        note = load_note(r["load"], res["machine"]["cpu_count"])
        if note:
            lines.append(f"- {r['model']}: {note}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny models, 3 steps: checks the script only")
    p.add_argument("--models", nargs="*", default=None,
                   help="subset of small_cnn, resnet20, mobilenet_v2_small")
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    builders = models(args.quick)
    chosen = args.models or list(builders)
    unknown = sorted(set(chosen) - set(builders))
    if unknown:
        p.error(f"unknown models {unknown}; accepted: {sorted(builders)}")
    keras.utils.set_random_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tqdm(chosen, desc="on-device training"):
            rows.append(measure(name, builders[name], args.quick, tmp))
    res = {
        "command": "python -m benchmarks.on_device_train"
                   + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "machine": machine_info(),
        "rows": rows,
    }
    stem = "on_device_train" + ("_quick" if args.quick else "")
    out = Path(args.out_dir)
    write_json(out / f"{stem}.json", res)
    (out / f"{stem}.md").write_text(render_markdown(res), encoding="utf-8")
    print(render_markdown(res))
    return res


if __name__ == "__main__":
    main()
