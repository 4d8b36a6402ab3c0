"""Chase's channel-level sparsity against unstructured RigL and dense: accuracy and phone speed.

Chase (Yin et al., "Dynamic Sparsity Is Channel-Level Sparsity Learner",
NeurIPS 2023) removes whole channels during unstructured DST, so the
trained model can be made physically smaller (`ks.strip(model,
remove_channels=True)`) and runs faster with the dense kernels every phone
already has. This benchmark measures, side by side in one process:

- training (phase `train`): dense, RigL (90% ERK, unstructured) and Chase
  (90% overall) on Fashion-MNIST with the accuracy table's recipe and
  budget (`benchmarks.accuracy.recipe_budget`: small CNN 60k images x 10
  epochs, ResNet-20 20k x 15), mask updates every 100 steps; the
  MobileNet-style net trains on synthetic 64x64x3 inputs only to get its
  masks (its accuracy means nothing and is not reported). Each trained
  model is saved plain (`strip`; Chase: `strip(remove_channels=True)`).
- speed (phase `speed`, after `train`): the three files of each (model,
  seed) exported float32 (`tflite_export.export_inference`; RigL with its
  default `optimize="latency"` choice), timed alternately in LiteRT, batch
  1, one thread (medians), with parameters, executed FLOPs (dense kernels:
  what the file runs), file bytes and peak RSS of a fresh process; and the
  on-device `train` step of the channel-removed model against the dense
  one (`export_trainable`, alternated, medians).

Goal of the issue: Chase >= 1.5x faster than dense in LiteRT, within 1
point of RigL's accuracy. Results: `chase_speed.{jsonl,json,md}`
(resumable: rerun to continue; `--quick` runs tiny models on synthetic
data into `chase_speed_quick.*`). Time it on an idle machine only.
"""

from __future__ import annotations

import argparse
import json
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

import keras_sparse as ks  # noqa: E402
import tflite_export  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks._common import (  # noqa: E402
    RESULTS_DIR, LoadProbe, load_note, machine_fingerprint, machine_info, machine_markdown, machine_of,
    markdown_table, write_json)
from benchmarks.accuracy import FULL_EPOCHS, FULL_TRAIN_SIZE, recipe_budget  # noqa: E402
from benchmarks.accuracy import load_data as accuracy_data  # noqa: E402
from tflite_export.runner import make_interpreter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("dense", "rigl", "chase")
SPARSITY = 0.9
INTERVAL = 100
TARGET_SPEEDUP = 1.5
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def model_specs(quick: bool) -> dict[str, dict[str, Any]]:
    """Builder, input shape, data and budget of each benchmarked model."""
    m = ks.models
    if quick:
        tiny = harness.Budget(epochs=1, batch_size=16, lr=0.05, warmup_epochs=0.0, train_size=128)
        return {
            "small_cnn": dict(build=lambda: m.small_cnn((12, 12, 1)), shape=(12, 12, 1), data="synthetic",
                              budget=tiny),
            "mobilenet_v2_small": dict(build=lambda: m.mobilenet_v2_small(
                (16, 16, 3), width=4, expansion=2, blocks_per_stage=(1, 1, 1)), shape=(16, 16, 3),
                data="synthetic", budget=tiny),
        }
    return {
        "small_cnn": dict(build=lambda: m.small_cnn((28, 28, 1)), shape=(28, 28, 1), data="fashion_mnist",
                          budget=recipe_budget(FULL_EPOCHS["small_cnn"], FULL_TRAIN_SIZE["small_cnn"])),
        "resnet20": dict(build=lambda: m.cifar_resnet(20, (28, 28, 1)), shape=(28, 28, 1), data="fashion_mnist",
                         budget=recipe_budget(FULL_EPOCHS["resnet20"], FULL_TRAIN_SIZE["resnet20"])),
        # 12800 images x 5 epochs = 500 steps: Chase's channel removal needs
        # mask updates (every 100 steps, until 75% of training).
        "mobilenet_v2_small": dict(build=lambda: m.mobilenet_v2_small((64, 64, 3)), shape=(64, 64, 3),
                                   data="synthetic", budget=recipe_budget(5, 12800)),
    }


