"""Distributed scenarios for the reliability suite, each run in its own process.

TensorFlow fixes its device list at the first op, so every scenario that needs
2 logical CPU devices or a `TF_CONFIG` runs as `python -m
benchmarks.rel_distributed <mode> ...` and prints one JSON line
(`RESULT {...}`) that the tests and `benchmarks/reliability.py` read.

Modes:
    mirrored SCENARIOS      MirroredStrategy over 2 logical CPUs (`model.fit`)
                            vs a 1-device `fit` on the same global batches.
    multi_worker SCENARIOS [TIMEOUT]
                            2 MultiWorkerMirroredStrategy worker processes on
                            loopback (custom loop, see `_custom_loop`) vs the
                            same loop on 1 device.
    worker INDEX OUT_DIR SCENARIOS
                            one MWMS worker (TF_CONFIG set by the caller).

SCENARIOS is a comma-separated list (or `all`) of:
    static          fixed masks from `sparsify` (static sparse training).
    dst:<name>      a DST method, every name of
                    `keras_sparse.algorithms.registered_names()`, through
                    `keras_sparse.callbacks.DynamicSparseTraining`
                    (mask updates every 2 steps, over all 8 steps).
    pai:<method>    pruning at init (`snip`, `grasp`, `synflow`, `random`)
                    applied before training, then static training.
    tost            `keras_sparse.tost.ToST` (ghost gates, ghost Swish, LRSI)
                    with its `ToSTCallback` annealing the gates.

What is checked after every training step, on every replica (each
replica's own copy of the variable, not the aggregated read): masks
identical across replicas, binary, pruned weights exactly 0 on every
replica, weights identical across replicas, ghost-gate alphas identical;
the masks after every step equal those of the 1-device run; the sparsity
is exact for the method (see `_sparsity_facts`); final weights equal the
1-device ones within float tolerance.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

GLOBAL_BATCH = 16
NUM_EXAMPLES = 64
EPOCHS = 2
STEPS_PER_EPOCH = NUM_EXAMPLES // GLOBAL_BATCH
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH
UPDATE_INTERVAL = 2
SPARSITY = 0.8
PAI_SPARSITY = 0.9
SEED = 3

DST_NAMES = ("chase", "deep_r", "dsr", "gmp", "granet", "granet_st", "mest", "neurrev", "rigl",
             "rigl_itop", "set")
PAI_METHODS = ("snip", "grasp", "synflow", "random")
# Methods whose every masked weight keeps its count of active entries.
_CONSERVE_PER_WEIGHT = ("deep_r", "mest", "neurrev", "rigl", "rigl_itop", "set")
# Gradual methods: reach SPARSITY over all masked weights at the last update.
_GRADUAL = ("gmp", "granet", "granet_st")


def all_scenarios() -> list[str]:
    return (["static"] + [f"dst:{n}" for n in DST_NAMES]
            + [f"pai:{m}" for m in PAI_METHODS] + ["tost"])


def _parse(arg: str) -> list[str]:
    names = all_scenarios() if arg == "all" else [s for s in arg.split(",") if s]
    unknown = sorted(set(names) - set(all_scenarios()))
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; accepted: {all_scenarios()}")
    return names


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
    x = rng.normal(size=(NUM_EXAMPLES, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, size=(NUM_EXAMPLES,)).astype("int32")
    return x, y


def _model():
    import keras

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
    # fc2 keeps the shape (16 -> 16): the place ToST puts a ghost skip.
    x = keras.layers.Dense(16, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name="rel_net")


def _loss(reduction="sum_over_batch_size"):
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


def _dst_config(name: str) -> dict:
    config = {"update_interval": UPDATE_INTERVAL, "stop_step": TOTAL_STEPS, "seed": 1}
    if name in _GRADUAL:
        config["sparsity"] = SPARSITY
    if name == "deep_r":
        config["temperature"] = 1e-4  # exercises the seeded Langevin noise
    return config


def _start_sparsity(scenario: str) -> float:
    if scenario in ("dst:gmp", "dst:granet"):
        return 0.0  # dense-to-sparse
    if scenario == "dst:granet_st":
        return 0.5
    return SPARSITY


def _build(scenario: str):
    """The compiled sparse model of `scenario` (call inside the strategy scope)."""
    import keras

    import keras_sparse

    model = keras_sparse.sparsify(_model(), _start_sparsity(scenario), distribution="erk", seed=SEED)
    if scenario == "tost":
        # No residual block here: identity ghost gates; joint LRSI needs no data.
        model = keras_sparse.tost.ToST(label_smoothing=0.0, ghost_skip="identity",
                                       lrsi="joint").prepare(model)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), _loss())
    return model


def _apply_pai(scenario: str, model) -> None:
    """Pruning at init on the (already distributed) sparse model, in place."""
    import keras_sparse

    method = scenario.partition(":")[2]
    x, y = _data()
    batch = (x[:32], y[:32])
    if method == "snip":
        keras_sparse.pruning.snip(model, batch, PAI_SPARSITY, loss=_loss())
    elif method == "grasp":
        keras_sparse.pruning.grasp(model, batch, PAI_SPARSITY, loss=_loss())
    elif method == "synflow":
        keras_sparse.pruning.synflow(model, PAI_SPARSITY, iterations=5)
    else:
        keras_sparse.pruning.random_pruning(model, PAI_SPARSITY, seed=11)


def _callbacks(scenario: str) -> list:
    import keras_sparse

    if scenario.startswith("dst:"):
        name = scenario.partition(":")[2]
        return [keras_sparse.callbacks.DynamicSparseTraining(
            {"class_name": name, "config": _dst_config(name)}, total_steps=TOTAL_STEPS)]
    if scenario == "tost":
        return [keras_sparse.tost.ToST(label_smoothing=0.0, ghost_skip="identity",
                                       lrsi="joint").callback(total_steps=TOTAL_STEPS)]
    return []


def _replica_values(variable):
    """numpy values of `variable` on every replica (1 entry if not distributed)."""
    import numpy as np

    inner = getattr(variable, "value", variable)  # keras.Variable -> tf.Variable
    values = getattr(inner, "values", None)
    if values is None:
        return [np.asarray(variable.numpy())]
    return [np.asarray(v.numpy()) for v in values]


def _step_facts(model) -> dict:
    """Per-replica consistency of masks, weights and ghost gates right now."""
    import numpy as np

    import keras_sparse

    facts = {"masks_identical": True, "masks_binary": True, "pruned_zero_every_replica": True,
             "weights_identical": True, "gates_identical": True, "replicas": 0,
             "mask_kind": None, "active": {}, "sizes": {}}
    digest = hashlib.sha1()
    for key, _, _, weight, mask in keras_sparse.masked_weights(model):
        masks = _replica_values(mask)
        weights = _replica_values(weight)
        facts["replicas"] = len(masks)
        facts["mask_kind"] = type(getattr(mask, "value", mask)).__name__
        facts["masks_identical"] &= all(np.array_equal(masks[0], m) for m in masks)
        facts["masks_binary"] &= all(bool(np.all((m == 0) | (m == 1))) for m in masks)
        facts["pruned_zero_every_replica"] &= all(
            bool(np.all(w[m == 0] == 0.0)) for w, m in zip(weights, masks))
        facts["weights_identical"] &= all(np.array_equal(weights[0], w) for w in weights)
        facts["active"][key] = int(masks[0].sum())
        facts["sizes"][key] = int(masks[0].size)
        digest.update(key.encode() + np.ascontiguousarray(masks[0], np.float32).tobytes())
    gates = keras_sparse.tost.ghost_layers(model, keras_sparse.tost.GhostGate)
    alphas = []
    for gate in gates:
        values = _replica_values(gate.alpha)
        facts["gates_identical"] &= all(float(v) == float(values[0]) for v in values)
        alphas.append(float(values[0]))
    facts["ghost_alpha"] = alphas
    facts["mask_digest"] = digest.hexdigest()
    return facts


def _recorder():
    import keras

    class RecordEveryStep(keras.callbacks.Callback):
        """Listed after the mask-changing callback: sees every update's result."""

        def __init__(self):
            super().__init__()
            self.steps = []

        def on_train_begin(self, logs=None):
            self.steps = [_step_facts(self.model)]

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append(_step_facts(self.model))

    return RecordEveryStep()


