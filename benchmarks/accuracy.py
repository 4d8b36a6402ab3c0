"""Accuracy table: every sparse-training method on Fashion-MNIST, one budget.

Protocol (../shared/BENCHMARK.md): Model A = `keras_sparse.models.small_cnn`,
Model B = `keras_sparse.models.cifar_resnet(20, input_shape=(28, 28, 1))`;
SGD momentum 0.9 (lr 0.1, decoupled weight decay 5e-4), cosine decay to 0,
batch 128, a fixed epoch budget, seeds 0/1/2, sparsities 90/95/98%,
uniform and ERK per-layer budgets. Test accuracy is mean ± std over seeds;
the *measured* final sparsity (exact zeros over every kernel of the stripped
model, first and last layers included) stands next to every accuracy.

    python -m benchmarks.accuracy --quick         # smoke run, < 10 min, 2 cores
    python -m benchmarks.accuracy                 # the full table (hours): 3 epochs on 10k images
    python -m benchmarks.accuracy --methods dense static snip --models small_cnn \
        --sparsities 0.9 0.95 --seeds 0 1 2 --epochs 10
    python -m benchmarks.accuracy --report-only   # re-render table/plots from the JSONL

Resumable: every finished run is appended to
benchmarks/results/accuracy.jsonl (accuracy_quick.jsonl with --quick); a
killed run continues where it stopped, skipping finished
(method, model, sparsity, distribution, seed) keys with the same budget.
Writes accuracy[_quick].json (aggregates, machine, versions, date, budget),
accuracy[_quick].md and PNG plots into benchmarks/results/.

Per-layer budgets: every masked method (static random, random-at-init,
SNIP, GraSP, SynFlow, TF-MOT) gets the per-layer sparsities that
`keras_sparse.sparsify(model, s, distribution)` draws (so with "uniform" the
first conv stays dense, RigL's convention); methods differ only in which
weights each layer keeps. LTH prunes by global magnitude (its own
allocation), shown in a "global" column.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import BenchData, Budget, register, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = ("small_cnn", "resnet20")
DISTRIBUTIONS = ("uniform", "erk")
QUICK_METHODS = ("dense", "static", "snip", "snip_tost", "synflow", "rigl", "neurrev",
                 "tfmot")
QUICK_TRAIN_SIZE = 10_000
TABLE_EPOCHS = 3
TABLE_TRAIN_SIZE = 10_000
"""The default budget: the one the committed table (benchmarks/results/accuracy.md)
was run with on the project's 2-core CPU machines. The protocol asks for a fixed,
stated budget; `--epochs 10 --train-size 60000` gives a longer one (4,690 steps per
ResNet-20 run: about 25 minutes at the 0.32 s/step of step_time.md, so days for
the whole table)."""


def build_model(name: str, seed: int):
    from keras_sparse import models

    if name == "small_cnn":
        return models.small_cnn(input_shape=(28, 28, 1))
    if name == "resnet20":
        return models.cifar_resnet(20, input_shape=(28, 28, 1))
    raise ValueError(f"Unknown model {name!r}; accepted: {MODELS}.")


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ------------------------------------------------------------------ methods


@register("dense", label="dense", kind="dense", dense=True)
def _dense(model, sparsity, distribution, data, budget, seed):
    return train(model, data, budget, seed), {}


@register("static", label="static random (sparsify + fit)", kind="static")
def _static(model, sparsity, distribution, data, budget, seed):
    import keras_sparse as ks

    sparse = ks.sparsify(model, sparsity, distribution=distribution, seed=seed)
    return train(sparse, data, budget, seed), {}


def _pai_batch(data: BenchData, seed: int, size: int):
    idx = np.random.default_rng(seed).choice(len(data.x_train), size, replace=False)
    return data.x_train[idx], data.y_train[idx]


def _grasp_batch(data: BenchData, seed: int, per_class: int = 10):
    """GraSP's sampling: `per_class` examples of every class."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(data.y_train == c), per_class, replace=False)
                          for c in np.unique(data.y_train)])
    return data.x_train[idx], data.y_train[idx]


