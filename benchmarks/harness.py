"""Accuracy-benchmark harness: method registry, resumable runner, tables.

A *method* is one small function

    fn(model, sparsity, distribution, data, budget, seed) -> (trained, extras)

that receives a freshly built, seeded **dense** Keras model, makes it sparse
its own way, trains it within `budget` (use `train(...)` below so every
method gets the same optimizer, schedule and batches) and returns the
trained model plus a dict of extra metrics (JSON-serializable). The harness
measures test accuracy and the actual final weight sparsity itself, on the
returned model, identically for every method. A method that trains outside
this process (the TF-MOT peer) returns `None` as the model and puts
`test_accuracy` and `final_sparsity` into `extras`.

Register a method with the `register` decorator:

    @register("rigl", label="RigL", kind="dst")
    def _rigl(model, sparsity, distribution, data, budget, seed):
        sparse = ks.sparsify(model, sparsity, distribution, seed=seed)
        return train(sparse, data, budget, seed, callbacks=[...]), {}

Runs are keyed by `(method, model, sparsity, distribution, seed)` plus the
budget: every finished run is appended as one JSON line to a results file,
and a rerun (after a crash or Ctrl-C) skips the keys already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------- data types


@dataclasses.dataclass(frozen=True)
class Budget:
    """The training budget and recipe every method gets (the table states it).

    Attributes:
        epochs, batch_size: the epoch budget and batch size.
        lr: peak learning rate of SGD (momentum `momentum`).
        l2: *coupled* L2 regularization, as PyTorch's `SGD(weight_decay=l2)`
            used by every reference codebase (RigL, ITOP, GraNet, ToST): the
            gradient of every trainable weight gets `+ l2 * w` before the
            momentum update (`CoupledSGD`), i.e. a loss term
            `l2 / 2 * ||w||^2` over all trainable weights.
        weight_decay: Keras's *decoupled* weight decay (`SGD(weight_decay=)`,
            applied as `w -= lr * wd * w` outside the momentum); 0 in the
            recipe. With momentum 0.9 decoupled decay at the same value is
            about 10x weaker than the coupled L2 above.
        warmup_epochs: linear learning-rate warm-up from 0 to `lr` over
            this many epochs, then cosine decay to 0 over the rest
            (`keras.optimizers.schedules.CosineDecay` with `warmup_target`).
        train_size: training subset size (None: all 60k images).
        schedule: only `"cosine"`.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    train_size: int | None = None  # None: the full 60k training set
    schedule: str = "cosine"
    l2: float = 5e-4
    warmup_epochs: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def fingerprint(self) -> str:
        """Short stable id: runs with another budget are other runs."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def steps(self, num_examples: int) -> int:
        return self.epochs * math.ceil(num_examples / self.batch_size)

    def warmup_steps(self, num_examples: int) -> int:
        return int(round(self.warmup_epochs * math.ceil(num_examples / self.batch_size)))


@dataclasses.dataclass
class BenchData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = "fashion_mnist"


@dataclasses.dataclass(frozen=True)
class RunKey:
    method: str
    model: str
    sparsity: float
    distribution: str
    seed: int

    def as_tuple(self) -> tuple:
        return (self.method, self.model, round(float(self.sparsity), 6), self.distribution,
                int(self.seed))


MethodFn = Callable[..., tuple[Any, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One row family of the table.

    Attributes:
        name: registry key (snake_case), used on the command line.
        fn: the method function (see the module docstring).
        label: row label in the table.
        kind: "dense", "static", "pai" (prune at init), "dst", "gradual",
            "lth" or "peer"; only used for grouping and plots.
        dense: runs once per (model, seed) at sparsity 0 ("-" distribution).
        available: returns None when the method can run here, else a reason
            (shown in the table as "pending: ...").
        note: one line for the table's footnotes.
    """

    name: str
    fn: MethodFn
    label: str
    kind: str = "static"
    dense: bool = False
    available: Callable[[], str | None] | None = None
    note: str = ""

    def unavailable_reason(self) -> str | None:
        return None if self.available is None else self.available()


REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, label: str | None = None, kind: str = "static", dense: bool = False,
             available: Callable[[], str | None] | None = None, note: str = ""):
    """Decorator adding `fn` to `REGISTRY` under `name`."""

    def wrap(fn: MethodFn) -> MethodFn:
        if name in REGISTRY:
            raise ValueError(f"Method {name!r} is already registered.")
        REGISTRY[name] = MethodSpec(name, fn, label or name, kind, dense, available, note)
        return fn

    return wrap


# ---------------------------------------------------------- shared training


def coupled_sgd():
    """`CoupledSGD`: Keras SGD with PyTorch-style coupled L2 (`weight_decay` of torch.optim.SGD).

    Built lazily (importing Keras at module import would slow the CLI).
    """
    global _COUPLED_SGD
    if _COUPLED_SGD is not None:
        return _COUPLED_SGD
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="keras_sparse_benchmarks")
    class CoupledSGD(keras.optimizers.SGD):
        """SGD whose gradients get `+ l2 * w` before the momentum update.

        This is PyTorch's `SGD(weight_decay=l2)` (coupled L2, the gradient
        of `l2 / 2 * ||w||^2`), applied to every trainable variable, as the
        reference codebases do. Keras's own `weight_decay` is decoupled.
        Pruned entries are zero, so their decay term is zero too. The dense
        gradients captured for RigL-style growth are the loss gradients
        (captured in `optimizer.apply`, before this term), as PyTorch's
        `weight.grad` in the references.
        """

        def __init__(self, l2: float = 0.0, **kwargs):
            super().__init__(**kwargs)
            self.l2 = float(l2)

        def update_step(self, gradient, variable, learning_rate):
            if self.l2:
                gradient = ops.add(gradient, ops.multiply(ops.cast(self.l2, variable.dtype), variable))
            return super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            return {**super().get_config(), "l2": self.l2}

    _COUPLED_SGD = CoupledSGD
    return CoupledSGD


_COUPLED_SGD = None


def recipe_text(budget: Budget) -> str:
    """The optimizer part of a budget in words, for tables' notes."""
    warm = f"linear warm-up over {budget.warmup_epochs:g} epoch(s), then " if budget.warmup_epochs else ""
    decay = f", decoupled weight decay {budget.weight_decay}" if budget.weight_decay else ""
    return (f"SGD lr {budget.lr} momentum {budget.momentum}, {warm}cosine to 0, coupled L2 "
            f"{budget.l2}{decay}")


def learning_rate(budget: Budget, num_examples: int):
    """The budget's schedule: linear warm-up to `lr` (if any), then cosine decay to 0."""
    import keras

    if budget.schedule != "cosine":
        raise ValueError(f"Only the cosine schedule is implemented; received {budget.schedule!r}.")
    steps = budget.steps(num_examples)
    warmup = min(budget.warmup_steps(num_examples), steps - 1)
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(budget.lr, decay_steps=steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - warmup, warmup_target=budget.lr, warmup_steps=warmup)