def _sparsity_facts(scenario: str, steps: list[dict]) -> dict:
    """Is the sparsity exactly what the method promises, after every step?

    - static, tost, dst:{set,rigl,mest,neurrev,deep_r}: every masked weight
      keeps its initial count of active entries at every step;
    - dst:{dsr,chase}: the total count is conserved (both reallocate across
      layers; Chase moves the entries of removed channels);
    - dst:{gmp,granet,granet_st}: the final count is
      `num_active(total, SPARSITY)` (reached at the last update, step 8);
    - pai:*: the count set by the method is kept at every step; global-scope
      methods hit `num_active(total, PAI_SPARSITY)` exactly.
    """
    from keras_sparse.masks import num_active

    first, last = steps[0]["active"], steps[-1]["active"]
    total = sum(steps[0]["sizes"].values())
    name = scenario.partition(":")[2]
    out = {"initial_sparsity": 1 - sum(first.values()) / total,
           "final_sparsity": 1 - sum(last.values()) / total}
    if scenario.startswith("dst:") and name in ("dsr", "chase"):
        out["expected"] = "total active conserved"
        out["exact"] = all(sum(s["active"].values()) == sum(first.values()) for s in steps)
    elif scenario.startswith("dst:") and name in _GRADUAL:
        expected = num_active(total, SPARSITY)
        out["expected"] = f"{expected} active of {total} at the end"
        out["exact"] = sum(last.values()) == expected
    elif scenario.startswith("pai:"):
        kept = all(s["active"] == first for s in steps)
        if name == "random":  # scope "layer": per-weight ERK budgets
            out["expected"] = "per-layer ERK budgets, kept during training"
            out["exact"] = kept
        else:
            expected = num_active(total, PAI_SPARSITY)
            out["expected"] = f"{expected} active of {total}, kept during training"
            out["exact"] = kept and sum(first.values()) == expected
    else:
        out["expected"] = "per-weight active counts conserved"
        out["exact"] = all(s["active"] == first for s in steps)
    return out


