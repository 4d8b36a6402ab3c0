"""Accuracy table: every sparse-training method on Fashion-MNIST, one recipe.

Protocol: Model A = `keras_sparse.models.small_cnn`, Model B =
`keras_sparse.models.cifar_resnet(20, input_shape=(28, 28, 1))`; seeds
0/1/2; test accuracy is mean ± std over seeds, and the *measured* final
sparsity (exact zeros over every kernel of the stripped model, first and
last layers included) stands next to every accuracy.

The recipe (tuned on the dense small CNN only, then used unchanged for
every method): SGD momentum 0.9, batch 128, learning rate `RECIPE_LR` with
a linear warm-up over the first `RECIPE_WARMUP_FRACTION` of training, then
cosine decay to 0 (`keras.optimizers.schedules.CosineDecay` with
`warmup_target`), and *coupled* L2 5e-4 (PyTorch's `SGD(weight_decay=5e-4)`
of the reference codebases: `harness.CoupledSGD` adds `5e-4 * w` to every
trainable weight's gradient before momentum; Keras's decoupled
`weight_decay` is not used). Every DST and gradual method updates masks
every 100 steps (RigL-ITOP: its own long interval, `ITOP_INTERVAL_FRACTION`
of training, see `update_interval`); the TF-MOT peer prunes every 100 steps.

The full table (the default, no flags) runs `full_plan`:
- small CNN, all 60k training images, 10 epochs, ERK 90/95/98%: dense,
  static, SET, RigL, RigL-ITOP, MEST+EM, DSR, Deep-R, NeurRev, GMP,
  GraNet, GraNet-ST (per-layer ERK budgets) and the TF-MOT peer; GraNet and
  GraNet-ST with the paper's global magnitude pruning in a "global" column;
- small CNN, prune-at-init rows at ERK 95/98%: SNIP, GraSP, SynFlow,
  random, each with and without ToST; LTH and LTH + ToST (global column);
- ResNet-20 at ERK 95%, `FULL_TRAIN_SIZE["resnet20"]` images x
  `FULL_EPOCHS["resnet20"]` epochs: dense, static, SET, RigL, RigL-ITOP,
  NeurRev, GMP, GraNet, GraNet-ST and the TF-MOT peer.
Runs go seed-major (every row at seed 0 first), so a partial table already
has every row; `accuracy.md`/`accuracy.json` are re-rendered after every
run, titled PARTIAL until every planned run is in. Start it (resumable:
rerun the same command after any interruption; finished runs are skipped;
the TF-MOT rows need `make tfmot-venv` first, else they show as pending):

    # from the repository root, with the project's venv:
    nohup .venv/bin/python -m benchmarks.accuracy >> benchmarks/results/accuracy.log 2>&1 &

Other modes:

    python -m benchmarks.accuracy --quick         # smoke run (1 epoch on 10k images), minutes
    python -m benchmarks.accuracy --methods dense static --models small_cnn \
        --sparsities 0.9 0.95 --seeds 0 1 2 --epochs 10   # a custom grid
    python -m benchmarks.accuracy --report-only   # re-render table/plots from the JSONL

Resumable: every finished run is appended to
benchmarks/results/accuracy.jsonl (accuracy_quick.jsonl with --quick); a
killed run continues where it stopped, skipping finished
(method, model, sparsity, distribution, seed) keys with the same budget.
Writes accuracy[_quick].json (aggregates, machine, versions, date, the
budget of every model), accuracy[_quick].md and PNG plots into
benchmarks/results/. The earlier 3-epoch, 10k-image table (decoupled weight
decay, no warm-up) is kept as smoke-level output in
`accuracy_quick_3epoch.*`; it cannot rank methods.

Beside every mask-updating row the table shows the final ITOP rate (share
of weights ever active) and the churn: over all updates of a run, the share
of the connections grown at one update that the next update dropped
(`keras_sparse.callbacks.DynamicSparseTraining` logs it as `churn_mean`).

Per-layer budgets: every masked method (static random, random-at-init,
SNIP, GraSP, SynFlow, TF-MOT) gets the per-layer sparsities that
`keras_sparse.sparsify(model, s, distribution)` draws; methods differ only
in which weights each layer keeps. LTH and the global GraNet rows prune by
global magnitude (their own allocation), shown in a "global" column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks import paper_orderings  # noqa: E402
from benchmarks.harness import BenchData, Budget, register, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = ("small_cnn", "resnet20")
DISTRIBUTIONS = ("uniform", "erk")
QUICK_METHODS = ("dense", "static", "snip", "snip_tost", "synflow", "rigl", "neurrev",
                 "tfmot")
QUICK_TRAIN_SIZE = 10_000
QUICK_EPOCHS = 1
TABLE_TRAIN_SIZE = 10_000
"""Training subset of the earlier 3-epoch table (`accuracy_quick_3epoch.*`) and
of the benchmarks that reuse its data (`pai_diagnostics.py`)."""

RECIPE_LR = 0.05
RECIPE_WARMUP_FRACTION = 0.1
"""The recipe's peak learning rate and warm-up (as a fraction of the epochs),
tuned on the dense small CNN only (see `recipe_budget`)."""

FULL_EPOCHS = {"small_cnn": 10, "resnet20": 15}
FULL_TRAIN_SIZE = {"small_cnn": 60_000, "resnet20": 20_000}
DST_INTERVAL = 100
"""Every DST/gradual method (and the TF-MOT peer) updates masks every 100
steps in the full table (RigL's default); RigL-ITOP uses its own interval."""
ITOP_INTERVAL_FRACTION = 4000 / (250 * 391)
"""RigL-ITOP's reference interval, 4000 steps of its 250-epoch CIFAR run (391
steps per epoch at batch 128), as a fraction of training: about 4%."""

FULL_SPARSITIES = (0.9, 0.95, 0.98)
PAI_SPARSITIES = (0.95, 0.98)
SMALL_CNN_ROWS = ("dense", "static", "set", "rigl", "rigl_itop", "mest", "dsr", "deep_r",
                  "neurrev", "gmp", "granet", "granet_st", "tfmot")
GLOBAL_ROWS = ("granet_global", "granet_st_global")
PAI_ROWS = ("snip", "snip_tost", "grasp", "grasp_tost", "synflow", "synflow_tost",
            "random_pai", "random_tost", "lth", "lth_tost")
RESNET_ROWS = ("dense", "static", "set", "rigl", "rigl_itop", "neurrev", "gmp", "granet",
               "granet_st", "tfmot")
RESNET_SPARSITIES = (0.95,)


def recipe_budget(epochs: int, train_size: int | None) -> Budget:
    """The recipe at a given length: SGD 0.9, batch 128, warm-up + cosine, coupled L2 5e-4."""
    return Budget(epochs=epochs, batch_size=128, lr=RECIPE_LR, momentum=0.9, weight_decay=0.0,
                  l2=5e-4, warmup_epochs=round(RECIPE_WARMUP_FRACTION * epochs, 6),
                  train_size=train_size)


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
    lrsi_data = dict(data=(data.x_train, data.y_train), loss=_loss(), seed=seed)
    helper = tost.ToST()
    try:
        prepared = helper.prepare(sparse, **lrsi_data)
    except ValueError:  # e.g. the small CNN: no residual block for a ghost jump
        helper = tost.ToST(ghost_skip=False)
        prepared = helper.prepare(sparse, **lrsi_data)
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

_FIXED_INTERVAL: int | None = None
"""Set by `main` outside `--quick`: `DST_INTERVAL` for every DST/gradual method."""


def update_interval(budget: Budget, n_train: int, method: str | None = None) -> int:
    """The mask-update interval of `method` in this run.

    `--update-interval` overrides everything; RigL-ITOP uses
    `ITOP_INTERVAL_FRACTION` of the training steps (its reference's long
    interval, scaled to this budget), and never less than the others'; in
    the full table every other method
    uses `DST_INTERVAL` (100); a quick (smoke) run uses RigL's 100 steps
    shrunk so short budgets still get ~20 updates.
    """
    if _INTERVAL_OVERRIDE is not None:
        return _INTERVAL_OVERRIDE
    steps = budget.steps(n_train)
    if method == "rigl_itop":  # never shorter than the other methods' interval
        return max(_FIXED_INTERVAL or 1, int(round(ITOP_INTERVAL_FRACTION * steps)))
    if _FIXED_INTERVAL is not None:
        return _FIXED_INTERVAL
    return int(min(100, max(1, steps // 20)))


_DYNAMICS = ("itop_rate", "awakened", "regrown", "drop_fraction", "churn", "churn_mean")


def _history_extras(model) -> dict[str, Any]:
    hist = getattr(getattr(model, "history", None), "history", {}) or {}
    return {f"final_{k}": float(v[-1]) for k, v in hist.items() if k in _DYNAMICS and v}


def train_dst(name: str, model, sparsity, distribution, data, budget, seed):
    """Sparse-to-sparse DST (SET, RigL, RigL-ITOP, MEST, DSR, Deep-R, NeurRev) or
    gradual pruning (GMP, GraNet from dense; GraNet-ST from 50% sparse).

    For the gradual methods `distribution` is the pruning allocation: a
    per-layer one (`"erk"`, ...) or `"global"` (one magnitude ranking over
    all layers, the GraNet paper's); GraNet-ST's 50% start is ERK then.
    """
    import keras_sparse as ks
    from keras_sparse import algorithms, callbacks

    cls = type(algorithms.get(name))
    ui = update_interval(budget, len(data.x_train), name)
    kwargs: dict[str, Any] = dict(update_interval=ui, seed=seed)
    if name in ("gmp", "granet", "granet_st"):
        kwargs.update(sparsity=sparsity, distribution=distribution)
        start = 0.5 if name == "granet_st" else 0.0
        start_distribution = "erk" if distribution == "global" else distribution
        sparse = ks.sparsify(model, start, distribution=start_distribution, seed=seed)
    else:
        sparse = ks.sparsify(model, sparsity, distribution=distribution, seed=seed)
    callback = callbacks.DynamicSparseTraining(cls(**kwargs))
    trained = train(sparse, data, budget, seed, callbacks=[callback])
    return trained, {"update_interval": ui, **_history_extras(trained)}


def _register_dst(name: str, label: str, kind: str = "dst", algorithm: str | None = None,
                  distribution: str | None = None):
    @register(name, label=label, kind=kind, available=_dst_available)
    def _dst(model, sparsity, distribution_=None, data=None, budget=None, seed=0):
        return train_dst(algorithm or name, model, sparsity, distribution or distribution_, data,
                         budget, seed)


for _name, _label in (("set", "SET"), ("rigl", "RigL"),
                      ("rigl_itop", "RigL-ITOP (long interval, drop 0.5 cosine to the end)"),
                      ("mest", "MEST"), ("dsr", "DSR"),
                      ("deep_r", "Deep-R"), ("neurrev", "NeurRev")):
    _register_dst(_name, _label)
for _name, _label in (("gmp", "GMP (from dense)"), ("granet", "GraNet (from dense)"),
                      ("granet_st", "GraNet-ST (from 50%)")):
    _register_dst(_name, _label, kind="gradual")
for _name, _label in (("granet_global", "GraNet (from dense, global pruning)"),
                      ("granet_st_global", "GraNet-ST (from 50% ERK, global pruning)")):
    _register_dst(_name, _label, kind="gradual", algorithm=_name[: -len("_global")],
                  distribution="global")

GLOBAL_METHODS = ("lth", "lth_tost") + GLOBAL_ROWS
"""Methods with no per-layer budget to honour: they run in a "global" column."""


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
            # The full table's 100 steps, --update-interval, or in a quick run the
            # peer's own frequency (steps // 50).
            "frequency": _INTERVAL_OVERRIDE or _FIXED_INTERVAL}))
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
                   help=f"smoke run: small_cnn, {QUICK_EPOCHS} epoch on {QUICK_TRAIN_SIZE} examples, "
                        f"seed 0, 90%%, methods {', '.join(QUICK_METHODS)}")
    p.add_argument("--methods", nargs="+", default=None, help=f"any of: {', '.join(harness.REGISTRY)}")
    p.add_argument("--models", nargs="+", default=None, choices=MODELS)
    p.add_argument("--sparsities", nargs="+", type=float, default=None)
    p.add_argument("--distributions", nargs="+", default=None, choices=DISTRIBUTIONS)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epoch budget (default {FULL_EPOCHS}; quick {QUICK_EPOCHS})")
    p.add_argument("--train-size", type=int, default=None,
                   help=f"training subset (default {FULL_TRAIN_SIZE}; quick {QUICK_TRAIN_SIZE}; "
                        "60000 = all)")
    p.add_argument("--results", type=Path, default=None, help="JSONL file (default benchmarks/results/accuracy[_quick].jsonl)")
    p.add_argument("--report-only", action="store_true", help="only re-render table and plots")
    p.add_argument("--readme", action="store_true",
                   help="print the README's compact tables from the results and exit")
    p.add_argument("--update-interval", type=int, default=None,
                   help="ablation: every DST/gradual method and the peer update masks every N "
                        f"steps (default: {DST_INTERVAL}, RigL-ITOP its own; in --quick "
                        "min(100, steps // 20) for ours, the peer's steps // 50); "
                        "needs --results of its own")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    q = a.quick
    # No grid flag outside --quick: the table (`full_plan`).
    a.full_plan = not q and all(v is None for v in (a.methods, a.sparsities, a.distributions))
    a.methods = a.methods or list(QUICK_METHODS if q else harness.REGISTRY)
    unknown = [m for m in a.methods if m not in harness.REGISTRY]
    if unknown:
        p.error(f"unknown method(s) {unknown}; accepted: {list(harness.REGISTRY)}")
    a.models = a.models or (["small_cnn"] if q else list(MODELS))
    a.sparsities = a.sparsities or ([0.9] if q else list(FULL_SPARSITIES))
    a.distributions = a.distributions or (list(DISTRIBUTIONS) if q else ["erk"])
    a.seeds = a.seeds if a.seeds is not None else ([0] if q else [0, 1, 2])
    a.results = a.results or harness.default_results_path(q)
    for s in a.sparsities:
        if not 0.0 < s < 1.0:
            p.error(f"--sparsities must be in (0, 1); received {s}")
    if a.epochs is not None and a.epochs < 1:
        p.error(f"--epochs must be >= 1; received {a.epochs}")
    if a.train_size is not None and a.train_size < 1:
        p.error(f"--train-size must be >= 1; received {a.train_size}")
    if a.update_interval is not None:
        if a.update_interval < 1:
            p.error(f"--update-interval must be an int >= 1; received {a.update_interval}")
        if a.results.resolve() == harness.default_results_path(q).resolve():
            p.error(f"--update-interval {a.update_interval} is an ablation: pass --results FILE "
                    f"of its own (received the table's {a.results})")
    return a


