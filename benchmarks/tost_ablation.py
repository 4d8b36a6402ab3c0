"""ToST per-tweak breakdown (the paper's Table 4) on Fashion-MNIST, plus a schedule sweep.

One prune-at-init mask (SNIP by default; `--masks random` adds random at
init) at 95% ERK on Model B (`benchmarks.accuracy.build_model("resnet20")`:
`keras_sparse.models.cifar_resnet(20, input_shape=(28, 28, 1))`), trained
with the shared benchmark budget (`benchmarks.harness.train`: SGD momentum
0.9, lr 0.1 cosine to 0, decoupled weight decay 5e-4, batch 128). Rows:

    mask      the mask alone (plain cross-entropy)
    ls        + label smoothing (0.1, Keras variant)
    lrsi      + layer-wise re-scaled init
    gsw       + ghost Swish (beta annealed 1 -> beta_end, then swapped to ReLU)
    gsk       + ghost skips (gate annealed 1 -> 0, then removed)
    tost      all four (`keras_sparse.tost.ToST()` defaults)

`--sweep` adds full-ToST runs that change one schedule default at a time
(`ghost_fraction`, `beta_end`), compared with the `tost` row. Every row
starts from the same mask and the same initial weights (per seed): the mask
is computed once per (mask, seed) and re-applied to a freshly built model.

    python -m benchmarks.tost_ablation                   # breakdown (+ --sweep)
    python -m benchmarks.tost_ablation --sweep --epochs 3 --train-size 10000 --seeds 0 1 2
    python -m benchmarks.tost_ablation --report-only     # re-render from the JSONL

Resumable: each finished run is one line of
benchmarks/results/tost_ablation.jsonl; a rerun skips runs already there with
the same budget. Writes tost_ablation.json, tost_ablation.md and
tost_ablation.png next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import BenchData, Budget, recalibrate_bn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "resnet20"
SPARSITY = 0.95
DISTRIBUTION = "erk"

# Row name -> (label, ToST keyword arguments or None for the mask alone).
ROWS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "mask": ("mask alone", None),
    "ls": ("+ label smoothing (LS)",
           dict(ghost_skip=False, ghost_swish=False, lrsi=False, label_smoothing=0.1)),
    "lrsi": ("+ LRSI", dict(ghost_skip=False, ghost_swish=False, lrsi=True, label_smoothing=0.0)),
    "gsw": ("+ ghost Swish (GSw)",
            dict(ghost_skip=False, ghost_swish=True, lrsi=False, label_smoothing=0.0)),
    "gsk": ("+ ghost skips (GSk)",
            dict(ghost_skip=True, ghost_swish=False, lrsi=False, label_smoothing=0.0)),
    "tost": ("all (ToST)", {}),
}
# Schedule sweep: full ToST with one default changed (the `tost` row is the default).
# Most informative first (a partial sweep still compares both knobs).
SWEEP = (("ghost_fraction", 0.25), ("beta_end", 10.0), ("ghost_fraction", 0.75),
         ("beta_end", 1000.0))
DEFAULT_SCHEDULE = {"ghost_fraction": 0.5, "beta_end": 100.0}


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: a mask, a row, a seed and the ToST schedule."""

    mask: str
    row: str
    seed: int
    ghost_fraction: float = 0.5
    beta_end: float = 100.0

    @property
    def is_sweep(self) -> bool:
        return (self.ghost_fraction, self.beta_end) != (
            DEFAULT_SCHEDULE["ghost_fraction"], DEFAULT_SCHEDULE["beta_end"])

    def key(self) -> tuple:
        return (self.mask, self.row, int(self.seed), round(float(self.ghost_fraction), 6),
                round(float(self.beta_end), 6))

    def tost_kwargs(self) -> dict[str, Any] | None:
        kwargs = ROWS[self.row][1]
        if kwargs is None:
            return None
        return {**kwargs, "ghost_fraction": self.ghost_fraction, "beta_end": self.beta_end}


def plan(masks: Sequence[str], seeds: Sequence[int], sweep: bool) -> list[Run]:
    """The breakdown rows for every (mask, seed), then the sweep (first seed only)."""
    runs = [Run(m, row, s) for m in masks for s in seeds for row in ROWS]
    if sweep:
        for m in masks:
            runs += [Run(m, "tost", seeds[0], **{**DEFAULT_SCHEDULE, name: v}) for name, v in SWEEP]
    return runs


