"""Training step time: static sparse (masks) vs dense, same model, same batches.

For each model (the small CNN and a ResNet-20 on 28x28x1 inputs), builds a
dense model and `keras_sparse.sparsify(..., sparsity=0.9, distribution="erk")`
of the same architecture, compiles both with the same SGD optimizer, warms
both up, then alternates them in one process: each round times `--steps`
`train_on_batch` calls of one model then the other on the same fixed batches
(the order flips every round). Many short rounds keep both models equally
exposed to other load on a shared machine. Reports the median per-step time over rounds
and the sparse/dense ratio (the issue's target is <= 1.03x), plus the median
of the per-round paired ratios.

    python -m benchmarks.step_time            # 40 rounds x 10 steps
    python -m benchmarks.step_time --quick    # 4 rounds x 5 steps

Writes benchmarks/results/step_time.json and step_time.md. This is a
benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

import keras

from benchmarks._common import (
    RESULTS_DIR,
    LoadProbe,
    load_note,
    machine_info,
    machine_markdown,
    markdown_table,
    write_json,
)

TARGET_RATIO = 1.03  # issue: forward masking must keep static masks <= 1.03x dense


def _model_builders() -> dict[str, Callable[[], keras.Model]]:
    from keras_sparse import models

    return {
        "small_cnn": lambda: models.small_cnn(input_shape=(28, 28, 1)),
        "resnet20": lambda: models.cifar_resnet(20, input_shape=(28, 28, 1)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds x 5 steps, 3 warm-up steps")
    parser.add_argument("--models", nargs="+", default=["small_cnn", "resnet20"],
                        choices=["small_cnn", "resnet20"])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per model first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--distribution", default="erk", choices=["uniform", "er", "erk"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup = 4, 5, 3
    for name in ("rounds", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, received {getattr(args, name)}")
    return args


def fixed_batches(num_batches: int, batch_size: int, seed: int) -> tuple[list, list, str]:
    """Real Fashion-MNIST batches when available, else seeded random arrays."""
    from keras_sparse.datasets import load_fashion_mnist

    n = num_batches * batch_size
    try:
        (x, y), _ = load_fashion_mnist(allow_download=False)
        x, y, source = x[:n], y[:n], "fashion_mnist"
    except FileNotFoundError:
        rng = np.random.default_rng(seed)
        x = rng.uniform(size=(n, 28, 28, 1)).astype("float32")
        y = rng.integers(0, 10, size=(n,))
        source = "random"
    xs = [x[i * batch_size:(i + 1) * batch_size] for i in range(num_batches)]
    ys = [y[i * batch_size:(i + 1) * batch_size] for i in range(num_batches)]
    return xs, ys, source


def _compile(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _time_steps(model: keras.Model, xs: list, ys: list, steps: int) -> tuple[float, float]:
    """Wall and process-CPU seconds per step over `steps` train_on_batch calls.

    Each call returns numpy, so every step is complete when the clock stops.
    CPU time sums all threads of this process: it is much less sensitive than
    wall time to other processes competing for the CPUs of a shared machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        j = i % len(xs)
        model.train_on_batch(xs[j], ys[j])
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def bench_model(name: str, args: argparse.Namespace, xs: list, ys: list, progress) -> dict[str, Any]:
    import keras_sparse as ks

    build = _model_builders()[name]
    keras.utils.set_random_seed(args.seed)
    dense = build()
    keras.utils.set_random_seed(args.seed)
    sparse = ks.sparsify(build(), sparsity=args.sparsity, distribution=args.distribution, seed=args.seed)
    report = ks.sparsity_report(sparse)
    models = {"dense": dense, "sparse": sparse}
    for model in models.values():
        _compile(model)
        for i in range(args.warmup):
            model.train_on_batch(xs[i % len(xs)], ys[i % len(ys)])

    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    cpu_times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for r in range(args.rounds):
        order = ("dense", "sparse") if r % 2 == 0 else ("sparse", "dense")
        for kind in order:
            progress.set_postfix_str(f"{name} round {r + 1}/{args.rounds} {kind}")
            wall, cpu = _time_steps(models[kind], xs, ys, args.steps)
            times[kind].append(wall)
            cpu_times[kind].append(cpu)
            progress.update(1)

    dense_med = statistics.median(times["dense"])
    sparse_med = statistics.median(times["sparse"])
    paired = [s / d for s, d in zip(times["sparse"], times["dense"])]
    dense_cpu = statistics.median(cpu_times["dense"])
    sparse_cpu = statistics.median(cpu_times["sparse"])
    after = ks.sparsity_report(sparse)
    return {
        "model": name,
        "params": int(dense.count_params()),
        "target_sparsity": args.sparsity,
        "actual_sparsity": float(report.total_sparsity),
        "actual_sparsity_after_training": float(after.total_sparsity),
        "distribution": args.distribution,
        "dense_seconds_per_step": times["dense"],
        "sparse_seconds_per_step": times["sparse"],
        "dense_median_ms": 1e3 * dense_med,
        "sparse_median_ms": 1e3 * sparse_med,
        "ratio": sparse_med / dense_med,
        "paired_ratio_median": statistics.median(paired),
        "paired_ratio_min": min(paired),
        "paired_ratio_max": max(paired),
        "dense_cpu_seconds_per_step": cpu_times["dense"],
        "sparse_cpu_seconds_per_step": cpu_times["sparse"],
        "dense_cpu_median_ms": 1e3 * dense_cpu,
        "sparse_cpu_median_ms": 1e3 * sparse_cpu,
        "cpu_ratio": sparse_cpu / dense_cpu,
        "jit_compile": {k: bool(getattr(m, "jit_compile", False)) for k, m in models.items()},
    }