def budgets(args) -> dict[str, Budget]:
    """The budget of every model of this run: the recipe at each model's length."""
    out = {}
    for model in args.models:
        epochs = args.epochs or (QUICK_EPOCHS if args.quick else FULL_EPOCHS[model])
        size = args.train_size or (QUICK_TRAIN_SIZE if args.quick else FULL_TRAIN_SIZE[model])
        out[model] = recipe_budget(epochs, min(int(size), 60_000))
    return out


def full_plan(models: Sequence[str], seeds: Sequence[int]) -> list[harness.RunKey]:
    """The issue's table, seed-major so every row fills at seed 0 first."""
    def keys_of(model, methods, sparsities, seed):
        out = []
        for m in methods:
            dists = ("global",) if m in GLOBAL_METHODS else ("erk",)
            out += harness.plan_runs([m], [model], sparsities, dists, [seed])
        return out

    keys: list[harness.RunKey] = []
    for model in models:
        for seed in seeds:
            if model == "small_cnn":
                keys += keys_of(model, SMALL_CNN_ROWS, FULL_SPARSITIES, seed)
                keys += keys_of(model, GLOBAL_ROWS, FULL_SPARSITIES, seed)
                keys += keys_of(model, PAI_ROWS, PAI_SPARSITIES, seed)
            else:
                keys += keys_of(model, RESNET_ROWS, RESNET_SPARSITIES, seed)
    return keys


