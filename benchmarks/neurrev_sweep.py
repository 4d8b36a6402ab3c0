"""NeurRev relaxation sweep: p (relative to the non-zero budget) x update interval.

NeurRev (Li et al. 2024, Algorithm 1) relaxes every update to sparsity
`s - p` and Search & Awake (Algorithm 2) then prunes `p * size` *negative*
active weights, in ascending order of their change since the last update.
This script measures, on the accuracy table's small budget, how the
relaxation `r = p / (1 - s)` (the fraction of each layer's non-zero budget
re-pruned per update) and the update interval interact, with RigL (same
schedule, no Search & Awake) as the reference:

    python -m benchmarks.neurrev_sweep                   # seed 0 grid (~5 min on 2 cores)
    python -m benchmarks.neurrev_sweep --seeds 0 1 2     # more seeds (resumes)
    python -m benchmarks.neurrev_sweep --report-only     # re-render table and plots

Model A (`keras_sparse.models.small_cnn`), Fashion-MNIST, 10k-image training
subset, 3 epochs, batch 128, SGD momentum 0.9, lr 0.1 cosine, weight decay
5e-4 (`benchmarks.harness.Budget`), 90% ERK. Every update it records the
fraction of active weights that are negative per layer, the number of
negative weights Search & Awake pruned (`awakened`) and how many it had to
prune by magnitude instead (no negative weight left). After training: test
accuracy, measured final sparsity, dormant-channel fraction
(`keras_sparse.diagnostics.dormant_fraction`) on a fixed batch of 512
training images.

An ablation row family, `neurrev_signfree`, replaces Search & Awake's
"negative weights in ascending delta order" with "any active weights in
ascending delta order" at the same p: it separates the effect of removing
*negative* weights from the effect of the extra churn.

Resumable: each finished run is one line of benchmarks/results/
neurrev_sweep.jsonl; reruns skip finished (method, r, interval, seed) keys
with the same budget. Writes neurrev_sweep.{json,md} and the plots
neurrev_sweep.png, neurrev_sweep_negatives.png (named after --results).
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
# keras warns when a probe model is called with a bare array instead of {"image": x}.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks._common import RESULTS_DIR  # noqa: E402

SPARSITY = 0.9
DISTRIBUTION = "erk"
RATIOS = (0.01, 0.03, 0.1, 0.3)
INTERVALS = (11, 50)
PROBE_SIZE = harness.PROBE_SIZE


# ------------------------------------------------------------- helpers


def negative_fraction(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[float]:
    """Per weight: the share of negative values among active (mask > 0) non-zero entries.

    Zeros are left out: just-grown entries start at exactly 0 and would
    otherwise read as "not negative". A weight with no such entry gives NaN.
    """
    out = []
    for w, m in zip(weights, masks):
        w = np.asarray(w)
        live = (np.asarray(m) > 0) & (w != 0)
        n = int(live.sum())
        out.append(float((w[live] < 0).sum()) / n if n else float("nan"))
    return out


def cumulative_churn(ratio: float, n_updates: int) -> float:
    """Non-zero budgets re-pruned by Search & Awake over training: `r * updates`."""
    return float(ratio) * int(n_updates)


def neurrev_class(ratio: float, sign_free: bool = False):
    """A NeurRev subclass whose default `p` is `min(ratio * (1 - s), s)` per weight.

    With `sign_free=True` Search & Awake prunes active entries of either sign
    (ascending delta): the ablation. Not registered; benchmark-only.
    """
    from keras_sparse import masks as mask_math
    from keras_sparse.algorithms import LayerResult, NeurRev

    def finish(self, ctx, index, weight, mask, grown):
        n_prune = int(mask.sum()) - int(np.count_nonzero(ctx.masks[index]))
        # Any sign: hand search_and_awake -|w| (every non-zero entry is a
        # candidate, same delta order); zeros (just grown) stay out, as in S&A.
        new_mask, pruned, _ = mask_math.search_and_awake(
            mask, np.where(weight != 0, -np.abs(weight), 0.0), ctx.scratch["delta"][index], n_prune,
            self.structure)
        negative = float((pruned * (weight < 0)).sum())
        weight = weight * new_mask
        return LayerResult(weight, new_mask, stats={"awakened": negative, "sign_free": float(pruned.sum())},
                           state={"reference": weight.copy()})

    attrs: dict[str, Any] = {"relax_ratio": float(ratio)}
    if sign_free:
        attrs["finish"] = finish
    return type(f"NeurRev_r{ratio:g}{'_signfree' if sign_free else ''}", (NeurRev,), attrs)


def make_probe(dst_callback, x_probe):
    """A callback recording, after every mask update, per-layer negative fraction and S&A counts."""
    import keras

    from keras_sparse import diagnostics

    class UpdateProbe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.updates: list[dict[str, Any]] = []
            self._seen = None
            self._loss = None

        def _record(self, step):
            alg = dst_callback.algorithm
            targets = dst_callback._targets
            ws = [keras.ops.convert_to_numpy(t.weight) for t in targets]
            ms = [keras.ops.convert_to_numpy(t.mask) for t in targets]
            relax = list(getattr(alg, "_relax", [0] * len(targets)))
            stats = alg.stats
            awakened = [float(stats.get(t.key, {}).get("awakened", 0.0)) for t in targets]
            if any("sign_free" in v for v in stats.values()):  # ablation: no fallback
                awakened = [float(stats.get(t.key, {}).get("sign_free", 0.0)) for t in targets]
            dormant = diagnostics.dormant_fraction(self.model, x_probe)
            self.updates.append({
                "loss": self._loss,
                "dormant": dormant,
                "step": int(step),
                "negative_fraction": dict(zip([t.key for t in targets], negative_fraction(ws, ms))),
                "awakened": float(sum(awakened)),
                "searched": float(sum(relax)),
                "fallback": float(sum(max(0.0, r - a) for r, a in zip(relax, awakened))),
                "itop_rate": float(alg.itop_rate()),
            })

        def on_train_begin(self, logs=None):
            self._seen = None
            self._record(0)
            self.updates[-1]["initial"] = True

        def on_train_batch_end(self, batch, logs=None):
            self._loss = float((logs or {}).get("loss", np.nan))
            stats = dst_callback.algorithm.stats
            if stats and stats is not self._seen:  # a new update ran (update() rebinds stats)
                self._seen = stats
                self._record(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    return UpdateProbe()


# ---------------------------------------------------------------- runs


def run_key(rec: dict[str, Any]) -> tuple:
    return (rec["method"], round(float(rec.get("ratio") or 0.0), 6), int(rec["interval"]),
            int(rec["seed"]), rec["budget_id"])


def run_one(method: str, ratio: float | None, interval: int, seed: int, data, budget,
            x_probe) -> dict[str, Any]:
    import keras

    import keras_sparse as ks
    from keras_sparse import algorithms, diagnostics
    from keras_sparse.callbacks import DynamicSparseTraining
    from keras_sparse.models import small_cnn

    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    sparse = ks.sparsify(small_cnn(input_shape=(28, 28, 1)), SPARSITY, distribution=DISTRIBUTION,
                         seed=seed)
    if method == "rigl":
        alg = algorithms.RigL(update_interval=interval, seed=seed)
    else:
        alg = neurrev_class(ratio, sign_free=method == "neurrev_signfree")(
            update_interval=interval, seed=seed)
    cb = DynamicSparseTraining(alg)
    probe = make_probe(cb, x_probe)
    start = time.perf_counter()
    harness.train(sparse, data, budget, seed, callbacks=[cb, probe])
    seconds = time.perf_counter() - start
    plain = harness.plain_model(sparse)
    hist = sparse.history.history
    updates = [u for u in probe.updates if not u.get("initial")]
    dormant = diagnostics.dormant_fraction(sparse, x_probe)
    return {
        "method": method, "ratio": ratio, "interval": interval, "seed": seed,
        "budget": budget.to_dict(), "budget_id": budget.fingerprint,
        "test_accuracy": harness.test_accuracy(plain, data),
        "final_sparsity": harness.kernel_sparsity(plain)["final_sparsity"],
        "final_train_loss": float(hist["loss"][-1]),
        "final_train_accuracy": float(hist["accuracy"][-1]),
        "n_updates": len(updates),
        "cumulative_churn": cumulative_churn(ratio or 0.0, len(updates)),
        "mean_awakened": float(np.mean([u["awakened"] for u in updates])) if updates else 0.0,
        "total_fallback": float(sum(u["fallback"] for u in updates)),
        "final_itop_rate": float(alg.itop_rate()),
        "dormant": dormant,
        "final_dormant_fraction": float(dormant["all"]),
        "trajectory": probe.updates,
        "seconds": seconds,
        "status": "ok",
    }


def plan(ratios, intervals, seeds, ablation_ratios) -> list[tuple[str, float | None, int, int]]:
    keys = []
    for seed in seeds:
        for interval in intervals:
            keys.append(("rigl", None, interval, seed))
            keys += [("neurrev", float(r), interval, seed) for r in ratios]
            keys += [("neurrev_signfree", float(r), interval, seed) for r in ablation_ratios]
    return keys


# --------------------------------------------------------------- report

LABELS = {"rigl": "RigL", "neurrev": "NeurRev", "neurrev_signfree": "NeurRev, sign-free S&A (ablation)"}


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list] = {}
    for r in records:
        if r.get("status") == "ok":
            groups.setdefault((r["method"], r.get("ratio"), r["interval"]), []).append(r)
    rows = []
    for (method, ratio, interval), rs in groups.items():
        acc = np.array([r["test_accuracy"] for r in rs])
        rows.append({
            "method": method, "ratio": ratio, "interval": interval, "n": len(rs),
            "seeds": sorted(r["seed"] for r in rs),
            "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "final_sparsity": float(np.mean([r["final_sparsity"] for r in rs])),
            "n_updates": int(np.mean([r["n_updates"] for r in rs])),
            "cumulative_churn": float(np.mean([r["cumulative_churn"] for r in rs])),
            "mean_awakened": float(np.mean([r["mean_awakened"] for r in rs])),
            "total_fallback": float(np.mean([r["total_fallback"] for r in rs])),
            "final_dormant_fraction": float(np.mean([r["final_dormant_fraction"] for r in rs])),
            "final_negative_fraction_fc1": float(np.mean([
                r["trajectory"][-1]["negative_fraction"].get("fc1/kernel", np.nan) for r in rs])),
            "initial_negative_fraction_fc1": float(np.mean([
                r["trajectory"][0]["negative_fraction"].get("fc1/kernel", np.nan) for r in rs])),
            "final_itop_rate": float(np.mean([r["final_itop_rate"] for r in rs])),
        })
    order = {"rigl": 0, "neurrev": 1, "neurrev_signfree": 2}
    rows.sort(key=lambda r: (r["interval"], order[r["method"]], r["ratio"] or 0.0))
    return rows


def library_default_ratio(interval: int) -> float:
    """r of `keras_sparse.algorithms.NeurRev`'s default p at this update interval."""
    from keras_sparse.algorithms import NeurRev

    return NeurRev(update_interval=interval).default_ratio()