def _weights(model) -> dict:
    import numpy as np

    return {f"{i}:{v.path}": np.asarray(v.numpy()).ravel().tolist()
            for i, v in enumerate(model.trainable_variables)}


def _max_diff(a: dict, b: dict) -> float:
    import numpy as np

    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def _summary(steps: list[dict]) -> dict:
    keys = ("masks_identical", "masks_binary", "pruned_zero_every_replica",
            "weights_identical", "gates_identical")
    return {k: all(s[k] for s in steps) for k in keys} | {
        "replicas": steps[-1]["replicas"], "mask_kind": steps[-1]["mask_kind"],
        "steps_checked": len(steps) - 1,
        "ghost_alpha_final": steps[-1]["ghost_alpha"],
    }


def _compare(scenario: str, dist_steps: list[dict], dist_weights: dict,
             ref_steps: list[dict], ref_weights: dict) -> dict:
    digests = [s["mask_digest"] for s in dist_steps]
    ref_digests = [s["mask_digest"] for s in ref_steps]
    return {
        "scenario": scenario,
        **_summary(dist_steps),
        "mask_changes": len({d for d in ref_digests}) - 1,
        "masks_equal_single_every_step": digests == ref_digests,
        "max_abs_weight_diff_vs_single": _max_diff(ref_weights, dist_weights),
        "ghost_alpha_equal_single": dist_steps[-1]["ghost_alpha"] == ref_steps[-1]["ghost_alpha"],
        "sparsity": _sparsity_facts(scenario, dist_steps),
    }