def plan(args) -> list[harness.RunKey]:
    if getattr(args, "full_plan", False):
        return full_plan(args.models, args.seeds)
    keys = []
    for model in args.models:
        for m in args.methods:
            dists = LTH_DISTRIBUTIONS if m in GLOBAL_METHODS else args.distributions
            keys += harness.plan_runs([m], [model], args.sparsities, dists, args.seeds)
    return keys


def top_sparsities(rows, models, fallback) -> dict[str, float]:
    """Each model's highest sparsity with at least one run (else `fallback`'s highest).

    Per model, so a model run only at 95% (ResNet-20) is not drawn at another
    model's 98%.
    """
    return {m: max([r["sparsity"] for r in rows if r["model"] == m and r["n"]] or fallback)
            for m in models}


def erk_density_plot(out_dir: Path, sparsity_of: Mapping[str, float]) -> list[Path]:
    """Per-layer density bars, uniform vs ERK, one plot per model at its sparsity."""
    written = []
    for name, sparsity in sparsity_of.items():
        per = {d: {k: 1.0 - v for k, v in harness.layer_budgets(build_model(name, 0), sparsity, d, 0).items()}
               for d in ("uniform", "erk")}
        names = sorted(set(per["uniform"]) | set(per["erk"]),
                       key=lambda k: list(per["erk"]).index(k) if k in per["erk"] else -1)
        per = {d: {n: per[d].get(n, 1.0) for n in names} for d in per}
        written.append(harness.plot_density_bars(
            per, out_dir / f"density_{name}_{int(round(sparsity * 100))}.png",
            f"{name}: per-layer density at {sparsity:.0%} (uniform vs ERK)"))
    return written