def make_pai_mask(method: str, model, sparsity, distribution, data, seed):
    """A prune-at-init mask with the per-layer budgets of `sparsify`."""
    from keras_sparse import pruning

    budgets = harness.layer_budgets(model, sparsity, distribution, seed)
    kwargs: dict[str, Any] = dict(scope="layer", distribution=budgets)
    if method == "snip":
        kwargs.update(data=_pai_batch(data, seed, 256), loss=_loss())
    elif method == "grasp":
        kwargs.update(data=_grasp_batch(data, seed), loss=_loss())
    elif method == "synflow":
        kwargs.update(iterations=100)
    elif method == "random":
        kwargs.update(seed=seed)
    return pruning.prune_at_init(model, method, sparsity, **kwargs)


def train_with_tost(sparse, data, budget, seed):
    """ToST on any mask; ghost skips are dropped where the graph has no place for them."""
    from keras_sparse import tost

    extras: dict[str, Any] = {"tost_ghost_skip": True}
    helper = tost.ToST()
    try:
        prepared = helper.prepare(sparse)
    except ValueError:  # e.g. the small CNN: no shape-preserving layer
        helper = tost.ToST(ghost_skip=False)
        prepared = helper.prepare(sparse)
        extras["tost_ghost_skip"] = False
    train(prepared, data, budget, seed, callbacks=[helper.callback()],
          loss=helper.loss(from_logits=True))
    final, report = helper.finalize(prepared, validation_data=(data.x_test, data.y_test))
    extras.update({f"tost_{k}": v for k, v in report.items() if isinstance(v, (int, float))})
    return final, extras


def _register_pai(name: str, label: str):
    @register(f"{name}_pai" if name == "random" else name, label=label, kind="pai")
    def _plain(model, sparsity, distribution, data, budget, seed):
        sparse = make_pai_mask(name, model, sparsity, distribution, data, seed)
        return train(sparse, data, budget, seed), {}

    @register(f"{name}_tost", label=f"{label} + ToST", kind="pai")
    def _tost(model, sparsity, distribution, data, budget, seed):
        sparse = make_pai_mask(name, model, sparsity, distribution, data, seed)
        return train_with_tost(sparse, data, budget, seed)


for _name, _label in (("snip", "SNIP"), ("grasp", "GraSP"), ("synflow", "SynFlow"),
                      ("random", "random at init")):
    _register_pai(_name, _label)


LTH_MILESTONES = (0.9, 0.95, 0.98)
"""IMP passes through these sparsities on its way up, so one pruning trajectory
per seed gives the tickets of every column (the 98% ticket continues from the
95% one, which continues from the 90% one: 11 + 4 + 5 rounds instead of
11, 14 and 18 separate ones)."""


def lth_trajectory(sparsity: float) -> list[tuple[float, int, float]]:
    """`[(sparsity, rounds, fraction per round)]`: the IMP segments up to `sparsity`."""
    from keras_sparse import lottery

    stops = sorted({m for m in LTH_MILESTONES if m < sparsity} | {sparsity})
    segments, start = [], 0.0
    for stop in stops:
        segments.append((stop, *lottery.imp_schedule(stop, start_sparsity=start)))
        start = stop
    return segments


# Tickets are found once per (model, sparsity, seed, budget) and kept here, so
# the "lth" and "lth_tost" rows train the same ticket, higher sparsities
# continue from lower ones, and a resumed table repeats no IMP round.
TICKET_CACHE = REPO / "benchmarks" / ".cache" / "lth_tickets"


def lottery_ticket(model, sparsity, distribution, data, budget, seed):
    """(sparse model rewound to its ticket, extras): cached IMP, global magnitude."""
    from keras_sparse import lottery

    if distribution != "global":
        raise ValueError(f"LTH prunes by global magnitude: use distribution 'global', "
                         f"received {distribution!r}.")
    fit_kwargs = dict(x=data.x_train, y=data.y_train, epochs=budget.epochs,
                      batch_size=budget.batch_size, verbose=0)
    segments = lth_trajectory(sparsity)
    ticket, sparse, cached = None, None, True
    for stop, rounds, fraction in segments:
        path = TICKET_CACHE / (f"{model.name}_{model.count_params()}_{stop:g}_s{seed}_"
                               f"{budget.fingerprint}_n{len(data.x_train)}.npz")
        if path.exists():
            ticket, sparse = lottery.LotteryTicket.load(path), None
            continue
        cached = False
        if sparse is None:
            sparse = model if ticket is None else ticket.apply(model)
        harness.compile_model(sparse, data, budget)
        ticket = lottery.find_ticket(sparse, fit_kwargs, rounds=rounds, prune_per_round=fraction,
                                     scope="global")
        path.parent.mkdir(parents=True, exist_ok=True)
        ticket.save(path)
        sparse = ticket.model
    total_rounds = sum(r for _, r, _ in segments)
    extras = {"lth_rounds": total_rounds,
              "lth_segments": [[stop, r, f] for stop, r, f in segments],
              "train_epochs_total": budget.epochs * (total_rounds + 1),
              "lth_ticket_cached": cached}
    return (ticket.apply(model) if sparse is None else sparse), extras