def load_data(spec: dict[str, Any], seed: int) -> harness.BenchData:
    budget = spec["budget"]
    if spec["data"] == "fashion_mnist":
        # The accuracy table's data (images already float32 in [0, 1]).
        return accuracy_data(budget.train_size, seed)
    rng = np.random.default_rng(seed)
    n = budget.train_size or 1024
    xs = rng.random((n + 256, *spec["shape"])).astype(np.float32)
    ys = (xs.reshape(len(xs), -1).mean(axis=1) * 37).astype(np.int32) % 10
    return harness.BenchData(xs[:n], ys[:n], xs[n:], ys[n:], name="synthetic")


def train_one(model_name: str, method: str, seed: int, spec: dict[str, Any], out: Path,
              interval: int = INTERVAL) -> dict[str, Any]:
    """Trains one run and saves its plain (Chase: channel-removed) model."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    data, budget = load_data(spec, seed), spec["budget"]
    model = spec["build"]()
    callbacks = []
    if method != "dense":
        model = ks.sparsify(model, SPARSITY, distribution="erk", seed=seed)
        algorithm = ks.algorithms.get({"class_name": method, "config": {"update_interval": interval,
                                                                         "seed": seed}})
        callbacks.append(ks.callbacks.DynamicSparseTraining(algorithm))
    trained = harness.train(model, data, budget, seed, callbacks=callbacks)
    row: dict[str, Any] = {"model": model_name, "method": method, "seed": seed,
                           "budget": budget.to_dict(), "data": data.name}
    if data.name != "synthetic":
        row["test_accuracy"] = harness.test_accuracy(trained, data)
    if method == "dense":
        plain = trained
    else:
        row["sparsity"] = ks.sparsity_report(trained).total_sparsity
        plain = ks.strip(trained, remove_channels=method == "chase")
        if method == "chase":
            x = data.x_test[:64]
            row["removed_max_abs_diff"] = float(np.max(np.abs(
                np.asarray(trained(x, training=False)) - np.asarray(plain(x, training=False)))))
    path = out / f"{model_name}_{method}_s{seed}.keras"
    plain.save(path)
    row["model_path"] = path.name
    return row


def executed_flops(model) -> int:
    """Multiply-add FLOPs of the prunable layers run with dense kernels."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return ks.sparsity_report(ks.sparsify(clone, 0.0, keep_dense=None)).flops_dense


_RSS_SCRIPT = """
import sys, numpy as np
from tflite_export.runner import make_interpreter
def hwm():
    with open("/proc/self/status") as f:
        return next(float(l.split()[1]) for l in f if l.startswith("VmHWM:"))
it = make_interpreter(sys.argv[1])
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
for _ in range(20):
    it.invoke()
print(hwm())
"""


def peak_rss_mib(path: str) -> float:
    """Peak RSS (MiB) of a fresh runtime-only process running 20 inferences."""
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, path], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return float(res.stdout.split()[-1]) / 1024.0


