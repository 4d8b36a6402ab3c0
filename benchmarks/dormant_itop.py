"""Dormant ReLU channels and ITOP rate over training: RigL vs NeurRev (vs static).

NeurRev's claim (Li et al. 2024) is that DST produces dormant neurons and
that Search & Awake revives them. This script measures it on our budget:
every `--every` steps it computes `keras_sparse.diagnostics.dormant_fraction`
(ReLU channels whose output is zero on >= 99% of a *fixed* batch of 512
training images) and records the ITOP rate (fraction of weights ever active,
as logged by the DST callback as `itop_rate`), for RigL and NeurRev with
their library defaults (schedule as the accuracy harness: update interval
`min(100, steps // 20)`), same seed and same 90% ERK masks, plus static
sparse training (no mask updates) as the baseline:

    python -m benchmarks.dormant_itop                         # Model A, 3 epochs on 10k
    python -m benchmarks.dormant_itop --models small_cnn resnet20 --epochs 2
    python -m benchmarks.dormant_itop --report-only

Model B is `keras_sparse.models.cifar_resnet(20, input_shape=(28, 28, 1))`;
its BatchNorm layers run in inference mode in the probe, so very early
readings reflect lagging moving statistics.

Resumable (one JSONL line per (model, method, seed, budget)); writes
benchmarks/results/dormant_itop.{json,md}, dormant_itop_dormant.png and
dormant_itop_itop.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks._common import RESULTS_DIR  # noqa: E402

SPARSITY = 0.9
DISTRIBUTION = "erk"
METHODS = ("static", "rigl", "neurrev")
PROBE_SIZE = harness.PROBE_SIZE
LABELS = {"static": "static (no updates)", "rigl": "RigL", "neurrev": "NeurRev"}


def probe_steps(total_steps: int, every: int) -> list[int]:
    """Steps at which the probe measures: 0, every, 2*every, ..., and the last step."""
    if every < 1 or total_steps < 0:
        raise ValueError(f"Need every >= 1 and total_steps >= 0; received {every}, {total_steps}.")
    steps = list(range(0, total_steps + 1, every))
    if steps[-1] != total_steps:
        steps.append(total_steps)
    return steps


def make_probe(x_probe, every: int, total_steps: int):
    """A callback recording `dormant_fraction` and the logged `itop_rate` at `probe_steps`."""
    import keras

    from keras_sparse import diagnostics

    when = set(probe_steps(total_steps, every))

    class DormantProbe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.points: list[dict[str, Any]] = []

        def _record(self, step, logs):
            logs = logs or {}
            self.points.append({
                "step": int(step),
                "dormant": diagnostics.dormant_fraction(self.model, x_probe),
                "itop_rate": float(logs["itop_rate"]) if "itop_rate" in logs else None,
                "loss": float(logs["loss"]) if "loss" in logs else None,
            })

        def on_train_begin(self, logs=None):
            self._record(0, {})

        def on_train_batch_end(self, batch, logs=None):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if step in when:
                self._record(step, logs)

    return DormantProbe()


def build(model_name: str):
    from benchmarks.accuracy import build_model

    return build_model(model_name, 0)


def run_one(model_name: str, method: str, seed: int, data, budget, x_probe, every: int,
            interval: int | None = None) -> dict:
    import keras

    import keras_sparse as ks
    from benchmarks.accuracy import update_interval
    from keras_sparse import algorithms
    from keras_sparse.callbacks import DynamicSparseTraining, SparsityLogger

    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    sparse = ks.sparsify(build(model_name), SPARSITY, distribution=DISTRIBUTION, seed=seed)
    total = budget.steps(len(data.x_train))
    ui = interval or update_interval(budget, len(data.x_train))
    if method == "static":
        cb = SparsityLogger()
    else:
        cb = DynamicSparseTraining(algorithms.get(
            {"class_name": method, "config": {"update_interval": ui, "seed": seed}}))
    probe = make_probe(x_probe, every, total)
    start = time.perf_counter()
    harness.train(sparse, data, budget, seed, callbacks=[cb, probe])
    seconds = time.perf_counter() - start
    plain = harness.plain_model(sparse)
    alg = getattr(cb, "algorithm", None)
    return {
        "model": model_name, "method": method, "seed": seed, "update_interval": ui,
        "algorithm": alg.get_config() if alg is not None else None,
        "relax_ratio": alg.default_ratio() if method == "neurrev" else None,
        "budget": budget.to_dict(), "budget_id": budget.fingerprint, "total_steps": total,
        "test_accuracy": harness.test_accuracy(plain, data),
        "final_sparsity": harness.kernel_sparsity(plain)["final_sparsity"],
        "final_itop_rate": float(alg.itop_rate()) if alg is not None else None,
        "points": probe.points, "seconds": seconds, "status": "ok",
    }


def summarize(records: Sequence[dict]) -> list[dict]:
    rows = []
    for r in records:
        d = [p["dormant"]["all"] for p in r["points"]]
        rows.append({
            "model": r["model"], "method": r["method"], "seed": r["seed"],
            "budget_id": r["budget_id"], "update_interval": r["update_interval"], "test_accuracy": r["test_accuracy"],
            "final_sparsity": r["final_sparsity"], "dormant_init": d[0],
            "dormant_peak": max(d), "dormant_peak_step": r["points"][int(np.argmax(d))]["step"],
            "dormant_mean": float(np.mean(d[1:] if len(d) > 1 else d)), "dormant_final": d[-1],
            "dormant_final_per_layer": {k: v for k, v in r["points"][-1]["dormant"].items() if k != "all"},
            "final_itop_rate": r["final_itop_rate"],
        })
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["model"], r["method"] != "static", r["update_interval"],
                             order.get(r["method"], 9), r["seed"]))
    return rows


def render(rows, args, budget, n_train, machine) -> str:
    from benchmarks._common import machine_markdown, markdown_table

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    table = [[r["model"], LABELS[r["method"]], r["seed"],
              "-" if r["method"] == "static" else r["update_interval"],
              pct(r["test_accuracy"]), f"{r['final_sparsity']:.4f}", pct(r["dormant_init"]),
              f"{pct(r['dormant_peak'])} (step {r['dormant_peak_step']})", pct(r["dormant_mean"]),
              pct(r["dormant_final"]),
              ", ".join(f"{k} {pct(v)}" for k, v in r["dormant_final_per_layer"].items()),
              pct(r["final_itop_rate"])] for r in rows]
    headers = ["model", "method", "seed", "interval", "test acc %", "final sparsity",
               "dormant % at init", "dormant % peak", "dormant % mean", "dormant % final",
               "final per ReLU layer %", "final ITOP %"]
    notes = [
        f"{SPARSITY:.0%} ERK, {budget.epochs} epoch(s) on {n_train} Fashion-MNIST training images, "
        f"batch {budget.batch_size}, {harness.recipe_text(budget)}. Library defaults for RigL and NeurRev except the "
        "update interval (column `interval`: the accuracy harness's min(100, steps // 20) unless "
        "`--interval` was given); NeurRev's default p is r = 0.1 of each layer's non-zero "
        "budget at every interval.",
        f"Dormant: ReLU channels whose output is exactly 0 on >= 99% of the positions of a fixed "
        f"batch of {PROBE_SIZE} training images (`keras_sparse.diagnostics.dormant_fraction`), "
        f"measured every {args.every} steps; 'mean' is over the measurements after step 0.",
        "ITOP: fraction of masked weights ever active (Liu et al. 2021), from the callback's "
        "`itop_rate` log.",
    ]
    return "\n\n".join([
        "## Dormant neurons and ITOP rate over training", machine_markdown(machine),
        "\n".join(f"- {n}" for n in notes), markdown_table(headers, table),
        "Plots: `dormant_itop_dormant.png` (dormant fraction vs step), "
        "`dormant_itop_itop.png` (ITOP rate vs step)."]) + "\n"


def plot(records, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One panel per (model, budget): "small_cnn, 3 ep".
    def panel(r):
        return f"{r['model']}, {r['budget']['epochs']} ep"

    models = sorted({panel(r) for r in records})
    colors = {"static": "gray", "rigl": "tab:blue", "neurrev": "tab:red"}
    styles = dict(zip(sorted({r["update_interval"] for r in records}), ["-", "--", ":", "-."]))

    def label(r):
        interval = "" if r["method"] == "static" else f", interval {r['update_interval']}"
        return f"{LABELS[r['method']]}{interval}, s{r['seed']}"

    written = []
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models):
        for r in records:
            if panel(r) != model:
                continue
            ax.plot([p["step"] for p in r["points"]], [100 * p["dormant"]["all"] for p in r["points"]],
                    color=colors[r["method"]], alpha=1.0 if r["seed"] == 0 else 0.4,
                    ls=styles[r["update_interval"]],
                    label=f"{label(r)} ({100 * r['test_accuracy']:.1f}%)")
        ax.set_title(f"{model}: dormant ReLU channels, 90% ERK")
        ax.set_xlabel("training step")
        ax.set_ylabel("% dormant (fixed batch of 512)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "dormant_itop_dormant.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models):
        for r in records:
            if panel(r) != model or r["method"] == "static":
                continue
            pts = [p for p in r["points"] if p["itop_rate"] is not None]
            ax.plot([0] + [p["step"] for p in pts], [100 * (1 - SPARSITY)] + [100 * p["itop_rate"] for p in pts],
                    color=colors[r["method"]], alpha=1.0 if r["seed"] == 0 else 0.4,
                    ls=styles[r["update_interval"]], label=label(r))
        ax.set_title(f"{model}: ITOP rate (weights ever active)")
        ax.set_xlabel("training step")
        ax.set_ylabel("% of masked weights")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "dormant_itop_itop.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["small_cnn"], choices=["small_cnn", "resnet20"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--every", type=int, default=10, help="probe every N steps (default 10)")
    p.add_argument("--interval", type=int, default=None,
                   help="DST update interval (default: the accuracy harness's min(100, steps // 20))")
    p.add_argument("--results", type=Path, default=RESULTS_DIR / "dormant_itop.jsonl")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from benchmarks._common import machine_info, write_json
    from benchmarks.accuracy import load_data

    args = parse_args(argv)
    budget = harness.Budget(epochs=args.epochs, train_size=args.train_size)
    machine = machine_info()
    data = load_data(args.train_size)
    x_probe = harness.probe_batch(data)
    if not args.report_only:
        from benchmarks.accuracy import update_interval

        ui = args.interval or update_interval(budget, len(data.x_train))
        done = {(r["model"], r["method"], r["seed"], r["budget_id"], r["update_interval"])
                for r in harness.read_runs(args.results) if r.get("status") == "ok"}
        todo = [(m, meth, s) for m in args.models for s in args.seeds for meth in args.methods
                if (m, meth, s, budget.fingerprint, ui) not in done]
        harness.run_pending(
            todo, lambda run: run_one(*run, data, budget, x_probe, args.every, ui), args.results,
            describe=lambda run: f"{run[0]} {run[1]} s{run[2]}", progress=not args.no_progress)
    # Every budget in the file is reported (Model B may run on a shorter one).
    records = [r for r in harness.read_runs(args.results) if r.get("status") == "ok"]
    records = [r for r in records if r["model"] in args.models or args.report_only]
    rows = summarize(records)
    out_dir = Path(args.results).parent
    plots = plot(records, out_dir)
    # One table per (model, budget).
    budgets = {(r["model"], r["budget_id"]): r["budget"] for r in records}
    md = "\n\n".join(
        render([row for row in rows if (row["model"], row["budget_id"]) == key], args,
               harness.Budget(**budgets[key]), budgets[key]["train_size"] or 60000, machine)
        for key in sorted(budgets, key=lambda k: (k[0], -budgets[k]["epochs"])))
    stem = Path(args.results).with_suffix("")
    Path(f"{stem}.md").write_text(md, encoding="utf-8")
    write_json(Path(f"{stem}.json"), {"machine": machine, "sparsity": SPARSITY,
                                      "distribution": DISTRIBUTION, "rows": rows,
                                      "budgets": {f"{m}/{b}": v for (m, b), v in budgets.items()},
                                      "plots": [p.name for p in plots],
                                      "trajectories": [{k: r[k] for k in ("model", "method", "seed", "points")}
                                                       for r in records]})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
