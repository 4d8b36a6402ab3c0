"""Distributed scenarios for the reliability suite, each run in its own process.

TensorFlow fixes its device list at the first op, so every scenario that needs
2 logical CPU devices or a `TF_CONFIG` runs as `python -m
benchmarks.rel_distributed <scenario> ...` and prints one JSON line
(`RESULT {...}`) that the tests and `benchmarks/reliability.py` read.

Scenarios:
    mirrored        MirroredStrategy over 2 logical CPUs vs a 1-device run.
    worker INDEX    one MultiWorkerMirroredStrategy worker (TF_CONFIG set by
                    the caller); writes its masks/weights to OUT_DIR.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

GLOBAL_BATCH = 16
EPOCHS = 2
SPARSITY = 0.8
SEED = 3


def _configure_two_cpus():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    return [d.name for d in tf.config.list_logical_devices("CPU")]


_DEVICES = []


def _logical_cpus():
    if not _DEVICES:
        _DEVICES.extend(_configure_two_cpus())
    return list(_DEVICES)


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, size=(64,)).astype("int32")
    return x, y


def _model():
    import keras

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name="rel_net")


def _sparse_compiled(optimizer="sgd"):
    import keras

    import keras_sparse

    sparse = keras_sparse.sparsify(_model(), SPARSITY, distribution="erk", seed=SEED)
    opt = keras.optimizers.SGD(0.05, momentum=0.9) if optimizer == "sgd" else keras.optimizers.Adam(1e-2)
    sparse.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return sparse


def _op_random_pruning(model, epoch, data):
    import keras_sparse

    keras_sparse.pruning.random_pruning(model, 0.9, scope="layer", seed=100 + epoch)


def _op_snip(model, epoch, data):
    import keras
    import keras_sparse

    keras_sparse.pruning.snip(
        model, data, 0.9,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


# Mask-changing operations applied between epochs in both the single-device
# and the distributed run (from a callback, i.e. cross-replica context).
# DST updaters (SET, RigL, ...) belong here once keras_sparse.algorithms lands.
MASK_OPS = {"random_pruning": _op_random_pruning, "snip": _op_snip}


def _mask_op_callback(name, data):
    import keras

    op = MASK_OPS[name]

    class ApplyMaskOp(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                op(self.model, epoch, data)

    return ApplyMaskOp()


def _replica_context_assign_diverges(strategy, model) -> bool:
    """Assigns a replica-dependent mask inside `strategy.run`; True if replicas differ."""
    import numpy as np
    import tensorflow as tf

    import keras_sparse

    mask = keras_sparse.sparse_wrappers(model)[0].masked_weights[0].mask
    before = mask.numpy()

    @tf.function
    def step():
        def fn():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            # replica 0 keeps the mask, replica 1 writes its complement
            flip = tf.cast(rid, tf.float32)
            mask.assign(tf.abs(flip - tf.convert_to_tensor(before)))

        strategy.run(fn)

    step()
    values = _replica_values(mask)
    diverged = not all(np.array_equal(values[0], v) for v in values)
    mask.assign(before)
    return diverged


def _replica_values(variable):
    """numpy values of `variable` on every replica (1 entry if not mirrored)."""
    import numpy as np

    inner = getattr(variable, "value", variable)  # keras.Variable -> tf.Variable
    values = getattr(inner, "values", None)
    if values is None:
        return [np.asarray(variable.numpy())]
    return [np.asarray(v.numpy()) for v in values]


def _snapshot(model):
    """Masks, weights and per-replica consistency facts of a trained model."""
    import numpy as np

    import keras_sparse

    out = {"masks": {}, "weights": {}, "replica_checks": []}
    total = active = 0
    for wrapper in keras_sparse.sparse_wrappers(model):
        for name, weight, mask in wrapper.masked_weights:
            key = f"{wrapper.name}/{name}"
            mask_vals = _replica_values(mask)
            weight_vals = _replica_values(weight)
            out["replica_checks"].append(
                {
                    "key": key,
                    "replicas": len(mask_vals),
                    "mask_kind": type(getattr(mask, "value", mask)).__name__,
                    "masks_identical": all(np.array_equal(mask_vals[0], m) for m in mask_vals),
                    "masks_binary": all(bool(np.all((m == 0) | (m == 1))) for m in mask_vals),
                    "pruned_zero_every_replica": all(
                        bool(np.all(w[m == 0] == 0.0)) for w, m in zip(weight_vals, mask_vals)
                    ),
                    "weights_identical": all(
                        np.array_equal(weight_vals[0], w) for w in weight_vals
                    ),
                    "configured_active": int(
                        round((1 - wrapper.sparsity_of(name)) * mask_vals[0].size)
                    ),
                    "active": int(mask_vals[0].sum()),
                }
            )
            total += mask_vals[0].size
            active += int(mask_vals[0].sum())
            out["masks"][key] = mask_vals[0].astype(int).ravel().tolist()
    for variable in model.trainable_variables:
        out["weights"][variable.path] = np.asarray(variable.numpy()).ravel().tolist()
    out["global_sparsity"] = 1 - active / total
    return out


def run_mirrored(mask_op: str | None = None) -> dict:
    """Same model, data, seed: 1 device vs MirroredStrategy over 2 CPUs."""
    import numpy as np
    import tensorflow as tf

    devices = _logical_cpus()
    x, y = _data()

    callbacks = [_mask_op_callback(mask_op, (x[:32], y[:32]))] if mask_op else []
    single = _sparse_compiled()
    init_masks = _snapshot(single)["masks"]
    single.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
               callbacks=callbacks)
    ref = _snapshot(single)

    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = _sparse_compiled()
    init_masks_equal = all(
        np.array_equal(np.asarray(init_masks[k]), np.asarray(m))
        for k, m in _snapshot(mirrored)["masks"].items()
    )
    mirrored.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                 callbacks=callbacks)
    got = _snapshot(mirrored)
    diverged = _replica_context_assign_diverges(strategy, mirrored)
    max_diff = max(
        float(np.max(np.abs(np.asarray(ref["weights"][k]) - np.asarray(v))))
        for k, v in got["weights"].items()
    )
    return {
        "scenario": "mirrored",
        "mask_op": mask_op,
        "replica_context_assign_diverges": diverged,
        "replicas": int(strategy.num_replicas_in_sync),
        "devices": devices,
        "epochs": EPOCHS,
        "global_batch": GLOBAL_BATCH,
        "init_masks_equal_single": init_masks_equal,
        "masks_equal_single": got["masks"] == ref["masks"],
        "max_abs_weight_diff_vs_single": max_diff,
        "global_sparsity": got["global_sparsity"],
        "replica_checks": got["replica_checks"],
    }


def run_worker(index: int, out_dir: str) -> dict:
    """One MultiWorkerMirroredStrategy worker; TF_CONFIG comes from the caller."""
    import tensorflow as tf

    import keras

    keras.config.disable_traceback_filtering()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = _data()
    with strategy.scope():
        model = _sparse_compiled()
    # Every worker feeds the same global batch; auto-sharding splits it.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    # Keras 3.15 `fit` cannot run under MultiWorkerMirroredStrategy: its
    # symbolic build reduces the first distributed batch with
    # `strategy.reduce`, which fails on a nested PerReplica
    # (keras-team/keras#20585, tensorflow/tensorflow#72388), and its compiled
    # train function then fails in `reduce_per_replica` (scalar logs reduced
    # on axis 0). So each worker runs a minimal custom loop: same model,
    # same Keras optimizer (it all-reduces gradients and applies the
    # MaskConstraint), loss summed over the global batch.
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(iterator):
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True)) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        xb, yb = next(iterator)
        strategy.run(step, args=(xb, yb))

    distributed = strategy.experimental_distribute_dataset(dataset)
    steps = 0
    for _ in range(EPOCHS):
        iterator = iter(distributed)
        for _ in range(len(x) // GLOBAL_BATCH):
            train_step(iterator)
            steps += 1
    snap = _snapshot(model)
    snap["steps"] = steps
    snap["optimizer_iterations"] = int(model.optimizer.iterations.numpy())
    snap.update(
        {
            "scenario": "multi_worker",
            "worker": index,
            "replicas": int(strategy.num_replicas_in_sync),
        }
    )
    with open(os.path.join(out_dir, f"worker{index}.json"), "w") as f:
        json.dump(snap, f)
    return {"worker": index, "replicas": snap["replicas"], "global_sparsity": snap["global_sparsity"]}


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def run_multi_worker(num_workers: int = 2, timeout: float = 240.0) -> dict:
    """Launches `num_workers` worker processes on loopback and compares them.

    Also trains the same model on one device in this process (same global
    batch) to compare weights. Never hangs: workers are killed at `timeout`.
    """
    import subprocess
    import tempfile
    import time

    import numpy as np

    ports = _free_ports(num_workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as out_dir:
        procs = []
        for index in range(num_workers):
            env = dict(os.environ)
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
            env["TF_CPP_MIN_LOG_LEVEL"] = "3"
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.rel_distributed", "worker", str(index), out_dir],
                    cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )
            )
        outputs, timed_out = [], False
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                timed_out = True
                for p in procs:
                    p.kill()
                out, _ = proc.communicate()
            outputs.append(out)
        codes = [p.returncode for p in procs]
        snaps = []
        for index in range(num_workers):
            path = os.path.join(out_dir, f"worker{index}.json")
            if os.path.exists(path):
                with open(path) as f:
                    snaps.append(json.load(f))
    elapsed = time.monotonic() - start
    result = {
        "scenario": "multi_worker",
        "workers": num_workers,
        "return_codes": codes,
        "timed_out": timed_out,
        "seconds": round(elapsed, 1),
    }
    if len(snaps) != num_workers:
        result["error"] = "\n".join(o[-2000:] for o in outputs if o)
        return result
    x, y = _data()
    single = _sparse_compiled()
    single.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    ref = _snapshot(single)
    first = snaps[0]
    result.update(
        {
            "replicas": first["replicas"],
            "masks_identical_across_workers": all(s["masks"] == first["masks"] for s in snaps),
            "weights_identical_across_workers": all(s["weights"] == first["weights"] for s in snaps),
            "masks_equal_single": first["masks"] == ref["masks"],
            "max_abs_weight_diff_vs_single": max(
                float(np.max(np.abs(np.asarray(ref["weights"][k]) - np.asarray(v))))
                for k, v in first["weights"].items()
            ),
            "pruned_zero_every_worker": all(
                c["pruned_zero_every_replica"] for s in snaps for c in s["replica_checks"]
            ),
            "global_sparsity": [s["global_sparsity"] for s in snaps],
        }
    )
    return result


def main(argv):
    if argv[0] == "mirrored":
        ops = argv[1].split(",") if len(argv) > 1 else ["none"]
        result = [run_mirrored(None if op == "none" else op) for op in ops]
    elif argv[0] == "multi_worker":
        result = run_multi_worker(timeout=float(argv[1]) if len(argv) > 1 else 240.0)
    elif argv[0] == "worker":
        result = run_worker(int(argv[1]), argv[2])
    else:
        raise SystemExit(f"unknown scenario {argv[0]!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