def _alternate(calls: dict[str, Any], rounds: int, per_round: int = 20) -> dict[str, float]:
    """Median microseconds per call, the calls alternated round by round."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():
        for _ in range(10):
            fn()
    for _ in range(rounds):
        for k, fn in calls.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v) * 1e6) for k, v in times.items()}


def speed_one(model_name: str, seed: int, spec: dict[str, Any], out: Path, rounds: int) -> dict[str, Any]:
    """Latency, bytes, RSS, params, FLOPs of the three files; train steps of Chase vs dense."""
    probe = LoadProbe()
    shape = spec["shape"]
    sample = np.random.default_rng(0).random((64, *shape)).astype(np.float32)
    models = {m: keras.models.load_model(out / f"{model_name}_{m}_s{seed}.keras", compile=False) for m in METHODS}
    rows: dict[str, dict[str, Any]] = {}
    infer, train = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, model in models.items():
            path = os.path.join(tmp, f"{method}.tflite")
            report = tflite_export.export_inference(model, path, sample_inputs=sample[:16], write_report_json=False)
            interp = make_interpreter(path)
            d = interp.get_input_details()[0]
            interp.set_tensor(d["index"], sample[:1])
            infer[method] = interp.invoke
            rows[method] = {"bytes": os.path.getsize(path), "params": int(model.count_params()),
                            "nonzero_params": int(sum(np.count_nonzero(w) for w in model.get_weights())),
                            "flops": executed_flops(model), "peak_rss_mib": peak_rss_mib(path),
                            "encoding": getattr(report, "encoding_choice", None)}
        latency = _alternate(infer, rounds)
        batch = 16
        xb = sample[:batch] if len(sample) >= batch else np.resize(sample, (batch, *shape))
        yb = np.zeros(batch, np.int32)
        for method in ("dense", "chase"):
            path = os.path.join(tmp, f"{method}_train.tflite")
            tflite_export.export_trainable(models[method], path, keras.optimizers.SGD(0.01, momentum=0.9),
                                           LOSS, batch_size=batch, compare_dense=False)
            runner = make_interpreter(path).get_signature_runner("train")
            train[method] = lambda r=runner: r(x=xb, y=yb)
        train_us = _alternate(train, max(1, rounds // 4), per_round=5)
    for method in METHODS:
        rows[method]["latency_us"] = latency[method]
    for method in train:
        rows[method]["train_step_us"] = train_us[method]
    return {"model": model_name, "seed": seed, "files": rows, "load": probe.record(),
            "machine": machine_fingerprint()}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return out


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(train_rows: list[dict[str, Any]], speed_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, method): means over seeds, ratios against dense."""
    out = []
    for model in dict.fromkeys(r["model"] for r in train_rows):
        speeds = [s for s in speed_rows if s["model"] == model]
        for method in METHODS:
            runs = [r for r in train_rows if r["model"] == model and r["method"] == method]
            files = [s["files"][method] for s in speeds]
            dense = [s["files"]["dense"] for s in speeds]
            row = {"model": model, "method": method, "n": len(runs),
                   "test_accuracy": _mean(r.get("test_accuracy") for r in runs),
                   "sparsity": _mean(r.get("sparsity") for r in runs)}
            for k in ("latency_us", "bytes", "params", "nonzero_params", "flops", "peak_rss_mib",
                      "train_step_us"):
                row[k] = _mean(f.get(k) for f in files)
            row["speedup_vs_dense"] = _mean(d["latency_us"] / f["latency_us"] for f, d in zip(files, dense))
            row["train_speedup_vs_dense"] = _mean(
                d["train_step_us"] / f["train_step_us"] for f, d in zip(files, dense)
                if "train_step_us" in f and "train_step_us" in d)
            out.append(row)
    return out


