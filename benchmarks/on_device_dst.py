"""On-device dynamic sparse training in LiteRT, and NeurRev's edge-training claim.

NeurRev (Li et al., ICLR 2024, "Edge Training") claims that awakening
dormant neurons lets DST update its sparse structure less often, which makes
sparse training on a phone 1.8-2.1x better accelerated against dense
training than the other methods. This benchmark measures, on this CPU:

- for every (method, sparsity, update interval, seed): the small CNN
  (docs/benchmark_protocol.md, Model A) sparsified with ERK, exported with
  `tflite_export.export_trainable(algorithm=...)`, and trained through the
  file's `train` signature in LiteRT (one thread) over the Fashion-MNIST
  training images: test accuracy (the file's `infer` signature), wall time
  per epoch, the median time of a step that updates the masks against a
  plain step, and the total update overhead (the sum over update steps of
  their excess over the median plain step);
- the same run in Keras (`keras_sparse.callbacks.DynamicSparseTraining`,
  same algorithm, optimizer, batch size, epochs and seed) as the accuracy
  reference;
- dense on-device training of the same net, the speed baseline.

Rows: dense, static (masks frozen), SET, RigL and NeurRev. The claim is
checked as the issue states it: for each method, the update interval with
its best mean accuracy; then its total on-device time against dense's, and
against the other methods at their own best interval.

Every run is one JSON line in `on_device_dst.jsonl` (resumable: rerun to
continue; `--quick` writes `on_device_dst_quick.*`). Timings are only
meaningful on an otherwise idle machine; each row records the load and
the machine's fingerprint. The project's machines change between sessions
(one ran the same dense step 1.8x as fast as another), so a run's time is only
compared with dense runs on the same machine: a session whose machine has
no dense run yet first runs one (a `reference` row, used for timing only).

Usage: `python -m benchmarks.on_device_dst [--quick] [--seeds 0 1 2]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import keras_sparse  # noqa: E402
import tflite_export  # noqa: E402
from benchmarks._common import (  # noqa: E402
    RESULTS_DIR, LoadProbe, load_note, machine_fingerprint, machine_info,
    machine_markdown, machine_of, markdown_table, write_json)
from tflite_export.runner import make_interpreter  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
DST_METHODS = ("set", "rigl", "neurrev")
METHODS = ("dense", "static") + DST_METHODS
LEARNING_RATE = 1e-3  # Adam, constant: the on-device optimizers take a constant rate
STOP_FRACTION = 0.75  # RigL's default: no mask updates in the last quarter


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every run trains on."""

    train_size: int
    test_size: int
    epochs: int
    batch_size: int
    input_shape: tuple[int, int, int]

    @property
    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


FULL = Budget(train_size=60000, test_size=10000, epochs=3, batch_size=32,
              input_shape=(28, 28, 1))
QUICK = Budget(train_size=256, test_size=64, epochs=1, batch_size=8,
               input_shape=(12, 12, 1))


@dataclasses.dataclass(frozen=True)
class RunKey:
    """One run; `interval` is 0 for dense and static (no mask update)."""

    method: str
    sparsity: float
    interval: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan(sparsities, intervals, seeds) -> list[RunKey]:
    """Every run, seed-major so a partial table has whole seeds first."""
    keys = []
    for seed in seeds:
        keys.append(RunKey("dense", 0.0, 0, seed))
        for s in sparsities:
            keys.append(RunKey("static", s, 0, seed))
            keys += [RunKey(m, s, dt, seed) for m in DST_METHODS for dt in intervals]
    return keys