def compile_model(model, data: BenchData, budget: Budget, loss=None) -> None:
    """SGD (momentum, coupled L2 `budget.l2`, optional decoupled decay) on the budget's schedule.

    Coupled L2 as in the reference codebases (see `Budget` and
    `coupled_sgd`); Keras's decoupled `weight_decay` only if the budget
    asks for it (0 in the recipe).
    """
    import keras

    lr = learning_rate(budget, len(data.x_train))
    model.compile(
        optimizer=coupled_sgd()(l2=budget.l2, learning_rate=lr, momentum=budget.momentum,
                                weight_decay=budget.weight_decay or None),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train(model, data: BenchData, budget: Budget, seed: int, callbacks: Sequence = (),
          loss=None, compile: bool = True, epochs: int | None = None):
    """Compiles (unless `compile=False`) and fits `model` within the budget."""
    import keras

    if compile:
        compile_model(model, data, budget, loss)
    keras.utils.set_random_seed(seed)
    model.fit(data.x_train, data.y_train, batch_size=budget.batch_size,
              epochs=budget.epochs if epochs is None else epochs,
              callbacks=list(callbacks), verbose=0, shuffle=True)
    return model


PROBE_SIZE = 512


def probe_batch(data: BenchData, size: int = PROBE_SIZE, seed: int = 1234) -> np.ndarray:
    """A fixed batch of training images for diagnostics (dormant neurons)."""
    rng = np.random.default_rng(seed)
    return data.x_train[rng.choice(len(data.x_train), size, replace=False)]


def test_accuracy(model, data: BenchData, batch_size: int = 1000) -> float:
    logits = np.asarray(model.predict(data.x_test, batch_size=batch_size, verbose=0))
    return float(np.mean(logits.argmax(-1) == np.asarray(data.y_test).reshape(-1)))


def recalibrate_bn(model, x) -> int:
    """Sets every BatchNorm's moving statistics to those of `x` (one forward pass).

    ResNet-20's BatchNorm layers average their statistics with momentum 0.99,
    so after the few dozen steps this CPU budget affords the moving averages
    still carry about half of their initial (0, 1) values and every row tests
    at chance (10-12%, measured) although training accuracy is ~68%. One
    training-mode pass over `x` with momentum 0 replaces them by the
    statistics of `x` (the "BN re-estimation" of SWA's `bn_update`); weights
    are untouched. Applied identically to every row.

    Returns:
        The number of BatchNormalization layers re-estimated.
    """
    import keras

    from benchmarks._common import reestimate_batchnorm
    from keras_sparse.model_utils import iter_leaf_layers

    bns = [l for l in iter_leaf_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    return reestimate_batchnorm(model, bns, x)


def plain_model(model):
    """`keras_sparse.strip(model)` when it has SparseWrappers, else `model`."""
    import keras_sparse as ks

    return ks.strip(model) if ks.sparse_wrappers(model) else model


def kernel_sparsity(model) -> dict[str, Any]:
    """Measured zeros over every kernel/embedding of a plain model.

    This is the "actual final weight sparsity" of the table: the same count
    for every method (biases and normalization parameters excluded, first
    and last layers included).
    """
    zeros = total = 0
    per_layer = {}
    for layer in model.layers:
        for w in layer.weights:
            leaf = w.path.split("/")[-1]
            if leaf not in ("kernel", "embeddings", "depthwise_kernel", "pointwise_kernel"):
                continue
            value = np.asarray(w.numpy())
            z = int(np.sum(value == 0.0))
            zeros += z
            total += value.size
            per_layer[f"{layer.name}/{leaf}"] = {"size": int(value.size),
                                                 "density": 1.0 - z / value.size}
    return {"final_sparsity": zeros / total if total else 0.0, "num_weights": total,
            "per_layer": per_layer}


def layer_budgets(model, sparsity: float, distribution: str, seed: int) -> dict[str, float]:
    """Per-weight sparsities `{"layer/kernel": s}` that `sparsify` would use.

    Mask makers (SNIP, GraSP, SynFlow, random, LTH) and the TF-MOT peer get
    exactly the per-layer budgets of static random sparse training, so rows
    differ only in *which* weights each layer keeps.
    """
    import keras_sparse as ks
    from keras_sparse.pruning import get_masks

    probe = ks.sparsify(model, sparsity, distribution=distribution, seed=seed)
    return {k: float(1.0 - m.mean()) for k, m in get_masks(probe).items()}


# ------------------------------------------------------------------- runner


def default_results_path(quick: bool) -> Path:
    from benchmarks._common import RESULTS_DIR

    return RESULTS_DIR / ("accuracy_quick.jsonl" if quick else "accuracy.jsonl")


def read_runs(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL results file; a torn last line (killed writer) is ignored."""
    if not Path(path).exists():
        return []
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def record_key(record: Mapping[str, Any]) -> tuple:
    return (RunKey(record["method"], record["model"], record["sparsity"],
                   record["distribution"], record["seed"]).as_tuple(),
            record.get("budget_id"))


def append_run(path: Path, record: Mapping[str, Any]) -> None:
    """Appends one finished run and fsyncs, so a kill loses at most the current run.

    Starts a new line when the file ends in a line cut by a kill, so the
    record is not glued to the torn one (which `read_runs` skips).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = False
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if cut else "") + json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def plan_runs(methods: Iterable[str], models: Iterable[str], sparsities: Iterable[float],
              distributions: Iterable[str], seeds: Iterable[int],
              registry: Mapping[str, MethodSpec] | None = None) -> list[RunKey]:
    """Every key to run, in table order; dense methods once per (model, seed)."""
    registry = REGISTRY if registry is None else registry
    keys: list[RunKey] = []
    for model in models:
        for method in methods:
            spec = registry[method]
            if spec.dense:
                keys += [RunKey(method, model, 0.0, "-", seed) for seed in seeds]
                continue
            for s in sparsities:
                for d in distributions:
                    keys += [RunKey(method, model, float(s), d, seed) for seed in seeds]
    return keys


def run_all(keys: Sequence[RunKey], build_model: Callable[[str, int], Any], data: BenchData,
            budget: Budget, results_path: Path, registry: Mapping[str, MethodSpec] | None = None,
            progress: bool = True, machine: Mapping[str, Any] | None = None,
            retry_failed: bool = True, log: Callable[[str], None] = print,
            fresh_session: bool = True,
            after_each: Callable[[dict], None] | None = None) -> list[dict]:
    """Runs every key not already finished in `results_path` (same budget).

    Each finished run (or failure, with its traceback) is appended at once,
    then `after_each(record)` runs (e.g. re-rendering the partial table).
    Unavailable methods are skipped without a record. Returns the records of
    the runs executed in this call.
    """
    registry = REGISTRY if registry is None else registry
    done = set()
    for rec in read_runs(results_path):
        if rec.get("status") == "ok" or not retry_failed:
            done.add(record_key(rec))
    todo, skipped_unavailable = [], {}
    for key in keys:
        spec = registry[key.method]
        reason = spec.unavailable_reason()
        if reason:
            skipped_unavailable[key.method] = reason
            continue
        if (key.as_tuple(), budget.fingerprint) not in done:
            todo.append(key)
    for name, reason in skipped_unavailable.items():
        log(f"[skip] {name}: {reason}")
    n_done = len(keys) - len(todo) - sum(
        1 for k in keys if k.method in skipped_unavailable)
    if n_done:
        log(f"[resume] {n_done} run(s) already in {results_path}, {len(todo)} to go")
    return run_pending(
        todo,
        lambda key: execute(key, build_model, data, budget, registry[key.method], machine,
                            fresh_session=fresh_session),
        results_path,
        describe=lambda key: f"{key.method} {key.model} {key.sparsity:g} {key.distribution} s{key.seed}",
        progress=progress, log=log, after_each=after_each)


def run_pending(pending: Sequence[Any], run_one: Callable[[Any], dict], results_path: Path,
                describe: Callable[[Any], str], progress: bool = True,
                log: Callable[[str], None] = print,
                after_each: Callable[[dict], None] | None = None) -> list[dict]:
    """Runs `run_one` on each pending item, appending each record at once.

    The one loop every resumable benchmark uses: a tqdm bar over runs (the
    item's `describe` as its label, the last accuracy as its postfix), each
    record appended to `results_path` as soon as it exists (so a killed
    benchmark loses at most the run in progress), and a one-line `[fail]`
    message for records whose status is not "ok", then `after_each(record)`
    if given (its exceptions are logged, never stop the runs). Returns the
    new records.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), unit="run", dynamic_ncols=True)
    new = []
    try:
        for item in pending:
            if bar is not None:
                bar.set_description(describe(item))
            rec = run_one(item)
            append_run(results_path, rec)
            new.append(rec)
            ok = rec.get("status", "ok") == "ok"
            if bar is not None:
                bar.update(1)
                if ok and "test_accuracy" in rec:
                    postfix = {"acc": f"{rec['test_accuracy']:.4f}"}
                    if "final_sparsity" in rec:
                        postfix["sp"] = f"{rec['final_sparsity']:.3f}"
                    bar.set_postfix(postfix)
            if not ok:
                last = (str(rec.get("error") or "").splitlines() or ["(no error message)"])[-1]
                log(f"[fail] {describe(item)}: {last}")
            if after_each is not None:
                try:
                    after_each(rec)
                except Exception as e:  # a report problem must not stop the benchmark
                    log(f"[after_each] {type(e).__name__}: {e}")
    finally:
        if bar is not None:
            bar.close()
    return new


def execute(key: RunKey, build_model, data: BenchData, budget: Budget, spec: MethodSpec,
            machine: Mapping[str, Any] | None = None, fresh_session: bool = True) -> dict[str, Any]:
    """One run: build, call the method, measure; never raises on method errors.

    `fresh_session` clears the Keras session first (memory over hundreds of
    runs); the seed is set either way.
    """
    import keras

    record: dict[str, Any] = {
        "method": key.method, "model": key.model, "sparsity": float(key.sparsity),
        "distribution": key.distribution, "seed": int(key.seed),
        "budget": budget.to_dict(), "budget_id": budget.fingerprint,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if machine:
        record["machine"] = {k: machine[k] for k in ("tensorflow", "keras", "platform")
                             if k in machine}
    start = time.perf_counter()
    try:
        if fresh_session:
            keras.utils.clear_session()
        keras.utils.set_random_seed(key.seed)
        model = build_model(key.model, key.seed)
        trained, extras = spec.fn(model, key.sparsity, key.distribution, data, budget, key.seed)
        extras = dict(extras or {})
        if trained is not None:
            plain = plain_model(trained)
            # Short budgets leave BatchNorm's moving averages unconverged
            # (ResNet-20 then tests at chance); no-op without BatchNorm.
            calibrated = recalibrate_bn(plain, data.x_train[:1000])
            if calibrated:
                extras["bn_reestimated_layers"] = calibrated
            extras.setdefault("test_accuracy", test_accuracy(plain, data))
            measured = kernel_sparsity(plain)
            extras.setdefault("final_sparsity", measured["final_sparsity"])
            extras.setdefault("num_weights", measured["num_weights"])
        missing = [k for k in ("test_accuracy", "final_sparsity") if k not in extras]
        if missing:
            raise ValueError(f"Method {key.method!r} returned no model and no {missing}.")
        record.update(extras)
        record["status"] = "ok"
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a failing method must not stop the table
        record["status"] = "failed"
        record["error"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
    record["seconds"] = time.perf_counter() - start
    return record


# ------------------------------------------------------------------- tables


def aggregate(records: Iterable[Mapping[str, Any]], budget_id: str | None = None
              ) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (method, model, sparsity, distribution).

    Rows of mask-updating methods also carry `itop_mean` (the final ITOP
    rate, mean over seeds) and `churn_mean` (over each run's updates, the
    share of the connections grown at one update that the next one
    dropped; mean over seeds) when their records have them.
    """
    groups: dict[tuple, list] = {}
    failures: dict[tuple, int] = {}
    latest: dict[tuple, Mapping] = {}
    for rec in records:  # the last record of a key wins (retried failures)
        if budget_id is not None and rec.get("budget_id") != budget_id:
            continue
        latest[record_key(rec)] = rec
    for rec in latest.values():
        g = (rec["method"], rec["model"], float(rec["sparsity"]), rec["distribution"])
        if rec.get("status") == "ok":
            groups.setdefault(g, []).append(rec)
        else:
            failures[g] = failures.get(g, 0) + 1
    rows = []
    for g in sorted(set(groups) | set(failures), key=lambda t: (t[1], t[0], t[2], t[3])):
        recs = groups.get(g, [])
        acc = np.array([r["test_accuracy"] for r in recs], float)
        sp = np.array([r["final_sparsity"] for r in recs], float)
        dynamics = {}
        for field, name in (("final_itop_rate", "itop_mean"), ("final_churn_mean", "churn_mean")):
            values = [float(r[field]) for r in recs if r.get(field) is not None]
            if values:
                dynamics[name] = float(np.mean(values))
        rows.append({
            "method": g[0], "model": g[1], "sparsity": g[2], "distribution": g[3],
            "n": len(recs), "failed": failures.get(g, 0),
            "acc_mean": float(acc.mean()) if len(acc) else None,
            "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0 if len(acc) else None,
            "sparsity_mean": float(sp.mean()) if len(sp) else None,
            "seeds": sorted(int(r["seed"]) for r in recs),
            **dynamics,
        })
    return rows


def _cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "-"
    if not row["n"]:
        return f"failed ({row['failed']})"
    pm = f" ± {100 * row['acc_std']:.2f}" if row["n"] > 1 else ""
    fail = f", {row['failed']} failed" if row["failed"] else ""
    dyn = ""
    if row.get("itop_mean") is not None:
        dyn += f", ITOP {row['itop_mean']:.2f}"
    if row.get("churn_mean") is not None:
        dyn += f", churn {row['churn_mean']:.2f}"
    return f"{100 * row['acc_mean']:.2f}{pm} (sp {row['sparsity_mean']:.3f}, n={row['n']}{dyn}{fail})"


def render_table(rows: Sequence[Mapping[str, Any]], registry: Mapping[str, MethodSpec] | None = None,
                 pending: Mapping[str, str] | None = None) -> str:
    """One Markdown table per model: method rows x (sparsity, distribution) columns.

    Cells: test accuracy % mean ± std over seeds, then the measured final
    weight sparsity ("sp"), the number of seeds and, for mask-updating
    methods, the final ITOP rate and the churn (see `aggregate`).
    """
    from benchmarks._common import markdown_table

    registry = REGISTRY if registry is None else registry
    out = []
    for model in sorted({r["model"] for r in rows}):
        mrows = [r for r in rows if r["model"] == model]
        cols = sorted({(r["sparsity"], r["distribution"]) for r in mrows if r["distribution"] != "-"},
                      key=lambda c: (c[0], c[1]))
        if not cols:
            cols = [(0.0, "-")]
        methods = []
        for r in mrows:
            if r["method"] not in methods:
                methods.append(r["method"])
        order = list(registry)
        methods.sort(key=lambda m: order.index(m) if m in order else len(order))
        headers = ["method"] + [f"{s:.0%} {d}" for s, d in cols]
        body = []
        for m in methods:
            label = registry[m].label if m in registry else m
            by_col = {(r["sparsity"], r["distribution"]): r for r in mrows if r["method"] == m}
            if registry.get(m) is not None and registry[m].dense or (0.0, "-") in by_col:
                dense = by_col.get((0.0, "-"))
                body.append([label] + [_cell(dense)] * len(cols))
            else:
                body.append([label] + [_cell(by_col.get(c)) for c in cols])
        for m, reason in (pending or {}).items():
            label = registry[m].label if m in registry else m
            body.append([label] + [f"pending: {reason}"] + ["-"] * (len(cols) - 1))
        out.append(f"#### {model}\n\n" + markdown_table(headers, body))
    return "\n\n".join(out)


# -------------------------------------------------------------------- plots


def clipped_errors(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """`(2, n)` asymmetric error bars in %: ± std over seeds, clipped to [0, 100]."""
    mean = np.array([100 * r["acc_mean"] for r in rows], float)
    std = np.array([100 * (r["acc_std"] or 0.0) for r in rows], float)
    return np.stack([np.minimum(std, mean), np.minimum(std, 100.0 - mean)])


def dodge_offsets(n_methods: int, sparsities: Sequence[float]) -> np.ndarray:
    """Horizontal offsets (in sparsity %) that set `n_methods` markers side by side.

    Methods at the same sparsity would otherwise stack on one vertical line
    with overlapping error bars. The offsets are centred on 0 and together
    span 60% of the smallest gap between the plotted sparsities (1 point when
    only one sparsity is plotted), so neighbouring sparsities never mix.
    """
    xs = sorted({100 * float(x) for x in sparsities})
    gap = min(np.diff(xs)) if len(xs) > 1 else 1.0
    if n_methods == 1:
        return np.zeros(1)  # linspace would put a lone method at the left edge
    return np.linspace(-0.3 * gap, 0.3 * gap, n_methods)


PLOT_PANELS = (("masks trained from the start (static, DST, gradual, peer)", ("static", "dst", "gradual", "peer")),
               ("prune at init and lottery tickets (static random for reference)", ("static", "pai", "lth")))
"""The accuracy plots' panels: title and the method kinds each shows. A plot
has one panel per group with rows; `static` sits in both as the baseline."""


def plot_panels(methods: Sequence[str], registry: Mapping[str, MethodSpec]) -> list[tuple[str, list[str]]]:
    """Splits one plot's methods into `PLOT_PANELS`; methods of other kinds join the first."""
    kinds = {m: registry[m].kind if m in registry else "other" for m in methods}
    known = {k for _, ks in PLOT_PANELS for k in ks}
    candidates = [(title, [m for m in methods if kinds[m] in ks or (i == 0 and kinds[m] not in known)])
                  for i, (title, ks) in enumerate(PLOT_PANELS)]
    panels = [(title, mine) for title, mine in candidates if any(kinds[m] != "static" for m in mine)]
    return panels or [(PLOT_PANELS[0][0], list(methods))]


def plot_accuracy_vs_sparsity(rows: Sequence[Mapping[str, Any]], path: Path,
                              registry: Mapping[str, MethodSpec] | None = None) -> list[Path]:
    """One PNG per (model, distribution): accuracy vs sparsity, error bars over seeds.

    Every method has its own colour and marker (the same in every plot),
    set slightly apart from the others at each sparsity (`dodge_offsets`;
    the ticks stay at the true sparsities); error bars are ± std over
    seeds, clipped to [0, 100] %. Methods trained
    from the start and prune-at-init/ticket methods get a panel each
    (`PLOT_PANELS`), stacked, with the dense line in both.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    registry = REGISTRY if registry is None else registry
    order = list(registry)
    palette = plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors  # a method and its "+ ToST" share a hue
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")

    def style(m):
        """One color and marker per method, the same in every plot (no repeats up to 40 methods)."""
        i = order.index(m) if m in order else len(order) + sorted({r["method"] for r in rows}).index(m)
        return {"color": palette[i % len(palette)], "marker": markers[i % len(markers)]}

    def label(m):
        return registry[m].label if m in registry else m

    written = []
    ok = [r for r in rows if r["n"]]
    for model in sorted({r["model"] for r in ok}):
        dists = sorted({r["distribution"] for r in ok if r["model"] == model} - {"-"})
        dense = [r for r in ok if r["model"] == model and r["distribution"] == "-"]
        for dist in dists:
            mine = [r for r in ok if r["model"] == model and r["distribution"] == dist]
            xs_all = sorted({r["sparsity"] for r in mine})
            methods = sorted({r["method"] for r in mine}, key=lambda m: order.index(m) if m in order else 999)
            panels = plot_panels(methods, registry)
            fig, axes = plt.subplots(len(panels), 1, figsize=(8.4, 3.8 * len(panels)), squeeze=False)
            for ax, (title, panel_methods) in zip(axes[:, 0], panels):
                for r in dense:
                    ax.axhline(100 * r["acc_mean"], color="k", ls="--", lw=1, label=label(r["method"]))
                offsets = dodge_offsets(len(panel_methods), xs_all)
                for m, dx in zip(panel_methods, offsets):
                    pts = sorted((r for r in mine if r["method"] == m), key=lambda r: r["sparsity"])
                    ax.errorbar([100 * p["sparsity"] + dx for p in pts], [100 * p["acc_mean"] for p in pts],
                                yerr=clipped_errors(pts), capsize=3, **style(m), label=label(m))
                ax.set_xlabel("target sparsity (%)")
                ax.set_ylabel("test accuracy (%)")
                ax.set_title(f"{model}, {dist}: {title}" if len(panels) > 1 else f"{model}, {dist}",
                             fontsize=10)
                if xs_all:
                    ax.set_xticks([100 * x for x in xs_all])
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
            fig.tight_layout()
            out = Path(path) / f"accuracy_vs_sparsity_{model}_{dist}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=120, bbox_inches="tight")  # keeps the legend beside the axes
            plt.close(fig)
            written.append(out)
    return written


def plot_density_bars(per_layer: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Per-layer density bars, one group per allocation (e.g. uniform vs ERK)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(per_layer.values())).keys())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.0))
    width = 0.8 / len(per_layer)
    for i, (dist, dens) in enumerate(per_layer.items()):
        ax.bar(np.arange(len(names)) + i * width, [dens.get(n, 1.0) for n in names], width,
               label=dist)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    ax.set_xticklabels([n.replace("/kernel", "") for n in names], rotation=70, ha="right",
                       fontsize=7)
    ax.set_ylabel("density (1 - sparsity)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # never over a bar
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