def choose_default(rows: Sequence[dict[str, Any]], default_ratio=library_default_ratio) -> dict[str, Any]:
    """Compares every r, and the library default r, with RigL.

    Returns `gaps_to_rigl` (per constant r: the worst gap in mean accuracy
    over the intervals, NeurRev minus RigL), `at_least_rigl` (r whose mean
    is >= RigL's at every interval), `within_noise` (>= RigL's mean minus
    both stds at every interval), `best_worst_case`, and `library_default`
    (per interval: the default's r and, when that r was run, its gap).
    """
    rigl = {r["interval"]: r for r in rows if r["method"] == "rigl"}
    by_ratio: dict[float, dict[int, dict]] = {}
    for r in rows:
        if r["method"] == "neurrev":
            by_ratio.setdefault(round(r["ratio"], 6), {})[r["interval"]] = r
    if not rigl:
        return {}
    gaps, ok, noisy = {}, [], []
    for ratio, per in sorted(by_ratio.items()):
        if not set(rigl) <= set(per):
            continue
        diff = {i: per[i]["accuracy_mean"] - rigl[i]["accuracy_mean"] for i in rigl}
        gaps[ratio] = min(diff.values())
        if gaps[ratio] >= 0:
            ok.append(ratio)
        if all(diff[i] >= -rigl[i]["accuracy_std"] - per[i]["accuracy_std"] for i in rigl):
            noisy.append(ratio)
    default = {}
    for i in sorted(rigl):
        r = round(default_ratio(i), 6)
        row = by_ratio.get(r, {}).get(i)
        default[str(i)] = {"ratio": r, "accuracy_mean": row["accuracy_mean"] if row else None,
                           "rigl_accuracy_mean": rigl[i]["accuracy_mean"],
                           "gap": row["accuracy_mean"] - rigl[i]["accuracy_mean"] if row else None}
    return {"gaps_to_rigl": {f"{k:g}": v for k, v in gaps.items()}, "at_least_rigl": ok,
            "within_noise": noisy,
            "best_worst_case": max(gaps, key=gaps.get) if gaps else None,
            "library_default": default}


