"""The papers' CIFAR-10/100 ResNet-32 recipe, any keras_sparse method.

RigL / NeurRev / GraNet-style recipe: ResNet-32 (He et al., width 16),
160 epochs, SGD lr 0.1 momentum 0.9, batch 128 (NeurRev also reports 64),
weight decay 5e-4 (Keras' decoupled `weight_decay` of SGD; the papers'
PyTorch SGD adds it to the gradient instead, which differs slightly under
momentum), random
crop (4-pixel pad) + horizontal flip, per-channel normalization, learning
rate by cosine decay or the step schedule (x0.1 at epochs 80 and 120).
Data through tensorflow-datasets (`pip install -e '.[examples]'`); needs a
network the first time (no fallback: CIFAR is not on these machines).

    python examples/cifar_resnet32_recipe.py --dataset cifar10 --method neurrev \
        --sparsity 0.9 --distribution erk
    python examples/cifar_resnet32_recipe.py --method snip --sparsity 0.95 --tost
    python examples/cifar_resnet32_recipe.py --method lth --sparsity 0.9 --tost
    python examples/cifar_resnet32_recipe.py --smoke   # 2 epochs x 20 steps, synthetic
                                                       # data if tfds is unavailable

Methods: dense, static (random masks), snip, grasp, synflow, random_pai,
lth, and every DST name of `keras_sparse.algorithms` (set, rigl, mest, dsr,
deep_r, neurrev, gmp, granet, granet_st). Writes one JSON line per run to
--out (default benchmarks/results/cifar_resnet32.jsonl).

ToST's Table 1 (Jaiswal et al., ICML 2022) is the fixed-mask rows: `--tost`
trains the mask of static, a prune-at-init method or lth with the ToST
toolkit (ghost skips, ghost Swish, LRSI, label smoothing 0.1) and removes
every tweak at the end, so the evaluated model is the plain sparse ReLU
ResNet (the Swish -> ReLU swap's accuracy change is recorded). `lth` runs
iterative magnitude pruning (Frankle and Carbin 2019) with global magnitude,
20% of the survivors per round, rewinding to initialization (or to step
`--rewind-step`), each round the full recipe: at 90% that is 11 rounds + the
final training, i.e. 12x the budget of the other rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import keras_sparse as ks
except ImportError:  # source checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_sparse as ks

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402  (tf.data input pipeline)

PAI = ("snip", "grasp", "synflow", "random_pai")
FIXED_MASK = ("static", *PAI, "lth")
LTH_PRUNE_PER_ROUND = 0.2
MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    p.add_argument("--method", default="neurrev")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--distribution", default="erk", choices=["uniform", "er", "erk"])
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--epochs", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step"])
    p.add_argument("--update-interval", type=int, default=100, help="DST mask-update interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tost", action="store_true",
                   help="train the fixed mask (static, prune-at-init, lth) with ToST")
    p.add_argument("--rewind-step", type=int, default=0, help="lth: 0 rewinds to init")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap (smoke runs)")
    p.add_argument("--smoke", action="store_true",
                   help="2 epochs x 20 steps, depth 8; synthetic data if tfds cannot load")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "cifar_resnet32.jsonl"))
    a = p.parse_args(argv)
    if a.tost and a.method not in FIXED_MASK:
        p.error(f"--tost trains a fixed mask: use it with one of {', '.join(FIXED_MASK)}; "
                f"received --method {a.method}.")
    if a.smoke:
        a.epochs, a.steps_per_epoch, a.depth, a.update_interval = 2, 20, 8, 10
    return a


def load(args):
    """(train_ds, test_ds, num_classes, num_train, source)."""
    num_classes = 10 if args.dataset == "cifar10" else 100
    try:
        import tensorflow_datasets as tfds

        (train, test), info = tfds.load(args.dataset, split=["train", "test"], as_supervised=True,
                                        with_info=True)
        n, source = info.splits["train"].num_examples, "tensorflow-datasets"
    except Exception as e:  # no tfds, or no network
        if not args.smoke:
            raise SystemExit(f"Cannot load {args.dataset} with tensorflow-datasets: {e}") from e
        print(f"[smoke] tensorflow-datasets unavailable ({type(e).__name__}); synthetic data")
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, num_classes, 512)
        train = test = tf.data.Dataset.from_tensor_slices((x, y))
        n, source = 512, "synthetic (smoke)"
    mean = tf.constant(MEAN[args.dataset]) * 255.0
    std = tf.constant(STD[args.dataset]) * 255.0

    def norm(x, y):
        return (tf.cast(x, tf.float32) - mean) / std, y

    def augment(x, y):
        x = tf.image.pad_to_bounding_box(x, 4, 4, 40, 40)
        x = tf.image.random_crop(x, (32, 32, 3))
        return tf.image.random_flip_left_right(x), y

    train = (train.shuffle(10_000, seed=args.seed).map(norm).map(augment)
             .batch(args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    test = test.map(norm).batch(1000).prefetch(tf.data.AUTOTUNE)
    return train, test, num_classes, n, source


def lr_schedule(args, steps_per_epoch):
    total = args.epochs * steps_per_epoch
    if args.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(args.lr, total)
    bounds = [int(0.5 * total), int(0.75 * total)]  # epochs 80 and 120 of 160
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        bounds, [args.lr, args.lr * 0.1, args.lr * 0.01])


def build(args, num_classes, sample):
    from keras_sparse import algorithms, pruning

    keras.utils.set_random_seed(args.seed)
    model = ks.models.cifar_resnet(args.depth, input_shape=(32, 32, 3), num_classes=num_classes)
    callbacks = []
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if args.method == "dense":
        return model, callbacks
    if args.method == "static":
        return ks.sparsify(model, args.sparsity, args.distribution, seed=args.seed), callbacks
    if args.method in PAI:
        name = "random" if args.method == "random_pai" else args.method
        kw = dict(data=sample, loss=loss) if name in ("snip", "grasp") else {}
        if name == "random":
            kw["seed"] = args.seed
        return pruning.prune_at_init(model, name, args.sparsity, **kw), callbacks
    if args.method == "lth":
        return model, callbacks  # the ticket is found in `main`, with the data
    if args.method not in algorithms.registered_names():
        raise SystemExit(f"Unknown method {args.method!r}; accepted: dense, static, {', '.join(PAI)}, "
                         f"{', '.join(algorithms.registered_names())}")
    cls = type(algorithms.get(args.method))
    kwargs = dict(update_interval=args.update_interval, seed=args.seed)
    start = args.sparsity
    if args.method in ("gmp", "granet", "granet_st"):
        kwargs.update(sparsity=args.sparsity, distribution=args.distribution)
        start = 0.5 if args.method == "granet_st" else 0.0
    sparse = ks.sparsify(model, start, args.distribution, seed=args.seed)
    return sparse, [ks.callbacks.DynamicSparseTraining(cls(**kwargs))]


def compile_recipe(model, args, steps, loss=None):
    """SGD momentum 0.9 with the recipe's schedule and weight decay."""
    model.compile(keras.optimizers.SGD(lr_schedule(args, steps), momentum=0.9,
                                       weight_decay=args.weight_decay or None),
                  loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def find_lottery_ticket(model, args, fit_kwargs, steps):
    """Iterative magnitude pruning to `args.sparsity`; returns the rewound ticket's model."""
    from keras_sparse import lottery

    rounds, fraction = lottery.imp_schedule(args.sparsity, LTH_PRUNE_PER_ROUND)
    compile_recipe(model, args, steps)
    ticket = lottery.find_ticket(model, fit_kwargs, rounds=rounds, prune_per_round=fraction,
                                 rewind_step=args.rewind_step, scope="global")
    return ticket.model, {"lth_rounds": rounds, "lth_prune_per_round": fraction}


def test_arrays(test):
    """The test set as NumPy arrays (ToST's swap report compares predictions)."""
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in test])
    return np.concatenate(xs), np.concatenate(ys)