def render_markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rows = [
        [
            r["model"],
            f"{r['params']:,}",
            f"{r['distribution'].upper()} {r['target_sparsity']:.0%} (actual {r['actual_sparsity']:.4f})",
            f"{r['dense_median_ms']:.2f}",
            f"{r['sparse_median_ms']:.2f}",
            f"**{r['ratio']:.3f}x**",
            f"{r['paired_ratio_median']:.3f}x [{r['paired_ratio_min']:.3f}, {r['paired_ratio_max']:.3f}]",
            f"{r['cpu_ratio']:.3f}x" if "cpu_ratio" in r else "n/a",
        ]
        for r in result["results"]
    ]
    table = markdown_table(
        ["model", "params", "sparsity", "dense ms/step", "sparse ms/step",
         "ratio (medians)", "paired ratio median [min, max]", "CPU-time ratio"],
        rows,
    )
    return "\n".join([
        "# Training step time: static sparse vs dense",
        "",
        table,
        "",
        f"Target: ratio <= {TARGET_RATIO}x. Static masks (`keras_sparse.sparsify`), "
        f"batch {cfg['batch_size']}, {cfg['rounds']} alternated rounds x {cfg['steps']} "
        f"`train_on_batch` steps per model after {cfg['warmup']} warm-up steps, "
        f"SGD momentum 0.9, data: {cfg['data']}. Median per-step wall time over rounds; "
        "the CPU-time ratio (process CPU seconds, all threads) is the steadier figure "
        "when other processes share the machine.",
        "",
        machine_markdown(result["machine"]) + _load_note(result),
        "",
    ])


def _load_note(result: dict[str, Any]) -> str:
    """How busy the machine was (`load_note`); reads results written before the probe too."""
    load = result.get("load_average")
    if load is None and result.get("load_average_1min"):  # before 2026-12: 1-min values only
        old = result["load_average_1min"]
        load = {k: [old[k]] for k in ("before", "after") if old.get(k) is not None}
    note = load_note(load, result["machine"].get("cpu_count"))
    return " " + note if note else ""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    args = parse_args(argv)
    num_batches = max(args.steps, args.warmup, 1)
    xs, ys, source = fixed_batches(num_batches, args.batch_size, args.seed)
    probe = LoadProbe()
    results = []
    with tqdm(total=len(args.models) * args.rounds * 2, unit="round", file=sys.stdout) as progress:
        for name in args.models:
            results.append(bench_model(name, args, xs, ys, progress))

    result = {
        "benchmark": "step_time",
        "config": {
            "quick": args.quick, "rounds": args.rounds, "steps": args.steps,
            "warmup": args.warmup, "batch_size": args.batch_size, "seed": args.seed,
            "data": source,
        },
        "machine": machine_info(),
        "load_average": probe.record(),
        "results": results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "step_time.json", result)
    markdown = render_markdown(result)
    (args.out_dir / "step_time.md").write_text(markdown, encoding="utf-8")
    print("\n" + markdown)
    print(f"Wrote {args.out_dir / 'step_time.json'} and {args.out_dir / 'step_time.md'}")
    return result


if __name__ == "__main__":
    main()