def budget_note(model: str, budget: Budget, n_train: int) -> str:
    """One line stating a model's budget and recipe."""
    warm = (f"linear warm-up over {budget.warmup_epochs:g} epoch(s), then " if budget.warmup_epochs
            else "")
    decay = (f", decoupled weight decay {budget.weight_decay}" if budget.weight_decay else "")
    return (f"{model}: {budget.epochs} epoch(s) on {n_train} Fashion-MNIST training images "
            f"({'subset' if n_train < 60000 else 'all'}), batch {budget.batch_size}, SGD lr "
            f"{budget.lr} momentum {budget.momentum}, {warm}cosine decay to 0, coupled L2 "
            f"{budget.l2} (PyTorch-style weight_decay on every trainable weight){decay}; test on "
            f"the 10k test images.")


def collect_rows(results: Path, model_budgets: Mapping[str, Budget]) -> list[dict[str, Any]]:
    """Aggregated rows of every model, each with its own budget's runs only."""
    records = harness.read_runs(results)
    rows = []
    for model, budget in model_budgets.items():
        rows += harness.aggregate([r for r in records if r.get("model") == model], budget.fingerprint)
    return rows


ORDERINGS_NOTE = (
    "Each paper's claimed ordering, checked pair by pair (`benchmarks/paper_orderings.py`): "
    f"`above` when the paper's higher method leads by more than {paper_orderings.NOISE_SE:g} "
    "standard errors of the difference of the means over seeds, `below` when it trails by as "
    "much, else `within noise`.")