def render(rows, choice, budget, n_train, machine, plots=()) -> str:
    from benchmarks._common import machine_markdown, markdown_table

    def pct(x):
        return f"{100 * x:.2f}"

    table = []
    for r in rows:
        acc = pct(r["accuracy_mean"]) + (f" ± {pct(r['accuracy_std'])}" if r["n"] > 1 else "")
        table.append([
            LABELS[r["method"]], "-" if r["ratio"] is None else f"{r['ratio']:g}",
            "-" if r["ratio"] is None else f"{r['ratio'] * (1 - SPARSITY):.4g}",
            r["interval"], acc, r["n"], f"{r['final_sparsity']:.4f}", r["n_updates"],
            f"{r['cumulative_churn']:.2f}" if r["ratio"] is not None else "-",
            f"{r['mean_awakened']:.0f}" if r["method"] != "rigl" else "-",
            f"{r['total_fallback']:.0f}" if r["method"] != "rigl" else "-",
            f"{pct(r['initial_negative_fraction_fc1'])} -> {pct(r['final_negative_fraction_fc1'])}",
            pct(r["final_dormant_fraction"]), pct(r["final_itop_rate"]),
        ])
    headers = ["method", "r = p/(1-s)", "p (fc1-equiv.)", "interval", "test acc %", "n",
               "final sparsity", "updates", "churn r*updates", "mean awakened / update",
               "S&A fallback (total)", "fc1 negative % of non-zero active (start -> end)",
               "dormant % (end)", "ITOP %"]
    notes = [
        f"Model A (small CNN), {SPARSITY:.0%} ERK, {budget.epochs} epochs on {n_train} Fashion-MNIST "
        f"training images, batch {budget.batch_size}, {harness.recipe_text(budget)}; test on the "
        "10k test images.",
        "RigL schedule for both methods: drop fraction 0.3 cosine, updates stop at 75% of training; "
        "NeurRev = RigL + relaxation to s - p and Search & Awake back to s.",
        "r: relaxation as a fraction of each layer's non-zero budget, p = min(r (1 - s_l), s_l) per "
        "layer (ERK leaves conv1 and logits dense: they do not relax). `p` column: r * 0.1.",
        "mean awakened: negative weights pruned by Search & Awake per update (all layers); "
        "S&A fallback: weights it pruned by magnitude because no negative active weight was left.",
        f"dormant %: ReLU channels zero on >= 99% of a fixed batch of {PROBE_SIZE} training images.",
    ]
    md = ["## NeurRev relaxation sweep", machine_markdown(machine),
          "\n".join(f"- {n}" for n in notes), markdown_table(headers, table)]
    if choice:
        md.append(
            "Constant r, worst gap to RigL over the intervals measured at every interval "
            "(NeurRev minus RigL, mean accuracy points): "
            + ", ".join(f"r={k}: {100 * v:+.2f}" for k, v in choice["gaps_to_rigl"].items())
            + f". Mean >= RigL at every interval: {choice['at_least_rigl'] or 'none'}; within "
            f"one std (RigL's + NeurRev's): {choice['within_noise'] or 'none'}.")
        md.append("Library default (`NeurRev(p=None)`: r = 0.1 at every interval): " + "; ".join(
            f"interval {i}: r = {d['ratio']:g}, "
            + (f"{100 * d['accuracy_mean']:.2f}% vs RigL {100 * d['rigl_accuracy_mean']:.2f}% "
               f"({100 * d['gap']:+.2f})" if d["gap"] is not None else "not run")
            for i, d in choice["library_default"].items()) + ".")
    if plots:
        md.append(f"Plots: `{plots[0]}` (accuracy vs r and vs cumulative churn), `{plots[1]}` "
                  "(fc1 negative share of non-zero active weights over updates, seed 0).")
    return "\n\n".join(md) + "\n"