def main(argv=None):
    args = parse_args(argv)
    train, test, num_classes, n, source = load(args)
    steps = args.steps_per_epoch or n // args.batch_size
    sample = next(iter(train.unbatch().batch(256)))
    model, callbacks = build(args, num_classes, (sample[0].numpy(), sample[1].numpy()))
    fit_kwargs = dict(x=train.repeat(), epochs=args.epochs, steps_per_epoch=steps, verbose=2)
    extras = {}
    start = time.perf_counter()
    if args.method == "lth":
        model, extras = find_lottery_ticket(model, args, fit_kwargs, steps)
    helper = None
    if args.tost:
        from keras_sparse import tost

        helper = tost.ToST(lrsi_iterations=10 if args.smoke else 390,
                           lrsi_batch_size=args.batch_size)
        # LRSI searches the layer-wise init scales on training batches first.
        model = helper.prepare(model, data=train, seed=args.seed,
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        callbacks = [*callbacks, helper.callback()]
    compile_recipe(model, args, steps, helper.loss(from_logits=True) if helper else None)
    model.fit(**fit_kwargs, callbacks=callbacks)
    seconds = time.perf_counter() - start
    if helper is not None:  # back to the plain sparse ReLU ResNet before testing
        model, report = helper.finalize(model, validation_data=test_arrays(test))
        compile_recipe(model, args, steps)
        extras.update({f"tost_{k}": v for k, v in report.items() if isinstance(v, (int, float))})
    _, acc = model.evaluate(test, verbose=0)
    sparsity = ks.sparsity_report(model).total_sparsity if ks.sparse_wrappers(model) else 0.0
    rec = {k: getattr(args, k) for k in ("dataset", "method", "sparsity", "distribution", "depth",
                                         "epochs", "batch_size", "lr", "weight_decay", "schedule",
                                         "seed", "tost", "smoke")}
    rec.update(extras)
    rec.update(test_accuracy=float(acc), final_sparsity=float(sparsity), train_seconds=seconds,
               data_source=source, tensorflow=tf.__version__, keras=keras.__version__,
               gpus=[d.name for d in tf.config.list_physical_devices("GPU")],
               date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    print(json.dumps(rec))
    if not args.smoke:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return rec


if __name__ == "__main__":
    main()