def report(args, model_budgets: Mapping[str, Budget], machine: dict[str, Any],
           n_train: Mapping[str, int]) -> str:
    from benchmarks._common import machine_markdown, write_json

    rows = collect_rows(args.results, model_budgets)
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
    planned = plan(args)
    done = {(r["method"], r["model"], r["sparsity"], r["distribution"]): r["n"] for r in rows}
    partial = any(done.get((k.method, k.model, float(k.sparsity), k.distribution), 0) < len(args.seeds)
                  for k in planned if not harness.REGISTRY[k.method].unavailable_reason())
    plots = harness.plot_accuracy_vs_sparsity(rows, out_dir / f"plots{tag}")
    plots += erk_density_plot(out_dir / f"plots{tag}", top_sparsities(rows, models, args.sparsities))
    title = "Accuracy table" + (" (QUICK smoke run: not the protocol's budget)" if args.quick else "")
    if partial:
        title += " (PARTIAL: runs still missing)"
    notes = [f"Budget, {budget_note(m, b, n_train[m])}" for m, b in model_budgets.items()]
    notes += [
        f"Seeds in the results: {seeds}.",
        "Cells: test accuracy % (mean ± std over seeds), `sp` = measured final sparsity "
        "(exact zeros over all conv/dense kernels of the stripped model, first/last layers "
        "included), n = seeds; for mask-updating methods `ITOP` = final ITOP rate (share of "
        "the masked weights ever active) and `churn` = over all updates, the share of the "
        "connections grown at one update that the next update dropped (means over seeds).",
        "Uniform keeps the first conv dense (RigL's convention), so its measured sparsity "
        "sits slightly under the target; ERK budgets cover every layer.",
        "Models with BatchNorm (ResNet-20): moving statistics re-estimated on 1000 training "
        "images before testing (`harness.recalibrate_bn`), identically for every row.",
    ]
    if args.update_interval is not None:
        notes.append(f"ABLATION: every DST/gradual method and the TF-MOT peer update masks every "
                     f"{args.update_interval} steps (`--update-interval`).")
    elif any(harness.REGISTRY[m].kind in ("dst", "gradual") for m in methods):
        for m, b in model_budgets.items():
            notes.append(
                f"{m}: mask-update interval {update_interval(b, n_train[m])} steps for every "
                f"DST/gradual method"
                + (" and the TF-MOT peer" if _FIXED_INTERVAL is not None
                   else " (the TF-MOT peer: min(100, steps // 50))")
                + f"; RigL-ITOP {update_interval(b, n_train[m], 'rigl_itop')} steps "
                f"({ITOP_INTERVAL_FRACTION:.1%} of training, its reference's 4000 of ~98k).")
    notes += [f"{harness.REGISTRY[m].label}: {harness.REGISTRY[m].note}" for m in methods
              if harness.REGISTRY[m].note]
    orderings = paper_orderings.evaluate(rows)
    md = "\n\n".join([f"## {title}", machine_markdown(machine), "\n".join(f"- {n}" for n in notes),
                      harness.render_table(rows, pending=pending),
                      "Plots: " + ", ".join(f"`{p.relative_to(out_dir)}`" for p in plots),
                      "### The papers' orderings", ORDERINGS_NOTE,
                      paper_orderings.render(orderings, {m: s.label for m, s in harness.REGISTRY.items()})])
    Path(f"{stem}.md").write_text(md + "\n", encoding="utf-8")
    first = next(iter(model_budgets))
    write_json(Path(f"{stem}.json"), {
        "machine": machine, "quick": args.quick, "partial": partial,
        "budgets": {m: {**b.to_dict(), "budget_id": b.fingerprint, "train_size": n_train[m]}
                    for m, b in model_budgets.items()},
        # The first model's budget (small_cnn in the full table), for older readers.
        "budget": model_budgets[first].to_dict(), "budget_id": model_budgets[first].fingerprint,
        "train_size": n_train[first],
        "update_interval": {m: update_interval(b, n_train[m]) for m, b in model_budgets.items()},
        "rows": rows, "pending": pending, "orderings": orderings})
    return md