def _clip_collapsed(ax, gap: float = 3.0) -> None:
    """Zooms the y axis on the trained runs; runs far below (collapsed) become labelled
    triangles on the bottom edge."""
    points = []
    for line in ax.get_lines():
        points += list(zip(*line.get_data()))
    for coll in ax.collections:
        points += [tuple(p) for p in coll.get_offsets()]
    ys = [float(y) for _, y in points if np.isfinite(y)]
    ok = [y for y in ys if y >= 30]
    if not ok or len(ok) == len(ys):
        return
    lo, hi = min(ok) - gap, max(ys) + 1.0
    ax.set_ylim(lo, hi)
    seen = set()
    for x, y in points:
        if np.isfinite(y) and y < lo and (x, round(y)) not in seen:
            seen.add((x, round(y)))
            ax.plot([x], [lo + 0.3], marker="v", color="k", ms=6)
            ax.annotate(f"{y:.0f}%", (x, lo + 0.3), textcoords="offset points",
                        xytext=(-6, 6 + 8 * (len(seen) % 2)), fontsize=7, annotation_clip=True)
    ax.text(0.99, 0.99, f"triangles: runs below {lo:.0f}% (collapsed)", transform=ax.transAxes,
            fontsize=7, va="top", ha="right")


def plot(records, rows, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {11: "tab:blue", 50: "tab:orange"}
    for interval in sorted({r["interval"] for r in rows}):
        c = colors.get(interval, None)
        nr = sorted([r for r in rows if r["method"] == "neurrev" and r["interval"] == interval],
                    key=lambda r: r["ratio"])
        if nr:
            ax1.errorbar([r["ratio"] for r in nr], [100 * r["accuracy_mean"] for r in nr],
                         yerr=[100 * r["accuracy_std"] for r in nr], marker="o", color=c,
                         label=f"NeurRev, interval {interval}")
        sf = sorted([r for r in rows if r["method"] == "neurrev_signfree" and r["interval"] == interval],
                    key=lambda r: r["ratio"])
        if sf:
            ax1.plot([r["ratio"] for r in sf], [100 * r["accuracy_mean"] for r in sf], marker="x",
                     ls=":", color=c, label=f"sign-free S&A, interval {interval}")
        for r in rows:
            if r["method"] == "rigl" and r["interval"] == interval:
                ax1.axhline(100 * r["accuracy_mean"], ls="--", color=c, label=f"RigL, interval {interval}")
    ax1.set_xscale("log")
    ax1.set_xlabel("r = p / (1 - s)  (share of the non-zero budget re-pruned per update)")
    ax1.set_ylabel("test accuracy %")
    ax1.set_title(f"Model A, 90% ERK, {records[0]['budget']['epochs']} epochs on "
                  f"{records[0]['budget']['train_size']}")
    ax1.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 0.06))
    for rec in records:
        if rec.get("status") != "ok" or rec["method"] == "rigl":
            continue
        c = colors.get(rec["interval"], "gray")
        ax2.scatter(max(rec["cumulative_churn"], 1e-3), 100 * rec["test_accuracy"], color=c,
                    marker="o" if rec["method"] == "neurrev" else "x")
    for r in rows:
        if r["method"] == "rigl":
            ax2.axhline(100 * r["accuracy_mean"], ls="--", color=colors.get(r["interval"], "gray"))
    _clip_collapsed(ax1)
    _clip_collapsed(ax2)
    ax2.set_xscale("log")
    ax2.set_xlabel("cumulative churn r x updates (o NeurRev, x sign-free ablation)")
    ax2.set_ylabel("test accuracy %")
    ax2.set_title("accuracy vs cumulative Search & Awake churn")
    fig.tight_layout()
    path = stem.parent / f"{stem.name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    intervals = sorted({r["interval"] for r in records})
    fig, axes = plt.subplots(1, len(intervals), figsize=(5.5 * len(intervals), 4.2), sharey=True,
                             squeeze=False)
    axes = axes[0]
    cmap = plt.get_cmap("viridis")
    ratios = sorted({r["ratio"] for r in records if r.get("ratio")})
    for ax, interval in zip(axes, intervals):
        for rec in sorted(records, key=lambda r: (r["method"] != "rigl", r.get("ratio") or 0.0)):
            if rec.get("status") != "ok" or rec["interval"] != interval or rec["seed"] != 0:
                continue
            if rec["method"] == "neurrev_signfree":
                continue
            steps = [u["step"] for u in rec["trajectory"]]
            neg = [100 * u["negative_fraction"].get("fc1/kernel", np.nan) for u in rec["trajectory"]]
            if rec["method"] == "rigl":
                ax.plot(steps, neg, "k--", label="RigL")
            else:
                ax.plot(steps, neg, marker=".", color=cmap(ratios.index(rec["ratio"]) / max(1, len(ratios) - 1)),
                        label=f"NeurRev r={rec['ratio']:g} (acc {100 * rec['test_accuracy']:.1f}%)")
        ax.set_title(f"fc1 negative share, update interval {interval} (seed 0)")
        ax.set_xlabel("training step (at mask updates)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("% of non-zero active fc1 weights that are < 0")
    fig.tight_layout()
    path = stem.parent / f"{stem.name}_negatives.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


# ------------------------------------------------------------------ CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    p.add_argument("--intervals", nargs="+", type=int, default=list(INTERVALS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--ablation-ratios", nargs="*", type=float, default=[0.1, 0.3],
                   help="r values of the sign-free Search & Awake ablation (none: no ablation)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--results", type=Path, default=RESULTS_DIR / "neurrev_sweep.jsonl")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    for r in a.ratios + a.ablation_ratios:
        if not 0 < r < 1:
            p.error(f"ratios must be in (0, 1); received {r}")
    return a