@register("lth", label="LTH (IMP, rewind to init, global magnitude)", kind="lth",
          note="LTH trains rounds+1 times the budget (reported as train_epochs_total).")
def _lth(model, sparsity, distribution, data, budget, seed):
    ticket, extras = lottery_ticket(model, sparsity, distribution, data, budget, seed)
    return train(ticket, data, budget, seed), extras


@register("lth_tost", label="LTH + ToST", kind="lth",
          note="the same ticket as the LTH row (found once, cached), trained with ToST.")
def _lth_tost(model, sparsity, distribution, data, budget, seed):
    ticket, extras = lottery_ticket(model, sparsity, distribution, data, budget, seed)
    trained, tost_extras = train_with_tost(ticket, data, budget, seed)
    return trained, {**extras, **tost_extras}


# LTH has no per-layer budget to honour: it runs in its own "global" column.
LTH_DISTRIBUTIONS = ("global",)


# -- DST and gradual methods (keras_sparse.algorithms + callbacks).

def _dst_available() -> str | None:
    import keras_sparse

    if not (Path(keras_sparse.__file__).parent / "algorithms").is_dir():
        return "keras_sparse.algorithms not in this checkout"
    return None


_INTERVAL_OVERRIDE: int | None = None
"""Set by `--update-interval` (an ablation written to its own results file)."""