def load_data(budget: Budget, quick: bool):
    """(x_train, y_train, x_test, y_test) as float32 in [0, 1] and int32."""
    if quick:
        rng = np.random.default_rng(0)
        shape = budget.input_shape
        xs = rng.random((budget.train_size + budget.test_size, *shape)).astype(np.float32)
        ys = (xs.reshape(len(xs), -1).mean(axis=1) * 40).astype(np.int32) % 10
    else:
        # Already float32 in [0, 1].
        (xt, yt), (xv, yv) = keras_sparse.datasets.load_fashion_mnist()
        xs = np.concatenate([xt[:budget.train_size], xv[:budget.test_size]])
        xs = xs.astype(np.float32).reshape(len(xs), *budget.input_shape)
        ys = np.concatenate([yt[:budget.train_size], yv[:budget.test_size]]).astype(np.int32)
    n = budget.train_size
    return xs[:n], ys[:n], xs[n:], ys[n:]


def algorithm_config(key: RunKey, budget: Budget) -> dict[str, Any] | None:
    """The algorithm both sides run (None: masks stay as exported)."""
    if key.method not in DST_METHODS:
        return None
    return {"class_name": key.method, "config": {
        "update_interval": key.interval, "start_step": 0,
        "stop_step": int(STOP_FRACTION * budget.total_steps), "seed": key.seed}}


def update_steps(key: RunKey, budget: Budget) -> set[int]:
    """The optimizer steps t (1-based) after which the file updates masks."""
    cfg = algorithm_config(key, budget)
    if cfg is None:
        return set()
    stop = cfg["config"]["stop_step"]
    return {t for t in range(key.interval, stop + 1, key.interval)}


def build(key: RunKey, budget: Budget):
    """The model of one run, fresh from the seed (dense, or ERK-sparse)."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(key.seed)
    model = keras_sparse.models.small_cnn(budget.input_shape)
    if key.method == "dense":
        return model
    return keras_sparse.sparsify(model, key.sparsity, distribution="erk", seed=key.seed)


def keras_accuracy(key: RunKey, budget: Budget, data) -> float:
    """Test accuracy of the same run trained with `model.fit`."""
    x, y, xv, yv = data
    model = build(key, budget)
    model.compile(keras.optimizers.Adam(LEARNING_RATE), LOSS, metrics=["accuracy"])
    cfg = algorithm_config(key, budget)
    callbacks = [] if cfg is None else [keras_sparse.callbacks.DynamicSparseTraining(
        keras_sparse.algorithms.get(cfg), total_steps=budget.total_steps)]
    n = budget.steps_per_epoch * budget.batch_size
    model.fit(x[:n], y[:n], batch_size=budget.batch_size, epochs=budget.epochs,
              callbacks=callbacks, verbose=0, shuffle=True)
    return float(model.evaluate(xv, yv, batch_size=500, verbose=0)[1])


def on_device_run(key: RunKey, budget: Budget, data, tmp: str) -> dict[str, Any]:
    """Exports one run, trains it in LiteRT step by step, times every step."""
    x, y, xv, yv = data
    model = build(key, budget)
    cfg = algorithm_config(key, budget)
    path = os.path.join(tmp, f"{key.method}.tflite")
    tflite_export.export_trainable(
        model, path, keras.optimizers.Adam(LEARNING_RATE), LOSS,
        batch_size=budget.batch_size, compare_dense=False,
        weight_storage="dense",
        algorithm=None if cfg is None else keras_sparse.algorithms.get(cfg),
        total_steps=None if cfg is None else budget.total_steps)
    interp = make_interpreter(path)
    train = interp.get_signature_runner("train")
    updates = update_steps(key, budget)
    rng = np.random.default_rng(key.seed)
    bsz, t, step_s, epoch_s, last = budget.batch_size, 0, [], [], {}
    for _ in range(budget.epochs):
        order = rng.permutation(len(x))
        start = time.perf_counter()
        for s in range(budget.steps_per_epoch):
            idx = order[s * bsz:(s + 1) * bsz]
            xb, yb = x[idx], y[idx]
            t0 = time.perf_counter()
            last = train(x=xb, y=yb)
            step_s.append(time.perf_counter() - t0)
            t += 1
        epoch_s.append(time.perf_counter() - start)
    step_s = np.asarray(step_s)
    is_update = np.isin(np.arange(1, t + 1), sorted(updates))
    plain = float(np.median(step_s[~is_update]))
    update = float(np.median(step_s[is_update])) if is_update.any() else None
    infer = interp.get_signature_runner("infer")
    preds = np.concatenate([infer(x=xv[i:i + 1])["output"] for i in range(len(xv))])
    return {
        "test_accuracy": float(np.mean(preds.argmax(axis=1) == yv)),
        "epoch_s": [float(v) for v in epoch_s],
        "total_s": float(sum(epoch_s)),
        "plain_step_ms": plain * 1e3,
        "update_step_ms": None if update is None else update * 1e3,
        "updates": int(is_update.sum()),
        "update_overhead_s": float(np.sum(step_s[is_update] - plain)),
        "final_sparsity": float(last["sparsity"]) if "sparsity" in last else None,
        "regrown_last_update": int(last["regrown"]) if "regrown" in last else None,
        "file_bytes": os.path.getsize(path),
    }


def run_one(key: RunKey, budget: Budget, data, reference: bool = False) -> dict[str, Any]:
    """One run's row; a `reference` dense run is timed only (no Keras twin)."""
    probe = LoadProbe()
    with tempfile.TemporaryDirectory() as tmp:
        row = on_device_run(key, budget, data, tmp)
    row["load"] = probe.record()
    row["machine"] = machine_fingerprint()
    if reference:
        row["reference"] = True
    else:
        row["keras_test_accuracy"] = keras_accuracy(key, budget, data)
    return {**key.as_dict(), **row}


