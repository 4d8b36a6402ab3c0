"""The peer's training step time: TF-MOT `prune_low_magnitude` vs tf_keras dense.

Runs in its OWN venv and process, like `peer_tfmot.py` (whose tf_keras
model twins it reuses): `make tfmot-venv` creates `.venv-tfmot`.
`benchmarks/cost.py` calls it through `subprocess` and reads the JSON it
writes; it never imports keras_sparse or Keras 3.

Protocol, the same as `benchmarks/dst_overhead.py`'s step-time part for
keras_sparse: random 28x28x1 batches of 128, SGD momentum 0.9, both models
warmed up with a 2-step `fit`, then `--repeats` rounds of one `fit` over
`steps` batches per model, dense and pruned alternated (order flipped every
round); per-step time = fit wall time / steps; medians over rounds. The
pruned model is `prune_low_magnitude` with `PolynomialDecay` from 0 to each
layer's target sparsity over the timed steps, masks updated every
`frequency` steps (TF-MOT's default, 100), with the `UpdatePruningStep`
callback it requires.

    .venv-tfmot/bin/python benchmarks/peer_tfmot_step.py --config cfg.json --out result.json

Config: {"model": "small_cnn"|"resnet20", "layer_sparsity": {layer: s},
"steps": 200, "repeats": 3, "batch_size": 128, "seed": 0, "frequency": 100}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # this process only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from peer_tfmot import build  # noqa: E402  (the tf_keras twins of the library's models)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    with open(a.config) as f:
        cfg = json.load(f)
    import tensorflow as tf
    import tf_keras as tfk
    import tensorflow_model_optimization as tfmot

    steps, repeats = int(cfg["steps"]), int(cfg["repeats"])
    batch, seed = int(cfg.get("batch_size", 128)), int(cfg.get("seed", 0))
    frequency = int(cfg.get("frequency", 100))
    if steps < 1 or repeats < 1:
        raise ValueError(f"steps and repeats must be >= 1; received {steps}, {repeats}")
    rng = np.random.default_rng(seed)
    x = rng.random((batch * steps, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, batch * steps)
    targets = cfg["layer_sparsity"]
    end_step = 2 + steps * repeats  # warm-up + timed steps

    def wrap(layer):
        s = float(targets.get(layer.name, 0.0))
        if s <= 0.0:
            return layer
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(
                0.0, s, begin_step=0, end_step=end_step, frequency=frequency))

    def compiled(pruned: bool):
        tfk.utils.set_random_seed(seed)
        model = build(cfg["model"], tfk)
        if pruned:
            unknown = sorted(set(targets) - {layer.name for layer in model.layers})
            if unknown:
                raise ValueError(f"layer_sparsity names layers the tf_keras model lacks: {unknown}")
            model = tfk.models.clone_model(model, clone_function=wrap)
        model.compile(tfk.optimizers.SGD(0.01, momentum=0.9),
                      tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    models = {"dense": compiled(False), "sparse": compiled(True)}
    callbacks = {"dense": [], "sparse": [tfmot.sparsity.keras.UpdatePruningStep()]}
    for kind, model in models.items():  # trace/compile
        model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, verbose=0,
                  callbacks=callbacks[kind])
    wall = {"dense": [], "sparse": []}
    cpu = {"dense": [], "sparse": []}
    for r in range(repeats):
        for kind in (("dense", "sparse") if r % 2 == 0 else ("sparse", "dense")):
            t, c = time.perf_counter(), time.process_time()
            models[kind].fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks[kind])
            wall[kind].append((time.perf_counter() - t) / steps)
            cpu[kind].append((time.process_time() - c) / steps)
            print(f"round {r + 1}/{repeats} {kind}: {1e3 * wall[kind][-1]:.2f} ms/step", flush=True)

    final = tfmot.sparsity.keras.strip_pruning(models["sparse"])
    zeros = total = 0
    for layer in final.layers:
        if layer.name in targets and float(targets[layer.name]) > 0:
            v = layer.kernel.numpy()
            zeros += int(np.sum(v == 0.0))
            total += v.size
    dense_med, sparse_med = statistics.median(wall["dense"]), statistics.median(wall["sparse"])
    result = {
        "dense_seconds_per_step": wall["dense"], "sparse_seconds_per_step": wall["sparse"],
        "dense_cpu_seconds_per_step": cpu["dense"], "sparse_cpu_seconds_per_step": cpu["sparse"],
        "dense_median_ms": 1e3 * dense_med, "sparse_median_ms": 1e3 * sparse_med,
        "ratio": sparse_med / dense_med,
        "cpu_ratio": statistics.median(cpu["sparse"]) / statistics.median(cpu["dense"]),
        "pruned_layers_sparsity_after": zeros / total if total else None,
        "steps": steps, "repeats": repeats, "batch_size": batch, "frequency": frequency,
        "end_step": end_step,
        "peer_versions": {"tensorflow": tf.__version__, "tf_keras": tfk.__version__,
                          "tfmot": tfmot.__version__},
    }
    with open(a.out, "w") as f:
        json.dump(result, f)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_per_step")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