def _short_cell(row: dict[str, Any] | None) -> str:
    """`mean ± std` in %, one decimal (README tables); n shown unless it is 3."""
    if row is None or not row["n"]:
        return "-"
    text = f"{100 * row['acc_mean']:.1f}" + (f" ± {100 * row['acc_std']:.1f}" if row["n"] > 1 else "")
    return text + ("" if row["n"] == 3 else f" (n={row['n']})")


README_DISTRIBUTIONS = {
    "erk": "ERK per-layer sparsity",
    "uniform": "uniform per-layer sparsity",
    "global": "one global magnitude threshold",
}
"""The README's tables, one per allocation, in this order, with their titles."""
README_KIND_ORDER = ("dense", "static", "dst", "gradual", "peer", "pai", "lth")
"""Row order of the README's tables: masks trained from the start, then masks found before training."""


def readme_table(rows: list[dict[str, Any]], model: str, distribution: str) -> str:
    """The README's compact table of one model and one allocation.

    One column per sparsity that has a result at this allocation; one row per
    method with a result in them, grouped by kind (`README_KIND_ORDER`),
    registry order within a kind, dense first (its one value repeated in
    every column). Empty string when nothing but dense has a result.
    """
    from benchmarks._common import markdown_table

    mine = [r for r in rows if r["model"] == model and r["n"]]
    sparsities = sorted({r["sparsity"] for r in mine
                         if r["distribution"] == distribution and not harness.REGISTRY[r["method"]].dense})
    if not sparsities:
        return ""
    body = []
    specs = sorted(harness.REGISTRY.items(), key=lambda item: README_KIND_ORDER.index(item[1].kind))
    for name, spec in specs:
        by_sparsity = {r["sparsity"]: r for r in mine if r["method"] == name
                       and (spec.dense or r["distribution"] == distribution)}
        cells = ([_short_cell(by_sparsity.get(0.0))] * len(sparsities) if spec.dense
                 else [_short_cell(by_sparsity.get(s)) for s in sparsities])
        if any(c != "-" for c in cells):
            body.append([spec.label] + cells)
    return markdown_table(["method"] + [f"{s:.0%}" for s in sparsities], body)


