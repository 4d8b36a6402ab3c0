"""A fixed mask (SNIP, GraSP, SynFlow, random or a lottery ticket) trained plainly vs with ToST.

The story of ToST (Jaiswal et al., "Training Your Sparse Neural Network
Better with Any Mask", ICML 2022): take a fixed sparse mask, train it plainly,
then train the same mask with ToST's tweaks (`keras_sparse.tost.ToST`: ghost
skips, ghost Swish annealed to ReLU, layer-wise re-scaled init, label
smoothing), which `ToST.finalize` removes at the end, so the model evaluated
is the plain sparse ReLU network of the original graph. Both accuracies and
both sparsities are printed.

Masks: `--mask snip|grasp|synflow|random` prunes at initialization
(`keras_sparse.pruning.prune_at_init`, global scope); `--mask lth` finds a
lottery ticket by iterative magnitude pruning (`keras_sparse.lottery`:
`imp_schedule` + `find_ticket`, global magnitude, rewind to initialization,
each round the same training budget), once per seed; both variants then
train that same ticket.

Model: the library's CIFAR ResNet (`keras_sparse.models.cifar_resnet`) for
28x28x1 inputs (ghost skips are 1x1 jumps on the convs of residual blocks). Data:
`keras_sparse.datasets.load_fashion_mnist` (Debian's `dataset-fashion-mnist`
files offline, else the Keras downloader), standardized.

    python examples/tost_on_fixed_mask.py --mask snip --sparsity 0.95 --seeds 0 1
    python examples/tost_on_fixed_mask.py --mask lth --sparsity 0.9    # 11 IMP rounds first
    python examples/tost_on_fixed_mask.py --quick --mask lth           # < 1 min: 2k images,
                                                                       # 1 epoch, 2 IMP rounds
    python examples/tost_on_fixed_mask.py --quick --synthetic          # random arrays (tests)
    python examples/tost_on_fixed_mask.py --variants none tost gsk gsw lrsi ls   # per-tweak rows

Prints one JSON line per run and a Markdown table; `--out results.json`
saves the rows. Short budgets are noisy: `python -m benchmarks.accuracy
--methods snip snip_tost lth lth_tost` is the protocol's comparison.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)  # predict-retracing warnings

import numpy as np  # noqa: E402

try:
    import keras_sparse as ks
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_sparse as ks

import keras  # noqa: E402
from keras_sparse import lottery, pruning, tost  # noqa: E402
from keras_sparse.datasets import load_fashion_mnist  # noqa: E402
from keras_sparse.models import cifar_resnet  # noqa: E402

MASKS = ("snip", "grasp", "synflow", "random", "lth")
# "none": the mask trained plainly; "tost": every tweak; the rest: one tweak alone.
VARIANTS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "tost": {},
    "gsk": dict(ghost_skip=True, ghost_swish=False, lrsi=False, label_smoothing=0.0),
    "gsw": dict(ghost_skip=False, ghost_swish=True, lrsi=False, label_smoothing=0.0),
    "lrsi": dict(ghost_skip=False, ghost_swish=False, lrsi=True, label_smoothing=0.0),
    "ls": dict(ghost_skip=False, ghost_swish=False, lrsi=False, label_smoothing=0.1),
}
LTH_MAX_PRUNE = 0.2  # Frankle and Carbin: 20% of the survivors per IMP round
FULL_TRAIN = 20000
QUICK_TRAIN, QUICK_TEST, QUICK_DEPTH, QUICK_LTH_MAX_PRUNE = 2000, 1000, 8, 0.8
LRSI_ITERATIONS, QUICK_LRSI_ITERATIONS = 390, 10
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 256, 128
TOST_LAYERS = (tost.GhostGate, tost.GhostSwish, tost.LRSIScale)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mask", "--method", dest="mask", default="snip",
                   help=f"the fixed mask: one of {', '.join(MASKS)} (default snip)")
    p.add_argument("--sparsity", type=float, default=0.95, help="target fraction of zeros, in (0, 1)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per training run (and per IMP round)")
    p.add_argument("--train-size", type=int, default=None,
                   help=f"use the first N training images (default {FULL_TRAIN}; --quick: {QUICK_TRAIN})")
    p.add_argument("--test-size", type=int, default=None, help="use the first N test images")
    p.add_argument("--depth", type=int, default=20, help="ResNet depth, 6n + 2 (8, 20, 32, ...)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=["none", "tost"],
                   help=f"runs per seed: {', '.join(VARIANTS)} (default: none tost)")
    p.add_argument("--lth-max-prune", type=float, default=None,
                   help=f"lth: largest fraction of survivors pruned per IMP round (default "
                        f"{LTH_MAX_PRUNE}, --quick: {QUICK_LTH_MAX_PRUNE}); the rounds follow "
                        "from keras_sparse.lottery.imp_schedule")
    p.add_argument("--lrsi-iterations", type=int, default=None,
                   help="steps of ToST's LRSI scale search before training (default 390, as "
                        f"the authors' code; --quick: {QUICK_LRSI_ITERATIONS})")
    p.add_argument("--quick", action="store_true",
                   help=f"1 epoch on {QUICK_TRAIN} training / {QUICK_TEST} test images, ResNet-"
                        f"{QUICK_DEPTH}, lth: at most {QUICK_LTH_MAX_PRUNE} of the survivors pruned "
                        "per round (2 rounds up to 96%% sparsity)")
    p.add_argument("--synthetic", action="store_true",
                   help="random arrays of Fashion-MNIST's shape instead of the real data (tests)")
    p.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", default=None, help="write the rows to this JSON file")
    p.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    args = p.parse_args(argv)

    if args.mask not in MASKS:
        p.error(f"--mask must be one of {', '.join(MASKS)}; received {args.mask!r}")
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"--variants accepts {', '.join(VARIANTS)}; received {' '.join(bad)}")
    if not 0.0 < args.sparsity < 1.0:
        p.error(f"--sparsity must be in (0, 1); received {args.sparsity}")
    if args.quick:
        args.epochs, args.depth = 1, QUICK_DEPTH
        if args.lrsi_iterations is None:
            args.lrsi_iterations = QUICK_LRSI_ITERATIONS
        if args.lth_max_prune is None:
            args.lth_max_prune = QUICK_LTH_MAX_PRUNE
        if not args.synthetic:  # synthetic data is small already
            args.train_size = args.train_size or QUICK_TRAIN
            args.test_size = args.test_size or QUICK_TEST
    if args.lth_max_prune is None:
        args.lth_max_prune = LTH_MAX_PRUNE
    if args.lrsi_iterations is None:
        args.lrsi_iterations = LRSI_ITERATIONS
    if args.lrsi_iterations < 1:
        p.error(f"--lrsi-iterations must be >= 1; received {args.lrsi_iterations}")
    if args.train_size is None:
        args.train_size = SYNTHETIC_TRAIN if args.synthetic else FULL_TRAIN
    if not 0.0 < args.lth_max_prune < 1.0:
        p.error(f"--lth-max-prune must be in (0, 1); received {args.lth_max_prune}")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; received {getattr(args, name)}")
    for name in ("train_size", "test_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; received {value}")
    if args.depth < 8 or (args.depth - 2) % 6:
        p.error(f"--depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...); received {args.depth}")
    if not args.lr > 0:
        p.error(f"--lr must be > 0; received {args.lr}")
    return args


def load_data(args: argparse.Namespace):
    """((x_train, y_train), (x_test, y_test)): subset, standardized by the training mean/std."""
    if args.synthetic:
        rng = np.random.default_rng(0)
        n, nt = args.train_size, args.test_size or SYNTHETIC_TEST
        x = rng.random((n + nt, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, n + nt)
        (x, y), (xt, yt) = (x[:n], y[:n]), (x[n:], y[n:])
    else:
        (x, y), (xt, yt) = load_fashion_mnist(args.data_dir)
        x, y, xt, yt = x[:args.train_size], y[:args.train_size], xt[:args.test_size], yt[:args.test_size]
    mean, std = x.mean(), x.std()
    return ((x - mean) / std, y), ((xt - mean) / std, yt)


def compile_sgd(model: keras.Model, args: argparse.Namespace, num_examples: int,
                loss: keras.losses.Loss | None = None) -> keras.Model:
    """SGD momentum 0.9, weight decay 5e-4, cosine decay to 0 over one run."""
    steps = args.epochs * math.ceil(num_examples / args.batch_size)
    model.compile(keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(args.lr, steps),
                                       momentum=0.9, weight_decay=5e-4),
                  loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def find_lottery_ticket(args: argparse.Namespace, x, y, seed: int):
    """IMP to `args.sparsity` (global magnitude, rewind to init): (ticket, extras)."""
    rounds, fraction = lottery.imp_schedule(args.sparsity, args.lth_max_prune)
    keras.utils.set_random_seed(seed)
    model = compile_sgd(cifar_resnet(args.depth, input_shape=(28, 28, 1)), args, len(x))
    start = time.perf_counter()
    ticket = lottery.find_ticket(
        model, dict(x=x, y=y, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose),
        rounds=rounds, prune_per_round=fraction, scope="global")
    print(f"lottery ticket (seed {seed}): {rounds} IMP rounds pruning {fraction:.1%} of the "
          f"survivors each, sparsity {ticket.sparsity:.4f}, {time.perf_counter() - start:.0f} s",
          flush=True)
    return ticket, {"lth_rounds": rounds, "lth_prune_per_round": fraction,
                    "lth_seconds": time.perf_counter() - start}


def make_mask(args: argparse.Namespace, x, y, seed: int, ticket=None) -> keras.Model:
    """A fresh ResNet (seed `seed`) with the fixed mask: prune-at-init, or the ticket rewound."""
    keras.utils.set_random_seed(seed)
    model = cifar_resnet(args.depth, input_shape=(28, 28, 1))
    if args.mask == "lth":
        return ticket.apply(model)
    kwargs: dict[str, Any] = {}
    if args.mask in ("snip", "grasp"):
        idx = np.random.default_rng(seed).choice(len(x), min(256, len(x)), replace=False)
        kwargs.update(data=(x[idx], y[idx]),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    elif args.mask == "synflow":
        kwargs.update(iterations=100)
    else:
        kwargs.update(seed=seed)
    return pruning.prune_at_init(model, args.mask, args.sparsity, **kwargs)


def _layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def describe(model: keras.Model) -> dict[str, Any]:
    """What the final plain model is: measured kernel sparsity, activations, ToST layers left."""
    kernels = [keras.ops.convert_to_numpy(w) for w in model.weights if w.path.endswith("kernel")]
    zeros, total = sum(int((k == 0).sum()) for k in kernels), sum(k.size for k in kernels)
    acts = sorted({type(layer).__name__ for layer in _layers(model)
                   if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation, tost.GhostSwish))})
    left = sum(len(tost.ghost_layers(model, cls)) for cls in TOST_LAYERS)
    return {"kernel_zero_fraction": zeros / total, "activations": acts, "tost_layers_left": left}


def train(model: keras.Model, args: argparse.Namespace, data, seed: int,
          tost_kwargs: dict[str, Any] | None = None) -> tuple[keras.Model, dict[str, Any]]:
    """Trains the masked model (with ToST when `tost_kwargs` is not None): (plain model, row)."""
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(seed)
    helper, callbacks, loss = None, [], None
    if tost_kwargs is not None:
        helper = tost.ToST(**{"lrsi_iterations": args.lrsi_iterations, **tost_kwargs})
        model = helper.prepare(model, data=(x, y), seed=seed,
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss, callbacks = helper.loss(from_logits=True), [helper.callback()]
    compile_sgd(model, args, len(x), loss)
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, callbacks=callbacks,
              verbose=args.verbose)
    row: dict[str, Any] = {"train_seconds": time.perf_counter() - start}
    if helper is not None:  # ghost skips removed, LRSI folded, Swish -> ReLU
        model, report = helper.finalize(model, validation_data=(xt, yt))
        row.update({k: v for k, v in report.items() if isinstance(v, (int, float))})
    row["sparsity"] = float(ks.sparsity_report(model).total_sparsity)
    plain = ks.strip(model)  # plain Keras layers, exact zeros
    pred = plain.predict(xt, batch_size=512, verbose=0).argmax(-1)
    row["accuracy"] = float(np.mean(pred == yt))
    row.update(describe(plain))
    return plain, row


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = ["| mask | variant | test acc (mean ± std) | sparsity | swap Δacc |", "|---|---|---|---|---|"]
    for variant in args.variants:
        rs = [r for r in rows if r["variant"] == variant]
        accs = 100 * np.array([r["accuracy"] for r in rs])
        swap = [r["swap_accuracy_change"] for r in rs if "swap_accuracy_change" in r]
        swap_s = f"{100 * np.mean(swap):+.2f} pp" if swap else "-"
        lines.append(f"| {args.mask} {args.sparsity:.0%} | {variant} | {accs.mean():.2f} ± "
                     f"{accs.std():.2f} | {np.mean([r['sparsity'] for r in rs]):.4f} | {swap_s} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    data = load_data(args)
    (x, y), (xt, yt) = data
    print(f"data: {'synthetic' if args.synthetic else 'Fashion-MNIST'}, train {x.shape}, "
          f"test {xt.shape}; ResNet-{args.depth}, {args.mask} mask at {args.sparsity:.0%}, "
          f"{args.epochs} epoch(s)", flush=True)
    rows, models = [], {}
    for seed in args.seeds:
        ticket, extras = (find_lottery_ticket(args, x, y, seed) if args.mask == "lth" else (None, {}))
        for variant in args.variants:
            model = make_mask(args, x, y, seed, ticket)
            plain, row = train(model, args, data, seed, VARIANTS[variant])
            row = {"mask": args.mask, "variant": variant, "seed": seed,
                   "target_sparsity": args.sparsity, "depth": args.depth, "epochs": args.epochs,
                   "train_size": int(len(x)), "test_size": int(len(xt)),
                   "synthetic": args.synthetic, **extras, **row}
            rows.append(row)
            models[f"{variant}/seed{seed}"] = plain
            print(json.dumps(row), flush=True)
    md = table(rows, args)
    print("\n" + md)
    by_variant = {v: [r for r in rows if r["variant"] == v] for v in args.variants}
    if by_variant.get("none") and by_variant.get("tost"):
        plain_acc = np.mean([r["accuracy"] for r in by_variant["none"]])
        tost_acc = np.mean([r["accuracy"] for r in by_variant["tost"]])
        print(f"\n{args.mask} {args.sparsity:.0%}: trained plainly {plain_acc:.4f} (sparsity "
              f"{np.mean([r['sparsity'] for r in by_variant['none']]):.4f}), with ToST {tost_acc:.4f} "
              f"(sparsity {np.mean([r['sparsity'] for r in by_variant['tost']]):.4f}; the plain "
              "sparse ReLU model after every tweak was removed)")
    seconds = time.perf_counter() - start
    print(f"total {seconds:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return {"rows": rows, "table": md, "seconds": seconds, "final_models": models}


if __name__ == "__main__":
    main()