# --------------------------------------------------------------- mirrored
def _fit_run(scenario: str, strategy=None):
    import contextlib

    x, y = _data()
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = _build(scenario)
    if scenario.startswith("pai:"):
        _apply_pai(scenario, model)
    recorder = _recorder()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=_callbacks(scenario) + [recorder])
    return model, recorder.steps


def _replica_context_assign_diverges(strategy, model) -> bool:
    """Assigns a replica-dependent mask inside `strategy.run`; True if replicas differ."""
    import numpy as np
    import tensorflow as tf

    import keras_sparse

    mask = next(keras_sparse.masked_weights(model)).mask
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


def run_mirrored(scenarios: list[str]) -> list[dict]:
    """Each scenario: 1-device `fit` vs MirroredStrategy `fit` over 2 CPUs."""
    import time

    import keras
    import tensorflow as tf

    devices = _logical_cpus()
    strategy = tf.distribute.MirroredStrategy(devices)
    results = []
    for scenario in scenarios:
        start = time.monotonic()
        keras.utils.clear_session()
        single, ref_steps = _fit_run(scenario)
        mirrored, steps = _fit_run(scenario, strategy)
        result = _compare(scenario, steps, _weights(mirrored), ref_steps, _weights(single))
        result.update(mode="mirrored", devices=devices, epochs=EPOCHS, global_batch=GLOBAL_BATCH,
                      seconds=round(time.monotonic() - start, 1))
        if scenario == "static":
            result["replica_context_assign_diverges"] = _replica_context_assign_diverges(
                strategy, mirrored)
        results.append(result)
    return results


# ----------------------------------------------------------- multi worker
def _custom_loop(scenario: str, strategy) -> tuple[list[dict], dict]:
    """Trains `scenario` with a `strategy.run` loop driving the Keras callbacks.

    Keras 3.15 `fit` cannot run under MultiWorkerMirroredStrategy: its
    symbolic build reduces the first distributed batch with `strategy.reduce`,
    which fails on a nested PerReplica (keras-team/keras#20585,
    tensorflow/tensorflow#72388), and its compiled train function then fails
    in `reduce_per_replica` (scalar logs reduced on axis 0). So every worker
    (and the 1-device reference, under the default strategy) runs this loop:
    same model, same Keras optimizer (it all-reduces gradients and applies
    the MaskConstraint), loss summed over the global batch, and the same
    keras_sparse callbacks called through `keras.callbacks.CallbackList` at
    the points `fit` would call them. The train step is traced after
    `on_train_begin`, so a DST callback's gradient capture is in it.
    """
    import keras
    import tensorflow as tf

    x, y = _data()
    with strategy.scope():
        model = _build(scenario)
        model.optimizer.build(model.trainable_variables)
    if scenario.startswith("pai:"):
        _apply_pai(scenario, model)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
    loss_fn = _loss("sum")
    recorder = _recorder()
    callbacks = keras.callbacks.CallbackList(
        _callbacks(scenario) + [recorder], model=model, epochs=EPOCHS, steps=STEPS_PER_EPOCH,
        verbose=0)
    callbacks.on_train_begin()

    @tf.function
    def train_step(iterator):
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True)) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))

        xb, yb = next(iterator)
        strategy.run(step, args=(xb, yb))

    for epoch in range(EPOCHS):
        callbacks.on_epoch_begin(epoch)
        iterator = iter(distributed)
        for batch in range(STEPS_PER_EPOCH):
            callbacks.on_train_batch_begin(batch)
            train_step(iterator)
            callbacks.on_train_batch_end(batch, {})
        callbacks.on_epoch_end(epoch, {})
    callbacks.on_train_end()
    return recorder.steps, _weights(model)