def readme_tables(rows: list[dict[str, Any]]) -> str:
    """What the README shows: per model, one table per allocation that has results."""
    trainings = [sum(rounds for _, rounds, _ in lth_trajectory(s)) + 1 for s in PAI_SPARSITIES]
    lth_cost = f" (LTH trains {min(trainings)}-{max(trainings)} times the budget)"
    out = []
    for model in MODELS:
        for distribution, title in README_DISTRIBUTIONS.items():
            table = readme_table(rows, model, distribution)
            if table:
                out.append(f"{model}, {title}{lth_cost if distribution == 'global' else ''}:\n\n{table}")
    return "\n\n".join(out)


def main(argv=None) -> int:
    from benchmarks._common import machine_info

    global _INTERVAL_OVERRIDE, _FIXED_INTERVAL
    args = parse_args(argv)
    _INTERVAL_OVERRIDE = args.update_interval
    _FIXED_INTERVAL = None if args.quick else DST_INTERVAL
    model_budgets = budgets(args)
    machine = machine_info()
    datasets: dict[int, BenchData] = {}
    for b in model_budgets.values():
        if b.train_size not in datasets:
            datasets[b.train_size] = load_data(b.train_size)
    data_of = {m: datasets[b.train_size] for m, b in model_budgets.items()}
    n_train = {m: len(d.x_train) for m, d in data_of.items()}
    if args.readme:
        print(readme_tables(collect_rows(args.results, model_budgets)))
        return 0
    if not args.report_only:
        keys = plan(args)
        for model, budget in model_budgets.items():
            mine = [k for k in keys if k.model == model]
            if mine:
                # The table and plots are re-rendered after every run: a
                # partial table (marked PARTIAL) is always on disk to commit.
                harness.run_all(mine, build_model, data_of[model], budget, args.results,
                                progress=not args.no_progress, machine=machine,
                                after_each=lambda rec: report(args, model_budgets, machine, n_train))
    print(report(args, model_budgets, machine, n_train))
    return 0


if __name__ == "__main__":
    sys.exit(main())
