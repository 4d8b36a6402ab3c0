"""The peer: TF-MOT `prune_low_magnitude` + PolynomialDecay, under tf_keras.

Runs in its OWN venv and process (`make tfmot-venv` creates `.venv-tfmot`
with tensorflow, tf_keras of the same version and
tensorflow-model-optimization). It never imports keras_sparse or Keras 3:
TF-MOT only accepts tf_keras (Keras 2) models, and importing it flips a
process to Keras 2. `benchmarks/accuracy.py` calls it through `subprocess`
with the same data (an .npz of the exact arrays), the same budget (epochs,
batch 128, SGD momentum 0.9, warm-up then cosine decay, coupled L2 as
regularizers of L2(l2 / 2), see `build`) and per-layer
target sparsities equal to `keras_sparse.sparsify`'s budgets, then reads
the JSON it writes.

    .venv-tfmot/bin/python benchmarks/peer_tfmot.py --config cfg.json \
        --data data.npz --out result.json

Config: {"model": "small_cnn"|"resnet20", "layer_sparsity": {layer: s},
"budget": {...harness.Budget...}, "seed": int}. Pruning schedule:
PolynomialDecay from 0 to each layer's target over the first 75% of the
training steps (then fine-tuning at the final masks), updated every
`max(1, min(100, steps // 50))` steps, or every `"frequency"` steps when the
config gives one (`accuracy.py --update-interval`). Layers with target 0 are not wrapped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # this process only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def build(name: str, tfk, num_classes: int = 10, l2: float = 0.0):
    """tf_keras twins of keras_sparse.models.small_cnn / cifar_resnet(20), same layer names.

    `l2` is the budget's *coupled* L2 (PyTorch `SGD(weight_decay=l2)`, as
    `harness.CoupledSGD` applies to the keras_sparse rows): every kernel,
    bias and BatchNorm scale/offset gets `tfk.regularizers.L2(l2 / 2)`,
    whose gradient `l2 * w` is the same coupled term.
    """
    L = tfk.layers
    reg = (lambda: tfk.regularizers.L2(l2 / 2.0)) if l2 else (lambda: None)
    w = lambda: {"kernel_regularizer": reg(), "bias_regularizer": reg()}  # noqa: E731
    inputs = tfk.Input((28, 28, 1), name="image")
    if name == "small_cnn":
        x = L.Conv2D(32, 3, name="conv1", **w())(inputs)
        x = L.ReLU(name="relu1")(x)
        x = L.MaxPooling2D(2, name="pool1")(x)
        x = L.Conv2D(64, 3, name="conv2", **w())(x)
        x = L.ReLU(name="relu2")(x)
        x = L.MaxPooling2D(2, name="pool2")(x)
        x = L.Flatten(name="flatten")(x)
        x = L.Dense(256, name="fc1", **w())(x)
        x = L.ReLU(name="relu3")(x)
        return tfk.Model(inputs, L.Dense(num_classes, name="logits", **w())(x), name=name)
    if name != "resnet20":
        raise ValueError(f"Unknown model {name!r}; accepted: small_cnn, resnet20.")

    def conv_bn(x, filters, k, s, prefix):
        x = L.Conv2D(filters, k, strides=s, padding="same", use_bias=False,
                     kernel_initializer="he_normal", kernel_regularizer=reg(),
                     name=f"{prefix}_conv")(x)
        return L.BatchNormalization(gamma_regularizer=reg(), beta_regularizer=reg(),
                                    name=f"{prefix}_bn")(x)

    x = L.ReLU(name="stem_relu")(conv_bn(inputs, 16, 3, 1, "stem"))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            s = 2 if (stage > 0 and block == 0) else 1
            p = f"stage{stage + 1}_block{block + 1}"
            y = L.ReLU(name=f"{p}_1_relu")(conv_bn(x, filters, 3, s, f"{p}_1"))
            y = conv_bn(y, filters, 3, 1, f"{p}_2")
            sc = conv_bn(x, filters, 1, s, f"{p}_shortcut") if (s != 1 or x.shape[-1] != filters) else x
            x = L.ReLU(name=f"{p}_out_relu")(L.Add(name=f"{p}_add")([y, sc]))
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    return tfk.Model(inputs, L.Dense(num_classes, name="logits", **w())(x), name=name)


def recalibrate_bn(model, x, tfk) -> int:
    """tf_keras twin of `harness.recalibrate_bn`: BatchNorm statistics of `x`.

    The keras_sparse rows re-estimate every BatchNorm's moving statistics on
    the first 1000 training images before testing (ResNet-20 tests near
    chance on this short budget otherwise); the peer gets the same step, or
    the comparison would be unfair. Returns the number of layers re-estimated.
    """
    from _common import reestimate_batchnorm  # this script runs from benchmarks/

    bns = [l for l in model.layers if isinstance(l, tfk.layers.BatchNormalization)]
    return reestimate_batchnorm(model, bns, x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    cfg = json.load(open(a.config))
    import tensorflow as tf
    import tf_keras as tfk
    import tensorflow_model_optimization as tfmot

    budget, seed = cfg["budget"], int(cfg["seed"])
    tfk.utils.set_random_seed(seed)
    with np.load(a.data) as d:
        x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    steps = budget["epochs"] * math.ceil(len(x) / budget["batch_size"])
    end_step = max(1, int(0.75 * steps))
    frequency = int(cfg.get("frequency") or max(1, min(100, steps // 50)))
    base = build(cfg["model"], tfk, l2=float(budget.get("l2", 0.0)))
    targets = cfg["layer_sparsity"]
    unknown = sorted(set(targets) - {l.name for l in base.layers})
    if unknown:
        raise ValueError(f"layer_sparsity names layers the tf_keras model lacks: {unknown}")
    sched = tfmot.sparsity.keras.PolynomialDecay

    def wrap(layer):
        s = float(targets.get(layer.name, 0.0))
        if s <= 0.0:
            return layer
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=sched(0.0, s, begin_step=0, end_step=end_step,
                                          frequency=frequency))

    model = tfk.models.clone_model(base, clone_function=wrap)
    warmup = min(int(round(float(budget.get("warmup_epochs", 0.0)) * math.ceil(len(x) / budget["batch_size"]))),
                 steps - 1)
    if warmup > 0:  # the harness's schedule: linear warm-up to lr, then cosine to 0
        lr = tfk.optimizers.schedules.CosineDecay(0.0, decay_steps=steps - warmup,
                                                  warmup_target=budget["lr"], warmup_steps=warmup)
    else:
        lr = tfk.optimizers.schedules.CosineDecay(budget["lr"], decay_steps=steps)
    model.compile(
        optimizer=tfk.optimizers.SGD(lr, momentum=budget["momentum"],
                                     weight_decay=budget["weight_decay"] or None),
        loss=tfk.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=budget["batch_size"], epochs=budget["epochs"], verbose=0,
              shuffle=True, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    seconds = time.perf_counter() - start
    final = tfmot.sparsity.keras.strip_pruning(model)
    calibrated = recalibrate_bn(final, x[:1000], tfk)
    acc = float(np.mean(final.predict(xt, batch_size=1000, verbose=0).argmax(-1) == yt))
    zeros = total = 0
    for layer in final.layers:
        for w in layer.weights:
            if w.name.split("/")[-1].startswith("kernel"):
                v = w.numpy()
                zeros += int(np.sum(v == 0.0))
                total += v.size
    result = {"test_accuracy": acc, "final_sparsity": zeros / total, "num_weights": total,
              "peer_train_seconds": seconds, "peer_end_step": end_step,
              "peer_frequency": frequency, "peer_steps": steps,
              **({"bn_reestimated_layers": calibrated} if calibrated else {}),
              "peer_versions": {"tensorflow": tf.__version__, "tf_keras": tfk.__version__,
                                "tfmot": tfmot.__version__}}
    with open(a.out, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