def record_key(rec: Mapping[str, Any]) -> tuple:
    return Run(rec["mask"], rec["row"], rec["seed"], rec["ghost_fraction"],
               rec["beta_end"]).key()


def todo(runs: Sequence[Run], records: Iterable[Mapping[str, Any]], budget_id: str) -> list[Run]:
    """Runs without a successful record of the same budget (what a rerun does)."""
    done = {record_key(r) for r in records
            if r.get("status") == "ok" and r.get("budget_id") == budget_id}
    return [r for r in runs if r.key() not in done]


# ----------------------------------------------------------------- training


def build_masked(mask: str, seed: int, data: BenchData, cache: dict):
    """Freshly built Model B (seeded init) carrying the (mask, seed) mask."""
    import keras

    from benchmarks.accuracy import build_model, make_pai_mask
    from keras_sparse import pruning

    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(MODEL, seed)
    if (mask, seed) not in cache:
        sparse = make_pai_mask(mask, model, SPARSITY, DISTRIBUTION, data, seed)
        cache[(mask, seed)] = (pruning.get_masks(sparse), model.get_weights())
        return sparse
    masks, weights = cache[(mask, seed)]
    model.set_weights(weights)  # identical initial weights for every row
    return pruning.apply_masks(model, masks, strict=False)


# BatchNorm re-estimation before testing (see `recalibrate_bn`).
RECALIBRATE_SIZE = 1000


def budget_id(budget: Budget, n_test: int) -> str:
    """The harness budget's fingerprint, the test-subset size, the BN re-estimation."""
    return f"{budget.fingerprint}-test{n_test}-bn{RECALIBRATE_SIZE}"