def needs_dense_reference(rows: list[dict[str, Any]], pending: list[RunKey], machine: str) -> bool:
    """Whether this machine must time a dense run before `pending`.

    True when runs are pending, none of `rows` is a dense run on `machine`,
    and the next pending run is not itself dense.
    """
    if not pending or pending[0].method == "dense":
        return False
    return not any(r["method"] == "dense" and r.get("machine") == machine for r in rows)


def with_dense_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row plus its times against dense runs on the same machine.

    Adds `dense_s_over_s` (mean dense total time on the row's machine over
    the row's total: above 1 is faster than dense) and `dense_step_over_step`
    (the same for the median plain step); None where that machine has no
    dense run. Rows without a recorded machine count as one unknown machine.
    """
    dense: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        if r["method"] == "dense":
            dense.setdefault(r.get("machine"), []).append(r)
    out = []
    for r in rows:
        ds = dense.get(r.get("machine"))
        out.append({**r,
                    "dense_s_over_s": float(np.mean([d["total_s"] for d in ds])) / r["total_s"]
                    if ds else None,
                    "dense_step_over_step": float(np.mean([d["plain_step_ms"] for d in ds]))
                    / r["plain_step_ms"] if ds else None})
    return out


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    return rows


def _key_of(row: dict[str, Any]) -> RunKey:
    return RunKey(row["method"], float(row["sparsity"]), int(row["interval"]), int(row["seed"]))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds of each (method, sparsity, interval).

    Accuracies average the planned runs; times are machine-independent
    ratios (`with_dense_ratios`) averaged over the runs that have a dense
    run on their machine (`n_timed`). Absolute times stay in the runs.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in with_dense_ratios(rows):
        if not r.get("reference"):
            groups.setdefault((r["method"], r["sparsity"], r["interval"]), []).append(r)
    out = []
    for (method, sparsity, interval), rs in sorted(groups.items(), key=lambda kv: (
            METHODS.index(kv[0][0]), kv[0][1], kv[0][2])):
        def mean(k, rs=rs):
            vals = [r[k] for r in rs if r.get(k) is not None]
            return float(np.mean(vals)) if vals else None
        ratio = [r for r in rs if r.get("update_step_ms") is not None]
        out.append({"method": method, "sparsity": sparsity, "interval": interval, "n": len(rs),
                    "test_accuracy": mean("test_accuracy"),
                    "keras_test_accuracy": mean("keras_test_accuracy"),
                    "n_timed": sum(r["dense_s_over_s"] is not None for r in rs),
                    "dense_s_over_s": mean("dense_s_over_s"),
                    "dense_step_over_step": mean("dense_step_over_step"),
                    "update_over_plain_step": float(np.mean(
                        [r["update_step_ms"] / r["plain_step_ms"] for r in ratio]))
                    if ratio else None,
                    "updates": mean("updates"),
                    "epoch_s_by_machine": {
                        m: float(np.mean([np.mean(r["epoch_s"]) for r in rs if r.get("machine") == m]))
                        for m in {r.get("machine") for r in rs}},
                    "update_overhead_pct": float(np.mean(
                        [100.0 * r["update_overhead_s"] / r["total_s"] for r in rs]))})
    return out


def claim(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (sparsity, DST method): the interval with the best mean on-device
    accuracy, and its speed against dense on-device training (mean over the
    seeds of dense time on the same machine over the method's time).

    `neurrev_advantage` is NeurRev's speed-up over this method's, both at
    their best intervals: NeurRev claims 1.8-2.1 against the other methods.
    """
    out = []
    for s in sorted({r["sparsity"] for r in table if r["method"] in DST_METHODS}):
        for m in DST_METHODS:
            rows = [r for r in table if r["method"] == m and r["sparsity"] == s]
            if not rows:
                continue
            best = max(rows, key=lambda r: r["test_accuracy"])
            out.append({"sparsity": s, "method": m, "best_interval": best["interval"],
                        "n": best["n"], "test_accuracy": best["test_accuracy"],
                        "n_timed": best["n_timed"], "speedup_vs_dense": best["dense_s_over_s"]})
    for row in out:
        neurrev = next((r for r in out if r["method"] == "neurrev"
                        and r["sparsity"] == row["sparsity"]), None)
        mine, theirs = row["speedup_vs_dense"], neurrev and neurrev["speedup_vs_dense"]
        row["neurrev_advantage"] = theirs / mine if theirs and mine else None
    return out


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def machines_note(rows: list[dict[str, Any]]) -> str:
    """Which machines the runs were timed on, with their counts."""
    counts = Counter(machine_of(r) for r in rows)
    listed = "; ".join(f"`{m}`: {n} run(s)" for m, n in counts.items())
    return (f"Timed on {len(counts)} machine(s): {listed}. A run's times are compared only with "
            "dense runs on its own machine.")


def main_machine(rows: list[dict[str, Any]]) -> Any:
    """The machine most runs were timed on (its absolute times are shown)."""
    counts = Counter(r.get("machine") for r in rows).most_common(1)
    return counts[0][0] if counts else None


def render(rows: list[dict[str, Any]], planned: int, budget: Budget, info: dict[str, Any],
           table: list[dict[str, Any]] | None = None) -> str:
    """The markdown report; `table` is `aggregate(rows)` when the caller already has it."""
    table = aggregate(rows) if table is None else table
    best = claim(table)
    main = main_machine(rows)
    done = sum(not r.get("reference") for r in rows)
    status = "complete" if done >= planned else f"PARTIAL: {done} of {planned} runs"
    lines = [
        "## On-device dynamic sparse training (LiteRT) and NeurRev's edge-training claim",
        "",
        f"Status: {status}. {machine_markdown(info)}",
        "",
        f"Budget: small CNN, Fashion-MNIST, {budget.train_size} training images, "
        f"{budget.epochs} epochs, batch {budget.batch_size}, Adam {LEARNING_RATE} (constant), "
        f"ERK; mask updates every `interval` steps until {STOP_FRACTION:.0%} of training; "
        f"test accuracy on {budget.test_size} images. LiteRT with one thread. "
        "Times are means over seeds of ratios: `dense s / s` is the total training time of "
        "dense on the run's machine over the run's (above 1: faster than dense), "
        "`dense step / step` the same for the median plain step, `update / plain` the median "
        "mask-update step over the median plain step, and `overhead %` the update steps' "
        "excess over plain steps as a share of the training time. `s/epoch` is absolute: the "
        f"mean over the runs on `{main}`, the machine of most runs (all absolute times are in "
        "the JSON).",
        "",
        machines_note(rows),
        "",
        markdown_table(
            ["method", "sparsity", "interval", "n", "LiteRT acc", "Keras acc", "s/epoch",
             "dense s / s", "dense step / step", "update / plain", "updates", "overhead %"],
            [[r["method"], r["sparsity"], r["interval"] or "-", r["n"],
              _f(r["test_accuracy"], "{:.4f}"), _f(r["keras_test_accuracy"], "{:.4f}"),
              _f(r["epoch_s_by_machine"].get(main), "{:.1f}"),
              _f(r["dense_s_over_s"], "{:.2f}x"), _f(r["dense_step_over_step"], "{:.2f}x"),
              _f(r["update_over_plain_step"], "{:.2f}x"), _f(r["updates"], "{:.0f}"),
              _f(r["update_overhead_pct"])] for r in table]),
        "",
        "Each DST method at the interval with its best mean accuracy, total on-device "
        "training time against dense on-device training (n timed: runs with a dense run on "
        "their machine), and NeurRev's speed-up over the method's (NeurRev claims 1.8-2.1x "
        "over the other methods):",
        "",
        markdown_table(["sparsity", "method", "best interval", "n", "LiteRT acc", "n timed",
                        "dense s / method s", "NeurRev's / method's"],
                       [[b["sparsity"], b["method"], b["best_interval"], b["n"],
                         _f(b["test_accuracy"], "{:.4f}"), b["n_timed"],
                         _f(b["speedup_vs_dense"], "{:.2f}x"),
                         _f(b["neurrev_advantage"], "{:.2f}x")] for b in best]),
        "",
    ]
    notes = [load_note(r.get("load"), info.get("cpu_count")) for r in rows if r.get("load")]
    loaded = sum(n.startswith("**The machine was loaded") for n in notes)
    if loaded:
        lines.append(f"**{loaded} of {len(rows)} runs were timed on a machine loaded by other work**: "
                     "their times are inflated and their ratios noisier (each run's load is in the JSON).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95])
    p.add_argument("--intervals", type=int, nargs="+", default=[100, 400])
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    p.add_argument("--report-only", action="store_true",
                   help="write the JSON and Markdown from the runs already done; train nothing")
    args = p.parse_args(argv)
    budget = QUICK if args.quick else FULL
    intervals = [4] if args.quick else args.intervals
    seeds = args.seeds[:1] if args.quick else args.seeds
    stem = "on_device_dst_quick" if args.quick else "on_device_dst"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / f"{stem}.jsonl"
    keys = plan(args.sparsities, intervals, seeds)
    rows = read_rows(jsonl)
    done = {_key_of(r) for r in rows if not r.get("reference")}
    info = machine_info()
    pending = [] if args.report_only else [k for k in keys if k not in done]
    data = load_data(budget, args.quick) if pending else None
    todo = [(k, False) for k in pending]
    if needs_dense_reference(rows, pending, machine_fingerprint()):
        todo.insert(0, (RunKey("dense", 0.0, 0, pending[0].seed), True))
    for key, reference in (bar := tqdm(todo, unit="run")):
        bar.set_description(f"{key.method} {key.sparsity} dt={key.interval} s{key.seed}"
                            + (" (reference)" if reference else ""))
        row = run_one(key, budget, data, reference=reference)
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        bar.set_postfix(acc=f"{row['test_accuracy']:.4f}")
    rows = [r for r in rows if _key_of(r) in set(keys) or r.get("reference")]
    table = aggregate(rows)
    write_json(out / f"{stem}.json", {"budget": dataclasses.asdict(budget), "machine": info,
                                      "planned": len(keys), "table": table,
                                      "claim": claim(table), "runs": rows})
    (out / f"{stem}.md").write_text(render(rows, len(keys), budget, info, table))
    return rows


if __name__ == "__main__":
    main()