def run_worker(index: int, out_dir: str, scenarios: list[str]) -> dict:
    """One MultiWorkerMirroredStrategy worker; TF_CONFIG comes from the caller."""
    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    out = {"worker": index, "replicas": int(strategy.num_replicas_in_sync), "scenarios": {}}
    for scenario in scenarios:
        steps, weights = _custom_loop(scenario, strategy)
        out["scenarios"][scenario] = {"steps": steps, "weights": weights}
    with open(os.path.join(out_dir, f"worker{index}.json"), "w") as f:
        json.dump(out, f)
    return {"worker": index, "replicas": out["replicas"]}


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


def _launch_workers(scenarios, num_workers, timeout, out_dir):
    import subprocess
    import time

    ports = _free_ports(num_workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    start = time.monotonic()
    procs = []
    for index in range(num_workers):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.rel_distributed", "worker", str(index), out_dir,
             ",".join(scenarios)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
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
    return [p.returncode for p in procs], timed_out, outputs


def run_multi_worker(scenarios: list[str], num_workers: int = 2, timeout: float = 240.0) -> dict:
    """Launches `num_workers` worker processes on loopback and compares them.

    Also runs the same custom loop on one device in this process (same global
    batches) for every scenario. Never hangs: workers are killed at
    `timeout`. A failed start (e.g. a port taken between picking and
    binding) is retried once with new ports.
    """
    import tempfile
    import time

    import tensorflow as tf

    start = time.monotonic()
    for attempt in (1, 2):  # noqa: B007 (read after the loop)
        with tempfile.TemporaryDirectory() as out_dir:
            codes, timed_out, outputs = _launch_workers(scenarios, num_workers, timeout, out_dir)
            snaps = []
            for index in range(num_workers):
                path = os.path.join(out_dir, f"worker{index}.json")
                if os.path.exists(path):
                    with open(path) as f:
                        snaps.append(json.load(f))
        if len(snaps) == num_workers or timed_out:
            break
    result = {"mode": "multi_worker", "workers": num_workers, "return_codes": codes,
              "timed_out": timed_out, "attempts": attempt,
              "seconds_workers": round(time.monotonic() - start, 1)}
    if len(snaps) != num_workers:
        result["error"] = "\n".join(o[-2000:] for o in outputs if o)
        return result
    result["replicas"] = snaps[0]["replicas"]
    default = tf.distribute.get_strategy()
    rows = []
    for scenario in scenarios:
        import keras

        keras.utils.clear_session()
        ref_steps, ref_weights = _custom_loop(scenario, default)
        per_worker = [s["scenarios"][scenario] for s in snaps]
        row = _compare(scenario, per_worker[0]["steps"], per_worker[0]["weights"],
                       ref_steps, ref_weights)
        # Across workers: same masks after every step, same final weights;
        # every worker's own per-replica checks hold.
        row["masks_identical_across_workers_every_step"] = all(
            [s["mask_digest"] for s in w["steps"]] == [s["mask_digest"] for s in per_worker[0]["steps"]]
            for w in per_worker)
        row["weights_identical_across_workers"] = all(
            w["weights"] == per_worker[0]["weights"] for w in per_worker)
        for key in ("pruned_zero_every_replica", "masks_binary", "gates_identical"):
            row[key] = all(_summary(w["steps"])[key] for w in per_worker)
        rows.append(row)
    result["scenarios"] = rows
    result["seconds"] = round(time.monotonic() - start, 1)
    return result


def main(argv):
    if argv[0] == "mirrored":
        result = run_mirrored(_parse(argv[1] if len(argv) > 1 else "static"))
    elif argv[0] == "multi_worker":
        scenarios = _parse(argv[1] if len(argv) > 1 else "static")
        result = run_multi_worker(scenarios, timeout=float(argv[2]) if len(argv) > 2 else 240.0)
    elif argv[0] == "worker":
        result = run_worker(int(argv[1]), argv[2], _parse(argv[3]))
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