def main(argv=None) -> int:
    from benchmarks._common import machine_info, write_json
    from benchmarks.accuracy import load_data

    args = parse_args(argv)
    budget = harness.Budget(epochs=args.epochs, train_size=args.train_size)
    machine = machine_info()
    data = load_data(args.train_size)
    x_probe = harness.probe_batch(data)
    if not args.report_only:
        done = {run_key(r) for r in harness.read_runs(args.results) if r.get("status") == "ok"}
        todo = [k for k in plan(args.ratios, args.intervals, args.seeds, args.ablation_ratios)
                if (k[0], round(float(k[1] or 0.0), 6), k[2], k[3], budget.fingerprint) not in done]
        harness.run_pending(
            todo, lambda run: run_one(*run, data, budget, x_probe), args.results,
            describe=lambda run: f"{run[0]} r={run[1]} int={run[2]} s{run[3]}",
            progress=not args.no_progress)
    records = [r for r in harness.read_runs(args.results) if r.get("budget_id") == budget.fingerprint]
    rows = aggregate(records)
    choice = choose_default(rows)
    stem = Path(args.results).with_suffix("")
    plots = plot(records, rows, stem)
    md = render(rows, choice, budget, len(data.x_train), machine, [p.name for p in plots])
    Path(f"{stem}.md").write_text(md, encoding="utf-8")
    write_json(Path(f"{stem}.json"), {"machine": machine, "budget": budget.to_dict(),
                                      "budget_id": budget.fingerprint, "sparsity": SPARSITY,
                                      "distribution": DISTRIBUTION, "train_size": len(data.x_train),
                                      "rows": rows, "choice": choice,
                                      "plots": [p.name for p in plots]})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