def update_interval(budget: Budget, n_train: int) -> int:
    """RigL's 100 steps, shrunk so short (quick) budgets still get ~20 updates,
    unless `--update-interval` overrides it (then the peer uses it too)."""
    if _INTERVAL_OVERRIDE is not None:
        return _INTERVAL_OVERRIDE
    return int(min(100, max(1, budget.steps(n_train) // 20)))


def _history_extras(model) -> dict[str, Any]:
    hist = getattr(getattr(model, "history", None), "history", {}) or {}
    return {f"final_{k}": float(v[-1]) for k, v in hist.items()
            if k in ("itop_rate", "awakened", "regrown", "drop_fraction") and v}


def train_dst(name: str, model, sparsity, distribution, data, budget, seed):
    """Sparse-to-sparse DST (SET, RigL, MEST, DSR, Deep-R, NeurRev) or
    gradual pruning (GMP, GraNet from dense; GraNet-ST from 50% sparse)."""
    import keras_sparse as ks
    from keras_sparse import algorithms, callbacks

    cls = type(algorithms.get(name))
    ui = update_interval(budget, len(data.x_train))
    kwargs: dict[str, Any] = dict(update_interval=ui, seed=seed)
    if name in ("gmp", "granet", "granet_st"):
        # Per-layer allocation so the columns compare like with like.
        kwargs.update(sparsity=sparsity, distribution=distribution)
        start = 0.5 if name == "granet_st" else 0.0
        sparse = ks.sparsify(model, start, distribution=distribution, seed=seed)
    else:
        sparse = ks.sparsify(model, sparsity, distribution=distribution, seed=seed)
    callback = callbacks.DynamicSparseTraining(cls(**kwargs))
    trained = train(sparse, data, budget, seed, callbacks=[callback])
    return trained, {"update_interval": ui, **_history_extras(trained)}


def _register_dst(name: str, label: str, kind: str = "dst"):
    @register(name, label=label, kind=kind, available=_dst_available)
    def _dst(model, sparsity, distribution, data, budget, seed):
        return train_dst(name, model, sparsity, distribution, data, budget, seed)


for _name, _label in (("set", "SET"), ("rigl", "RigL"), ("mest", "MEST"), ("dsr", "DSR"),
                      ("deep_r", "Deep-R"), ("neurrev", "NeurRev")):
    _register_dst(_name, _label)
for _name, _label in (("gmp", "GMP (from dense)"), ("granet", "GraNet (from dense)"),
                      ("granet_st", "GraNet-ST (from 50%)")):
    _register_dst(_name, _label, kind="gradual")


# -- the peer: TF-MOT prune_low_magnitude in its own process (tf_keras).

def tfmot_python() -> Path:
    return Path(os.environ.get("KERAS_SPARSE_TFMOT_PYTHON", REPO / ".venv-tfmot" / "bin" / "python"))


def tfmot_layer_sparsity(model, sparsity: float, distribution: str, seed: int) -> dict[str, float]:
    """`{layer name: final sparsity}` for the TF-MOT peer: `sparsify`'s per-layer
    budgets for every layer with a kernel, in model order (0: left unwrapped)."""
    budgets = harness.layer_budgets(model, sparsity, distribution, seed)
    return {layer.name: budgets.get(f"{layer.name}/kernel", 0.0) for layer in model.layers
            if any(w.path.endswith("/kernel") for w in layer.weights)}


def tfmot_env() -> dict[str, str]:
    """The environment for a peer subprocess: ours minus PYTHONPATH (its own venv)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _tfmot_available() -> str | None:
    if not tfmot_python().exists():
        return f"no TF-MOT venv at {tfmot_python()} (run `make tfmot-venv`)"
    return None


@register("tfmot", label="TF-MOT prune_low_magnitude (PolynomialDecay, tf_keras)", kind="peer",
          available=_tfmot_available,
          note="Gradual magnitude pruning from dense, 0 -> target over the first 75% of steps.")
def _tfmot(model, sparsity, distribution, data, budget, seed):
    layer_sparsity = tfmot_layer_sparsity(model, sparsity, distribution, seed)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "data.npz"
        np.savez(npz, x_train=data.x_train, y_train=data.y_train,
                 x_test=data.x_test, y_test=data.y_test)
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps({
            "model": _model_name_of(model), "layer_sparsity": layer_sparsity,
            "budget": budget.to_dict(), "seed": seed,
            # The peer's own frequency (steps // 50) unless --update-interval is given.
            "frequency": _INTERVAL_OVERRIDE}))
        out = Path(tmp) / "result.json"
        proc = subprocess.run(
            [str(tfmot_python()), str(REPO / "benchmarks" / "peer_tfmot.py"),
             "--config", str(cfg), "--data", str(npz), "--out", str(out)],
            capture_output=True, text=True, env=tfmot_env(), timeout=6 * 3600)
        if proc.returncode != 0:
            raise RuntimeError(f"peer_tfmot.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        result = json.loads(out.read_text())
    return None, result


def _model_name_of(model) -> str:
    return {"small_cnn": "small_cnn", "resnet20": "resnet20"}[model.name]


# ---------------------------------------------------------------- data, CLI


def load_data(train_size: int | None, seed: int = 0) -> BenchData:
    from keras_sparse.datasets import load_fashion_mnist

    (x, y), (xt, yt) = load_fashion_mnist()
    if train_size is not None and train_size < len(x):
        idx = np.sort(np.random.default_rng(seed).choice(len(x), train_size, replace=False))
        x, y = x[idx], y[idx]
    return BenchData(x, y.astype("int64"), xt, yt.astype("int64"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: small_cnn, 1 epoch on {QUICK_TRAIN_SIZE} examples, seed 0, "
                        f"90%%, methods {', '.join(QUICK_METHODS)}")
    p.add_argument("--methods", nargs="+", default=None, help=f"any of: {', '.join(harness.REGISTRY)}")
    p.add_argument("--models", nargs="+", default=None, choices=MODELS)
    p.add_argument("--sparsities", nargs="+", type=float, default=None)
    p.add_argument("--distributions", nargs="+", default=None, choices=DISTRIBUTIONS)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epoch budget (default {TABLE_EPOCHS}; quick 1)")
    p.add_argument("--train-size", type=int, default=None,
                   help=f"training subset (default {TABLE_TRAIN_SIZE}; 60000 = all)")
    p.add_argument("--results", type=Path, default=None, help="JSONL file (default benchmarks/results/accuracy[_quick].jsonl)")
    p.add_argument("--report-only", action="store_true", help="only re-render table and plots")
    p.add_argument("--readme", action="store_true",
                   help="print the README's compact tables from the results and exit")
    p.add_argument("--update-interval", type=int, default=None,
                   help="ablation: every DST/gradual method and the peer update masks every N "
                        "steps (default: min(100, steps // 20) for ours, the peer's steps // 50); "
                        "needs --results of its own")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    q = a.quick
    a.methods = a.methods or list(QUICK_METHODS if q else harness.REGISTRY)
    unknown = [m for m in a.methods if m not in harness.REGISTRY]
    if unknown:
        p.error(f"unknown method(s) {unknown}; accepted: {list(harness.REGISTRY)}")
    a.models = a.models or (["small_cnn"] if q else list(MODELS))
    a.sparsities = a.sparsities or ([0.9] if q else [0.9, 0.95, 0.98])
    a.distributions = a.distributions or list(DISTRIBUTIONS)
    a.seeds = a.seeds if a.seeds is not None else ([0] if q else [0, 1, 2])
    a.epochs = a.epochs or (1 if q else TABLE_EPOCHS)
    a.train_size = a.train_size or (QUICK_TRAIN_SIZE if q else TABLE_TRAIN_SIZE)
    a.results = a.results or harness.default_results_path(q)
    for s in a.sparsities:
        if not 0.0 < s < 1.0:
            p.error(f"--sparsities must be in (0, 1); received {s}")
    if a.epochs < 1:
        p.error(f"--epochs must be >= 1; received {a.epochs}")
    if a.update_interval is not None:
        if a.update_interval < 1:
            p.error(f"--update-interval must be an int >= 1; received {a.update_interval}")
        if a.results.resolve() == harness.default_results_path(q).resolve():
            p.error(f"--update-interval {a.update_interval} is an ablation: pass --results FILE "
                    f"of its own (received the table's {a.results})")
    return a


def plan(args) -> list[harness.RunKey]:
    keys = []
    for model in args.models:
        for m in args.methods:
            dists = LTH_DISTRIBUTIONS if harness.REGISTRY[m].kind == "lth" else args.distributions
            keys += harness.plan_runs([m], [model], args.sparsities, dists, args.seeds)
    return keys


def erk_density_plot(out_dir: Path, models, sparsity: float) -> list[Path]:
    written = []
    for name in models:
        per = {d: {k: 1.0 - v for k, v in harness.layer_budgets(build_model(name, 0), sparsity, d, 0).items()}
               for d in ("uniform", "erk")}
        names = sorted(set(per["uniform"]) | set(per["erk"]),
                       key=lambda k: list(per["erk"]).index(k) if k in per["erk"] else -1)
        per = {d: {n: per[d].get(n, 1.0) for n in names} for d in per}
        written.append(harness.plot_density_bars(
            per, out_dir / f"density_{name}_{int(round(sparsity * 100))}.png",
            f"{name}: per-layer density at {sparsity:.0%} (uniform vs ERK)"))
    return written


def report(args, budget: Budget, machine: dict[str, Any]) -> str:
    from benchmarks._common import machine_markdown, write_json

    records = harness.read_runs(args.results)
    rows = harness.aggregate(records, budget.fingerprint)
    pending = {m: harness.REGISTRY[m].unavailable_reason() for m in args.methods
               if harness.REGISTRY[m].unavailable_reason()}
    stem = Path(args.results).with_suffix("")
    out_dir = stem.parent
    tag = "_quick" if args.quick else ""
    # The table covers every run in the file, not just this command line's:
    # notes and plots describe what the rows hold.
    present = [m for m in harness.REGISTRY if any(r["method"] == m for r in rows)]
    methods = present + [m for m in args.methods if m not in present]
    seeds = sorted({s for r in rows for s in r["seeds"]}) or args.seeds
    models = sorted({r["model"] for r in rows}) or args.models
    top = max([r["sparsity"] for r in rows if r["n"]] or args.sparsities)
    plots = harness.plot_accuracy_vs_sparsity(rows, out_dir / f"plots{tag}")
    plots += erk_density_plot(out_dir / f"plots{tag}", models, top)
    title = "Accuracy table" + (" (QUICK smoke run: not the protocol's budget)" if args.quick else "")
    notes = [
        f"Budget: {budget.epochs} epoch(s) on {args.n_train} Fashion-MNIST training images "
        f"({'subset' if args.n_train < 60000 else 'all'}), batch {budget.batch_size}, SGD lr "
        f"{budget.lr} momentum {budget.momentum}, weight decay {budget.weight_decay} (decoupled), "
        f"cosine decay to 0; test on the 10k test images. Seeds in the results: {seeds}.",
        "Cells: test accuracy % (mean ± std over seeds), `sp` = measured final sparsity "
        "(exact zeros over all conv/dense kernels of the stripped model, first/last layers "
        "included), n = seeds.",
        "Uniform keeps the first conv dense (RigL's convention), so its measured sparsity "
        "sits slightly under the target; ERK budgets cover every layer.",
        "10.00 = the network did not train (training loss stayed at ln 10: at 98% uniform the "
        "2%-dense layers pass almost no signal from a dense-scaled init; ToST rows also died this "
        "way at lr 0.1 on some masks).",
        "Models with BatchNorm (ResNet-20): moving statistics re-estimated on 1000 training "
        "images before testing (`harness.recalibrate_bn`), identically for every row.",
    ]
    if args.update_interval is not None:
        notes.append(f"ABLATION: every DST/gradual method and the TF-MOT peer update masks every "
                     f"{args.update_interval} steps (`--update-interval`).")
    elif any(harness.REGISTRY[m].kind in ("dst", "gradual") for m in methods):
        notes.append(f"DST/gradual mask-update interval: min(100, steps // 20) = "
                     f"{update_interval(budget, args.n_train)} steps here (RigL: 100); the "
                     f"TF-MOT peer's: min(100, steps // 50).")
    notes += [f"{harness.REGISTRY[m].label}: {harness.REGISTRY[m].note}" for m in methods
              if harness.REGISTRY[m].note]
    md = "\n\n".join([f"## {title}", machine_markdown(machine), "\n".join(f"- {n}" for n in notes),
                      harness.render_table(rows, pending=pending),
                      "Plots: " + ", ".join(f"`{p.relative_to(out_dir)}`" for p in plots)])
    Path(f"{stem}.md").write_text(md + "\n", encoding="utf-8")
    write_json(Path(f"{stem}.json"), {"machine": machine, "budget": budget.to_dict(),
                                      "budget_id": budget.fingerprint, "quick": args.quick,
                                      "train_size": args.n_train, "rows": rows,
                                      "pending": pending})
    return md


def _short_cell(row: dict[str, Any] | None) -> str:
    """`mean ± std` in %, one decimal (README tables); n shown unless it is 3."""
    if row is None or not row["n"]:
        return "-"
    text = f"{100 * row['acc_mean']:.1f}" + (f" ± {100 * row['acc_std']:.1f}" if row["n"] > 1 else "")
    return text + ("" if row["n"] == 3 else f" (n={row['n']})")


def readme_table(rows: list[dict[str, Any]], model: str, columns: list[tuple[float, str]],
                 lth: bool = False) -> str:
    """The README's compact table of one model: LTH rows only, or every other row.

    Rows without any result in `columns` are left out; dense rows repeat
    their one value in every column.
    """
    from benchmarks._common import markdown_table

    mine = [r for r in rows if r["model"] == model]
    body = []
    for name, spec in harness.REGISTRY.items():
        if (spec.kind == "lth") != lth:
            continue
        by_col = {(r["sparsity"], r["distribution"]): r for r in mine if r["method"] == name}
        cells = ([_short_cell(by_col.get((0.0, "-")))] * len(columns) if spec.dense
                 else [_short_cell(by_col.get(c)) for c in columns])
        if any(c != "-" for c in cells):
            body.append([spec.label] + cells)
    return markdown_table(["method"] + [f"{s:.0%} {d}" for s, d in columns], body)


def readme_tables(rows: list[dict[str, Any]]) -> str:
    """What the README shows: each model's uniform and ERK columns, then its LTH (global) rows."""
    sp = (0.9, 0.95, 0.98)
    columns = [(s, d) for d in DISTRIBUTIONS for s in sp]
    parts = [(model, cols, lth) for model in MODELS
             for cols, lth in ((columns, False), ([(s, "global") for s in sp], True))]
    out = []
    for model, columns, lth in parts:
        table = readme_table(rows, model, columns, lth)
        if table.count("\n") > 1:  # header + separator only: nothing to show
            out.append(f"{model}{' (LTH)' if lth else ''}:\n\n{table}")
    return "\n\n".join(out)


def main(argv=None) -> int:
    from benchmarks._common import machine_info

    global _INTERVAL_OVERRIDE
    args = parse_args(argv)
    _INTERVAL_OVERRIDE = args.update_interval
    budget = Budget(epochs=args.epochs, train_size=args.train_size)
    machine = machine_info()
    data = load_data(args.train_size)
    args.n_train = len(data.x_train)
    if args.readme:
        print(readme_tables(harness.aggregate(harness.read_runs(args.results), budget.fingerprint)))
        return 0
    if not args.report_only:
        keys = plan(args)
        harness.run_all(keys, build_model, data, budget, args.results,
                        progress=not args.no_progress, machine=machine)
    print(report(args, budget, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
