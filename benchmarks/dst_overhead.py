"""DST overhead: training step-time ratio vs dense, and mask-update latency.

Run: PYTHONPATH=. python benchmarks/dst_overhead.py [--steps 200 --repeats 3]

1. Step time: Model A (conv32-pool-conv64-pool-dense256-dense10) on random
   28x28 batches of 128, 90% ERK, each method at its default update interval
   (100 steps), versus the same dense model; fits alternated in one process,
   median over repeats of the per-step wall (and CPU) time of each fit after
   its first `SKIP_STEPS` steps (a gradient-based DST callback re-traces the
   train function once per `fit`; that one-off cost is not step time). The
   timed steps contain every mask update of the fit.
2. Mask-update latency: `algorithm.update` on synthetic masked weights with
   ResNet-20 conv shapes (~0.27M weights) and a 25M-weight stack (25 x
   1000x1000), 90% sparse, dense gradients given (in training they come from
   the captured step, at no cost). Median of repeats, wall clock and this
   process's CPU time (the update is NumPy; updates over >= 2**20 entries run
   their weights on a thread pool, so CPU time can exceed wall time; on a machine
   loaded by other work the wall clock also counts time spent waiting for a
   core, the CPU time does not).
The 1-minute load average before and after each part is recorded: on the
shared 2-core machines other work inflates every wall-clock figure.
Writes benchmarks/results/dst_overhead.{json,md} (`--out-dir` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sparse as ks  # noqa: E402
from keras_sparse import algorithms as alg  # noqa: E402
from benchmarks._common import LoadProbe, load_note  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "results")


def model_a():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10),
    ])


def config(method):
    return {"sparsity": 0.9} if method in ("gmp", "granet", "granet_st") else {}


def start_sparsity(method):
    return {"gmp": 0.0, "granet": 0.0, "granet_st": 0.5}.get(method, 0.9)


SKIP_STEPS = 10
"""Steps at the start of every timed fit left out of the clock (see `StepClock`)."""


class StepClock(keras.callbacks.Callback):
    """Wall and CPU seconds per step over the batches after the first `skip`.

    A DST callback that needs gradients re-traces the train function when
    its fit begins (`GradientCapture.install`), a one-off cost per `fit`
    call that a dense fit does not pay; the first `skip` steps of every
    timed fit (dense and sparse alike) are therefore left out. No mask
    update falls in them, and every update of the timed steps is counted:
    this callback runs after the DST callback on each batch.
    """

    def __init__(self, skip):
        super().__init__()
        self.skip = skip
        self.start = self.end = None
        self.counted = 0

    def on_train_batch_end(self, batch, logs=None):
        now = (time.perf_counter(), time.process_time())
        if batch == self.skip - 1:
            self.start = now
        elif batch >= self.skip:
            self.end, self.counted = now, batch - self.skip + 1

    def per_step(self):
        return ((self.end[0] - self.start[0]) / self.counted,
                (self.end[1] - self.start[1]) / self.counted)


def step_times(methods, steps, repeats):
    rng = np.random.default_rng(0)
    x = rng.random((128 * steps, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 128 * steps)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build(method):
        keras.utils.set_random_seed(0)
        m = model_a()
        if method != "dense":
            m = ks.sparsify(m, start_sparsity(method), seed=0)
        m.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss)
        m.fit(x[:256], y[:256], batch_size=128, epochs=1, verbose=0)  # trace/compile
        return m

    # optimizer.iterations carries over between repeats (and the 2 warm-up
    # steps), so the schedule must span all of them: with total_steps = steps
    # the stop step (75%) fell inside the first repeat and later repeats timed
    # no mask update. 4x keeps every repeat before the stop step, so each one
    # contains its steps // update_interval updates.
    horizon = 4 * (2 + steps * repeats)

    def timed(model, method):
        cbs = []
        if method != "dense":
            cbs = [ks.callbacks.DynamicSparseTraining({"class_name": method, "config": config(method)},
                                                      total_steps=horizon)]
        clock = StepClock(SKIP_STEPS)
        model.fit(x, y, batch_size=128, epochs=1, callbacks=cbs + [clock], verbose=0)
        return clock.per_step()

    results = {}
    dense = build("dense")
    for method in methods:
        sparse = build(method)
        d, s, dc, sc = [], [], [], []
        for _ in range(repeats):
            wall, cpu = timed(dense, "dense")
            d.append(wall), dc.append(cpu)
            wall, cpu = timed(sparse, method)
            s.append(wall), sc.append(cpu)
        results[method] = {"dense_step_s": float(np.median(d)), "step_s": float(np.median(s)),
                           "ratio": float(np.median(s) / np.median(d)),
                           "cpu_ratio": float(np.median(sc) / np.median(dc))}
        print(f"step time {method:10s} ratio {results[method]['ratio']:.3f}", flush=True)
    return results


def resnet20_shapes():
    shapes = [(3, 3, 3, 16)] + [(3, 3, 16, 16)] * 6 + [(3, 3, 16, 32)] + [(3, 3, 32, 32)] * 5
    shapes += [(3, 3, 32, 64)] + [(3, 3, 64, 64)] * 5 + [(64, 10)]
    return shapes


def update_latency(methods, shapes, repeats, cpu_out=None):
    """Median wall seconds per `algorithm.update`, per method; CPU seconds into `cpu_out`."""
    rng = np.random.default_rng(0)
    out = {}
    for method in methods:
        s0 = start_sparsity(method)
        ts, grads = [], []
        for i, shape in enumerate(shapes):
            m = ks.masks.random_mask(shape, max(s0, 0.0), rng)
            w = (rng.standard_normal(shape).astype("float32") * m)
            ts.append(alg.Target(f"w{i}/kernel", keras.Variable(w), keras.Variable(m), s0))
            grads.append(rng.standard_normal(shape).astype("float32"))
        a = alg.get({"class_name": method, "config": config(method)})
        a.setup(ts, 10_000)
        times, cpu = [], []
        for r in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            a.update(100 * (r + 1), ts, grads)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        out[method] = float(np.median(times))
        if cpu_out is not None:
            cpu_out[method] = float(np.median(cpu))
        print(f"update latency {method:10s} {out[method]:.3f}s wall, {np.median(cpu):.3f}s CPU "
              f"({sum(int(np.prod(s)) for s in shapes):,} weights)", flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(alg.registered_names()))
    p.add_argument("--skip-step-time", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--out-dir", default=OUT)
    p.add_argument("--render-only", action="store_true", help="re-render dst_overhead.md from the JSON")
    args = p.parse_args()
    methods = args.methods.split(",")
    if args.render_only:
        with open(os.path.join(args.out_dir, "dst_overhead.json")) as f:
            render(json.load(f), methods, args.out_dir)
        return
    path = os.path.join(args.out_dir, "dst_overhead.json")
    res = {"load_average": {}, "dates": {}}
    if args.skip_step_time or args.skip_latency:
        # One part re-measured: keep the other part's results (and its date) from the file.
        if os.path.exists(path):
            with open(path) as f:
                res.update(json.load(f))
        res.setdefault("dates", {})
    res.update({"machine": f"{platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
                "keras": keras.__version__, "numpy": np.__version__, "steps": args.steps,
                "repeats": args.repeats})
    if not args.skip_step_time:
        probe = LoadProbe()
        res["step_time"] = step_times(methods, args.steps, args.repeats)
        res["load_average"]["step_time"] = probe.record()
        res["dates"]["step_time"] = time.strftime("%Y-%m-%dT%H:%M")
    if not args.skip_latency:
        res["dates"]["latency"] = time.strftime("%Y-%m-%dT%H:%M")
        probe = LoadProbe()
        res["update_cpu_resnet20_s"], res["update_cpu_25m_s"] = {}, {}
        res["update_latency_resnet20_s"] = update_latency(methods, resnet20_shapes(), args.repeats,
                                                          res["update_cpu_resnet20_s"])
        res["update_latency_25m_s"] = update_latency(methods, [(1000, 1000)] * 25, args.repeats,
                                                     res["update_cpu_25m_s"])
        res["load_average"]["latency"] = probe.record()
    os.makedirs(args.out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    render(res, methods, args.out_dir)


def render(res, methods, out_dir):
    """Writes dst_overhead.md from the results dict and prints it."""
    def fmt(section, m, key=None):
        v = res.get(section, {}).get(m)
        v = v.get(key) if isinstance(v, dict) else v
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"# DST overhead ({res['machine']}, {res['date']}, keras {res['keras']})", "",
             "| method | step-time ratio vs dense | step CPU-time ratio | update latency ResNet-20 (s) "
             "| update latency 25M (s) | update CPU time 25M (s) |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | {fmt('step_time', m, 'ratio')} | {fmt('step_time', m, 'cpu_ratio')} | "
                     f"{fmt('update_latency_resnet20_s', m)} | "
                     f"{fmt('update_latency_25m_s', m)} | {fmt('update_cpu_25m_s', m)} |")
    lines.append("")
    for part, load in res["load_average"].items():
        when = res.get("dates", {}).get(part)
        lines.append(f"During the {part.replace('_', '-')} part"
                     + (f" (measured {when})" if when else "")
                     + ": " + load_note(load, os.cpu_count()))
    lines += ["", "Step-time rows: model A, random batches, each timed `fit` of `steps` steps "
              "alternated with a dense one, medians over `repeats` of the time per step after the "
              f"first {SKIP_STEPS} steps of each fit (the one-off re-trace of a gradient-capturing "
              "callback is left out); the DST schedule spans all "
              "repeats, so every timed fit contains steps // 100 mask updates. The wall-clock "
              "ratio is noisy on this shared 2-core machine (dense medians ranged 16-26 ms/step "
              "between methods in one run); the CPU-time ratio is steadier."]
    with open(os.path.join(out_dir, "dst_overhead.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