def execute(run: Run, data: BenchData, budget: Budget, cache: dict) -> dict[str, Any]:
    """Trains one run and measures it; never raises on a training error."""
    import keras

    from keras_sparse import tost

    rec: dict[str, Any] = {**dataclasses.asdict(run), "budget": budget.to_dict(),
                           "budget_id": budget_id(budget, len(data.x_test)), "model": MODEL,
                           "sparsity": SPARSITY, "distribution": DISTRIBUTION,
                           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    start = time.perf_counter()
    try:
        sparse = build_masked(run.mask, run.seed, data, cache)
        rec["mask_seconds"] = time.perf_counter() - start
        kwargs = run.tost_kwargs()
        calib = data.x_train[np.random.default_rng(run.seed).choice(
            len(data.x_train), min(RECALIBRATE_SIZE, len(data.x_train)), replace=False)]
        if kwargs is None:
            final = harness.train(sparse, data, budget, run.seed)
            recalibrate_bn(final, calib)
            acc = harness.test_accuracy(harness.plain_model(final), data)
        else:
            helper = tost.ToST(**kwargs)
            prepared = helper.prepare(sparse, data=(data.x_train, data.y_train), seed=run.seed,
                                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            harness.train(prepared, data, budget, run.seed, callbacks=[helper.callback()],
                          loss=helper.loss(from_logits=True))
            recalibrate_bn(prepared, calib)  # the trained (ghost) model, before finalize
            final, report = helper.finalize(prepared, validation_data=(data.x_test, data.y_test))
            acc = report["accuracy_relu"]
            for k in ("accuracy_with_swish", "swap_accuracy_change", "max_abs_output_change",
                      "beta"):
                if k in report:
                    rec[k] = report[k]
        rec["test_accuracy"] = float(acc)
        rec["final_sparsity"] = harness.kernel_sparsity(harness.plain_model(final))["final_sparsity"]
        rec["status"] = "ok"
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one failing row must not stop the table
        rec["status"] = "failed"
        rec["error"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
    rec["seconds"] = time.perf_counter() - start
    return rec


def run_all(runs: Sequence[Run], data: BenchData, budget: Budget, path: Path,
            progress: bool = True) -> list[dict]:
    pending = todo(runs, harness.read_runs(path), budget_id(budget, len(data.x_test)))
    if len(pending) < len(runs):
        print(f"[resume] {len(runs) - len(pending)} run(s) already in {path}, {len(pending)} to go")
    cache: dict = {}
    return harness.run_pending(
        pending, lambda run: execute(run, data, budget, cache), path,
        describe=lambda run: f"{run.mask} {run.row} s{run.seed} gf{run.ghost_fraction:g} be{run.beta_end:g}",
        progress=progress)


# ------------------------------------------------------------------- tables


def aggregate(records: Iterable[Mapping[str, Any]], budget_id: str | None = None) -> list[dict]:
    """Mean ± std over seeds per (mask, row, ghost_fraction, beta_end); last record wins."""
    latest: dict[tuple, Mapping] = {}
    for rec in records:
        if budget_id is None or rec.get("budget_id") == budget_id:
            latest[record_key(rec)] = rec
    groups: dict[tuple, list] = {}
    for key, rec in latest.items():
        groups.setdefault((key[0], key[1], key[3], key[4]), []).append(rec)
    rows = []
    for (mask, row, gf, be), recs in groups.items():
        ok = [r for r in recs if r.get("status") == "ok"]

        def stat(field, recs=ok):
            vals = np.array([r[field] for r in recs if field in r], float)
            if not len(vals):
                return None, None
            return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0

        acc, acc_std = stat("test_accuracy")
        swap, swap_std = stat("swap_accuracy_change")
        sp, _ = stat("final_sparsity")
        secs, _ = stat("seconds")
        rows.append({"mask": mask, "row": row, "ghost_fraction": gf, "beta_end": be,
                     "n": len(ok), "failed": len(recs) - len(ok), "seeds": sorted(r["seed"] for r in ok),
                     "acc_mean": acc, "acc_std": acc_std, "swap_mean": swap, "swap_std": swap_std,
                     "sparsity_mean": sp, "seconds_mean": secs,
                     "acc_by_seed": {int(r["seed"]): r["test_accuracy"] for r in ok}})
    order = list(ROWS)
    rows.sort(key=lambda r: (r["mask"], order.index(r["row"]) if r["row"] in order else 99,
                             r["ghost_fraction"], r["beta_end"]))
    return rows


def _pct(mean, std, n, signed=False) -> str:
    if mean is None:
        return "-"
    text = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return text + (f" ± {100 * std:.2f}" if n > 1 and std is not None else "")


def _default(r) -> bool:
    return (r["ghost_fraction"], r["beta_end"]) == (DEFAULT_SCHEDULE["ghost_fraction"],
                                                    DEFAULT_SCHEDULE["beta_end"])


def _same_seeds(sweep: Sequence[dict]) -> list[dict]:
    """The default row restricted to the seeds the sweep rows ran (like with like)."""
    seeds = {s for r in sweep if not _default(r) for s in r["seeds"]}
    out = []
    for r in sweep:
        r = dict(r)
        if _default(r) and seeds and set(r["seeds"]) != seeds:
            accs = [a for s, a in r.get("acc_by_seed", {}).items() if int(s) in seeds]
            r.update(acc_mean=float(np.mean(accs)) if accs else None, acc_std=0.0,
                     n=len(accs), seeds=sorted(s for s in seeds), swap_mean=r["swap_mean"])
        out.append(r)
    return out


def render_tables(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: the breakdown per mask, then the schedule sweep if any."""
    from benchmarks._common import markdown_table

    out = []
    for mask in sorted({r["mask"] for r in rows}):
        base = [r for r in rows if r["mask"] == mask and _default(r)]
        ref = next((r for r in base if r["row"] == "mask" and r["acc_mean"] is not None), None)
        body = []
        for r in base:
            delta = "-" if ref is None or r["acc_mean"] is None or r is ref else \
                f"{100 * (r['acc_mean'] - ref['acc_mean']):+.2f}"
            acc = _pct(r["acc_mean"], r["acc_std"], r["n"]) if r["n"] else f"failed ({r['failed']})"
            body.append([ROWS[r["row"]][0] if r["row"] in ROWS else r["row"], acc, delta,
                         _pct(r["swap_mean"], r["swap_std"], r["n"], signed=True),
                         "-" if r["sparsity_mean"] is None else f"{r['sparsity_mean']:.3f}",
                         r["n"], "-" if r["seconds_mean"] is None else f"{r['seconds_mean']:.0f}"])
        out.append(f"#### {mask.upper()} mask, {SPARSITY:.0%} {DISTRIBUTION.upper()}, {MODEL}\n\n"
                   + markdown_table(["row", "test acc %", "Δ vs mask alone (pp)",
                                     "Swish→ReLU swap Δ (pp)", "sparsity", "seeds", "s/run"],
                                    body))
        sweep = [dict(r) for r in rows if r["mask"] == mask and r["row"] == "tost"]
        if any(not _default(r) for r in sweep):
            sweep = _same_seeds(sweep)
            tref = next((r for r in sweep if _default(r) and r["acc_mean"] is not None), None)
            body = []
            for r in sorted(sweep, key=lambda r: (r["ghost_fraction"], r["beta_end"])):
                delta = "-" if tref is None or r["acc_mean"] is None or r is tref else \
                    f"{100 * (r['acc_mean'] - tref['acc_mean']):+.2f}"
                body.append([f"{r['ghost_fraction']:g}", f"{r['beta_end']:g}",
                             "(default)" if _default(r) else "",
                             _pct(r["acc_mean"], r["acc_std"], r["n"]), delta,
                             _pct(r["swap_mean"], r["swap_std"], r["n"], signed=True), r["n"]])
            seeds = sorted({s for r in sweep for s in r["seeds"]})
            out.append(f"#### Schedule sweep, full ToST, {mask.upper()} mask (seeds {seeds})\n\n"
                       + markdown_table(["ghost_fraction", "beta_end", "", "test acc %",
                                         "Δ vs default (pp)", "Swish→ReLU swap Δ (pp)", "seeds"],
                                        body))
    return "\n\n".join(out)


def plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Bars: breakdown accuracy per row (per mask) and the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["acc_mean"] is not None]
    if not ok:
        return None
    masks = sorted({r["mask"] for r in ok})
    sweeps = {m: _same_seeds([r for r in ok if r["mask"] == m and r["row"] == "tost"])
              for m in masks}
    has_sweep = any(len(v) > 1 for v in sweeps.values())
    fig, axes = plt.subplots(1, 2 if has_sweep else 1, figsize=(11 if has_sweep else 6.4, 4.2),
                             squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(masks)
    for i, m in enumerate(masks):
        base = [r for r in ok if r["mask"] == m and _default(r)]
        xs = np.arange(len(base)) + i * width
        ax.bar(xs, [100 * r["acc_mean"] for r in base], width,
               yerr=[100 * (r["acc_std"] or 0) for r in base], label=m.upper(), capsize=3)
        ax.set_xticks(xs)
        ax.set_xticklabels([ROWS[r["row"]][0] if r["row"] in ROWS else r["row"] for r in base],
                           rotation=30, ha="right", fontsize=8)
    lo = min(100 * r["acc_mean"] for r in ok)
    ax.set_ylim(max(0.0, lo - 5), None)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"ToST breakdown, {MODEL} {SPARSITY:.0%} {DISTRIBUTION.upper()}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if has_sweep:
        ax = axes[0][1]
        for m in masks:
            pts = sorted(sweeps[m], key=lambda r: (r["ghost_fraction"], r["beta_end"]))
            labels = [f"gf {r['ghost_fraction']:g}\nβ_end {r['beta_end']:g}" for r in pts]
            ax.bar(labels, [100 * r["acc_mean"] for r in pts],
                   color=["C2" if _default(r) else "C0" for r in pts])
        ax.set_ylim(max(0.0, lo - 5), None)
        ax.set_title("schedule sweep (full ToST; green = default)")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--masks", nargs="+", default=["snip"], choices=["snip", "random", "grasp", "synflow"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=4000, help="training subset (0: all 60k)")
    p.add_argument("--test-size", type=int, default=3000, help="test subset (0: all 10k)")
    p.add_argument("--sweep", action="store_true", help="add the ghost_fraction / beta_end sweep")
    p.add_argument("--results", type=Path, default=RESULTS / "tost_ablation.jsonl")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.epochs < 1:
        p.error(f"--epochs must be >= 1; received {a.epochs}")
    return a


def load_data(train_size: int, test_size: int) -> BenchData:
    from benchmarks.accuracy import load_data as load

    data = load(train_size or None)
    if test_size and test_size < len(data.x_test):
        idx = np.sort(np.random.default_rng(0).choice(len(data.x_test), test_size, replace=False))
        data = BenchData(data.x_train, data.y_train, data.x_test[idx], data.y_test[idx])
    return data


def report(args, budget: Budget, machine: Mapping[str, Any], n_train: int, n_test: int) -> str:
    from benchmarks._common import machine_markdown, write_json

    rows = aggregate(harness.read_runs(args.results), budget_id(budget, n_test))
    stem = Path(args.results).with_suffix("")
    png = plot(rows, Path(f"{stem}.png"))
    notes = [
        f"Model B (`cifar_resnet(20)` on 28x28x1), {SPARSITY:.0%} sparsity, ERK per-layer budgets, "
        "prune-at-init mask computed once per (mask, seed); every row starts from the same mask "
        "and the same initial weights.",
        f"Budget: {budget.epochs} epoch(s) on {n_train} Fashion-MNIST training images, batch "
        f"{budget.batch_size}, {harness.recipe_text(budget)}; test accuracy on {n_test} test images "
        f"(fixed subset). Seeds in this file: {sorted({s for r in rows for s in r['seeds']})} "
        "(the sweep: first seed only).",
        "ToST schedules (`keras_sparse.tost.ToSTCallback`): gate alpha 1 -> 0 linearly and Swish "
        "beta 1 -> beta_end geometrically over the first ghost_fraction of the steps; then gates "
        "are removed and GhostSwish is swapped to exact ReLU (`ToST.finalize`). Accuracies are of "
        "the final plain ReLU model.",
        "Swish→ReLU swap Δ: test accuracy after the swap minus before it (runs with ghost Swish).",
        "LS: 0.1, Keras variant. LRSI: one learned scalar per prunable layer, folded at the end.",
        f"BatchNorm re-estimation: after training, every BN's moving statistics are set to those "
        f"of {RECALIBRATE_SIZE} training images (one training-mode pass, momentum 0; for ToST rows "
        "on the trained model before `finalize`, so the swap Δ is measured as is). Without it all "
        "rows tested at chance (10.2% / 9.8% / 12.2% for mask / LS / LRSI) because with momentum "
        "0.99 the moving averages have not converged in this few steps; training accuracy was ~68%.",
    ]
    old = harness.read_runs(Path(f"{stem}_after_unit.jsonl"))
    old = [r for r in old if r.get("status") == "ok"]
    if old:
        notes.append(
            "Ghost skips sit before the normalization layer (`add_ghost_skips` default "
            "`placement=\"before_norm\"`: `ReLU(BN(conv(x) + alpha x))`). The earlier placement "
            "after the whole conv-BN-ReLU unit (`placement=\"after_unit\"`) stacks with the "
            "block's own shortcut and blew up the identity path (initial loss 9.2 vs 2.3): "
            + "; ".join(f"{ROWS[r['row']][0]} {100 * r['test_accuracy']:.2f}%" for r in old)
            + f" (same budget; `{stem.name}_after_unit.jsonl`).")
    md = "\n\n".join(["## ToST per-tweak breakdown (Table 4 of Jaiswal et al., 2022, on our budget)",
                      machine_markdown(dict(machine)), "\n".join(f"- {n}" for n in notes),
                      render_tables(rows)] + ([f"Plot: `{png.name}`"] if png else []))
    Path(f"{stem}.md").write_text(md + "\n", encoding="utf-8")
    write_json(Path(f"{stem}.json"), {"machine": dict(machine), "budget": budget.to_dict(),
                                      "budget_id": budget_id(budget, n_test), "train_size": n_train,
                                      "test_size": n_test, "seeds": args.seeds, "rows": rows})
    return md


def main(argv=None) -> int:
    from benchmarks._common import machine_info

    args = parse_args(argv)
    budget = Budget(epochs=args.epochs, train_size=args.train_size or None)
    machine = machine_info()
    data = load_data(args.train_size, args.test_size)
    if not args.report_only:
        run_all(plan(args.masks, args.seeds, args.sweep), data, budget, args.results,
                progress=not args.no_progress)
    print(report(args, budget, machine, len(data.x_train), len(data.x_test)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