def per_seed_lines(speed_rows: list[dict[str, Any]]) -> list[str]:
    """A table of each (model, seed)'s speed ratios with the machine it was timed on.

    The project's machines change between sessions, and a CPU changes the
    ratios, not only the times (the same kind of file can gain more from
    fewer channels on one CPU than on another): the means above mix
    machines where seeds were timed on different ones, and this table
    shows by how much.
    """
    machines = list(dict.fromkeys(machine_of(r) for r in speed_rows))
    label = {m: f"M{i + 1}" for i, m in enumerate(machines)}
    rows = []
    for r in speed_rows:
        f = r["files"]
        d, c = f["dense"], f["chase"]
        train = (d["train_step_us"] / c["train_step_us"]
                 if "train_step_us" in d and "train_step_us" in c else None)
        rows.append([r["model"], r["seed"], label[machine_of(r)], _f(d["latency_us"], "{:.0f}"),
                     _f(d["latency_us"] / f["rigl"]["latency_us"], "{:.2f}x"),
                     _f(d["latency_us"] / c["latency_us"], "{:.2f}x"), _f(c["flops"] / d["flops"], "{:.2f}"),
                     _f(train, "{:.2f}x")])
    return ["Per seed (each row timed side by side in one run):", "",
            markdown_table(["model", "seed", "machine", "dense us", "RigL x dense", "Chase x dense",
                            "Chase FLOPs / dense", "Chase train x dense"], rows), "",
            "Machines: " + "; ".join(f"{label[m]} = `{m}`" for m in machines) + ".", ""]


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def render(table: list[dict[str, Any]], planned: int, done: int, info: dict[str, Any],
           speed_rows: list[dict[str, Any]]) -> str:
    status = "complete" if done >= planned else f"PARTIAL: {done} of {planned} training runs"
    lines = [
        "## Chase (channel-level DST) vs RigL and dense: accuracy and LiteRT speed", "",
        f"Status: {status}. {machine_markdown(info)}", "",
        f"90% overall sparsity (ERK for RigL), mask updates every {INTERVAL} steps, the accuracy "
        "table's recipe and budget; Chase's files are `strip(remove_channels=True)`. LiteRT float32, "
        "batch 1, one thread, medians of alternated invokes; FLOPs as executed (dense kernels). "
        "MobileNet-style: synthetic 64x64x3 inputs (no accuracy).", "",
        markdown_table(
            ["model", "method", "n", "test acc", "sparsity", "latency us", "x dense", "params",
             "non-zero params", "MFLOPs", "bytes", "peak RSS MiB", "train step us", "train x dense"],
            [[r["model"], r["method"], r["n"], _f(r["test_accuracy"], "{:.4f}"), _f(r["sparsity"], "{:.3f}"),
              _f(r["latency_us"], "{:.0f}"), _f(r["speedup_vs_dense"], "{:.2f}x"), _f(r["params"], "{:.0f}"),
              _f(r["nonzero_params"], "{:.0f}"), _f(None if r["flops"] is None else r["flops"] / 1e6, "{:.2f}"),
              _f(r["bytes"], "{:.0f}"), _f(r["peak_rss_mib"], "{:.0f}"), _f(r["train_step_us"], "{:.0f}"),
              _f(r["train_speedup_vs_dense"], "{:.2f}x")] for r in table]),
        "",
    ]
    if speed_rows:
        lines += per_seed_lines(speed_rows)
    for r in table:
        if r["method"] != "chase" or r["speedup_vs_dense"] is None:
            continue
        rigl = next((x for x in table if x["model"] == r["model"] and x["method"] == "rigl"), None)
        gap = (None if rigl is None or r["test_accuracy"] is None or rigl["test_accuracy"] is None
               else 100 * (rigl["test_accuracy"] - r["test_accuracy"]))
        verdict = "met" if r["speedup_vs_dense"] >= TARGET_SPEEDUP and (gap is None or gap <= 1.0) else "missed"
        lines.append(f"- {r['model']}: Chase {r['speedup_vs_dense']:.2f}x dense latency"
                     + ("" if gap is None else f", {abs(gap):.2f} points {'below' if gap > 0 else 'above'} RigL")
                     + f": goal (>= {TARGET_SPEEDUP}x, within 1 point) {verdict}.")
    loads = [r.get("load") for r in speed_rows]
    loaded = sum(load_note(x, info.get("cpu_count")).startswith("**The machine was loaded") for x in loads)
    if loaded:
        lines.append(f"- **{loaded} of {len(loads)} speed measurements ran on a machine loaded by other work.**")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models on synthetic data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--phase", choices=("train", "speed", "all", "report"), default="all",
                   help="report: only rewrite the tables from the recorded runs")
    p.add_argument("--rounds", type=int, default=50, help="alternated rounds of 20 invokes")
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    specs = model_specs(args.quick)
    names = args.models or list(specs)
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise ValueError(f"Unknown --models {unknown}; accepted: {sorted(specs)}.")
    seeds = args.seeds[:1] if args.quick else args.seeds
    stem = "chase_speed_quick" if args.quick else "chase_speed"
    out = Path(args.out_dir)
    models_dir = out / f"{stem}_models"
    models_dir.mkdir(parents=True, exist_ok=True)
    train_path, speed_path = out / f"{stem}.jsonl", out / f"{stem}_speed.jsonl"
    train_rows, speed_rows = read_jsonl(train_path), read_jsonl(speed_path)
    plan = [(m, meth, s) for s in seeds for m in names for meth in METHODS]
    if args.phase in ("train", "all"):
        done = {(r["model"], r["method"], r["seed"]) for r in train_rows}
        for key in (bar := tqdm([k for k in plan if k not in done], unit="run")):
            bar.set_description(" ".join(map(str, key)))
            row = train_one(*key, specs[key[0]], models_dir, interval=2 if args.quick else INTERVAL)
            with open(train_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            train_rows.append(row)
    if args.phase in ("speed", "all"):
        trained = {(r["model"], r["method"], r["seed"]) for r in train_rows}
        done = {(r["model"], r["seed"]) for r in speed_rows}
        ready = [(m, s) for s in seeds for m in names
                 if (m, s) not in done and all((m, meth, s) in trained for meth in METHODS)]
        for m, s in tqdm(ready, unit="model", desc="speed"):
            row = speed_one(m, s, specs[m], models_dir, 2 if args.quick else args.rounds)
            with open(speed_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            speed_rows.append(row)
    info = machine_info()
    table = summarize(train_rows, speed_rows)
    write_json(out / f"{stem}.json", {"machine": info, "planned": len(plan), "table": table,
                                      "train_runs": train_rows, "speed_runs": speed_rows})
    # Runs of the plan (--models/--seeds), not every recorded row: a run of
    # one model must not report the whole benchmark complete.
    done_runs = len(set(plan) & {(r["model"], r["method"], r["seed"]) for r in train_rows})
    (out / f"{stem}.md").write_text(render(table, len(plan), done_runs, info, speed_rows))
    return table


if __name__ == "__main__":
    main()
