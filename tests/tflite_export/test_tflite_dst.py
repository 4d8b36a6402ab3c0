"""On-device dynamic sparse training (`export_trainable(algorithm=...)`)."""

import keras
import numpy as np
import pytest

import keras_sparse
import tflite_export
from keras_sparse import masks as mask_math
from tflite_export import _dst
from tflite_export.verify import make_interpreter

B = 8
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def set_scores_np(seed, step, kernel, size):
    """SET's grow scores of a kernel replayed in NumPy: the device graph's
    integer arithmetic (`_dst._mix`), to compare masks with the device."""
    a = (_dst._base(seed, kernel) + int(step) * 7919) % _dst._M
    return _dst._mix(np.arange(size, dtype=np.int64), a, kernel).astype(np.int32)


def update_steps(p):
    """The steps of `p`'s updates: update `j` is at `(first + 1 + j) * interval`."""
    return [(p.first + 1 + j) * p.interval for j in range(len(p.fractions))]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12,)), keras.layers.Dense(24, activation="relu"),
        keras.layers.Dense(5)])


def _sparse(seed=0):
    return keras_sparse.sparsify(_model(seed), 0.7, distribution="uniform",
                                 keep_dense=None, seed=seed)


def _batches(rng, steps):
    xs = rng.standard_normal((steps, B, 12)).astype(np.float32)
    ys = rng.integers(0, 5, (steps, B)).astype(np.int32)
    return xs, ys


def _export(tmp_path, model, algorithm, opt=None, **kw):
    path = str(tmp_path / "dst.tflite")
    report = tflite_export.export_trainable(
        model, path, opt or keras.optimizers.SGD(0.1), LOSS, batch_size=B,
        compare_dense=False, algorithm=algorithm, **kw)
    with open(path, "rb") as f:
        interp = make_interpreter(f.read())
    return report, interp


def _run(interp, xs, ys):
    """Per step: train outputs and get_state after the step."""
    train = interp.get_signature_runner("train")
    get_state = interp.get_signature_runner("get_state")
    outs, states = [], []
    for x, y in zip(xs, ys):
        outs.append({k: float(v) for k, v in train(x=x, y=y).items()})
        states.append({k: np.array(v) for k, v in get_state().items()})
    return outs, states


KERNELS = ("dense_kernel", "dense_1_kernel")


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("algorithm, kw, match", [
    ("nope", {},
     r"Unknown.*'nope'.*On device: \['mest', 'neurrev', 'rigl', 'set'\]"),
    ("dsr", {},
     r"DSR.*cannot run on the device.*\['mest', 'neurrev', 'rigl', 'set'\]"),
    (keras_sparse.algorithms.MEST(stop_step=10), {},
     r"stage_boundaries=\(0.5625, 0.75\).*total_steps=None"),
    ("gmp", {}, r"GMP.*cannot run on the device"),
    (keras_sparse.algorithms.RigLITOP(), {}, r"RigLITOP.*cannot run"),
    (keras_sparse.algorithms.RigL(stop_step=0.75), {},
     r"stop_step=0.75.*total_steps=None.*Pass `total_steps=`"),
    ({"class_name": "set", "config": {"start_step": 0.1, "stop_step": 50}},
     {}, r"start_step=0.1.*total_steps"),
    ("rigl", {"total_steps": 0}, r"total_steps.*Received: 0"),
    (None, {"total_steps": 100}, r"total_steps.*only used with `algorithm=`"),
    (keras_sparse.algorithms.NeurRev(p=0.9, stop_step=10), {},
     r"s - p must be >= 0.*p=0.9"),
    (keras_sparse.algorithms.SET(structure="n:m", stop_step=10), {},
     r"structure='unstructured'.*Received: structure='n:m'"),
])
def test_bad_algorithm_is_refused_before_writing(tmp_path, algorithm, kw,
                                                 match):
    path = tmp_path / "x.tflite"
    with pytest.raises(ValueError, match=match):
        tflite_export.export_trainable(
            keras_sparse.strip(_sparse()), str(path), keras.optimizers.SGD(0.1),
            LOSS, batch_size=B, compare_dense=False, algorithm=algorithm, **kw)
    assert not path.exists()


def test_dense_model_with_algorithm_is_refused(tmp_path):
    path = tmp_path / "x.tflite"
    with pytest.raises(ValueError, match="needs a sparse model"):
        tflite_export.export_trainable(
            _model(), str(path), keras.optimizers.SGD(0.1), LOSS,
            algorithm="rigl", total_steps=100)
    assert not path.exists()


def test_wrong_identifier_type_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="Could not interpret algorithm"):
        tflite_export.export_trainable(
            keras_sparse.strip(_sparse()), str(tmp_path / "x.tflite"),
            keras.optimizers.SGD(0.1), LOSS, algorithm=3.5)


def test_plan_resolves_fractions_and_decay_like_keras():
    algo = keras_sparse.algorithms.RigL(update_interval=10, start_step=0.1,
                                        stop_step=0.5, drop_fraction=0.4)
    p = _dst.plan(algo, 200)
    assert (p.start, p.stop) == (20, 100)
    assert update_steps(p) == [30, 40, 50, 60, 70, 80, 90, 100]
    algo.setup([keras_sparse.algorithms.Target(
        "k", keras.Variable(np.ones((4, 4))),
        keras.Variable(np.ones((4, 4))), 0.0)], 200)
    assert p.fractions == [algo.drop_fraction_at(t) for t in update_steps(p)]
    counts = _dst.drop_counts(p, 37)
    assert counts.tolist() == [round(f * 37) for f in p.fractions]
    assert counts[0] > counts[-1] == 0  # cosine decay down to 0 at stop


# ------------------------------------------------------------ RigL parity

def _keras_masks(sparse, algo, xs, ys):
    """Masks and kernels of a Keras DST fit after every step."""
    sparse.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                   loss=LOSS, jit_compile=False)
    wrappers = [l for l in sparse.layers
                if isinstance(l, keras_sparse.layers.SparseWrapper)]
    record = []

    def after(batch, logs):
        record.append([(np.asarray(w.masked_weights[0][2]) > 0,
                        np.asarray(w.masked_weights[0][1])) for w in wrappers])

    sparse.fit(xs.reshape(-1, 12), ys.reshape(-1), batch_size=B, epochs=1,
               shuffle=False, verbose=0, callbacks=[
                   keras_sparse.callbacks.DynamicSparseTraining(algo),
                   keras.callbacks.LambdaCallback(on_train_batch_end=after)])
    return record


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_rigl_masks_match_the_keras_callback_step_by_step(tmp_path, rng,
                                                          storage):
    steps = 12
    xs, ys = _batches(rng, steps)
    def make():
        return keras_sparse.algorithms.RigL(update_interval=3, stop_step=10, drop_fraction=0.5)

    sparse = _sparse()
    _, interp = _export(tmp_path, keras_sparse.strip(sparse), make(),
                        keras.optimizers.SGD(0.1, momentum=0.9),
                        weight_storage=storage)
    outs, states = _run(interp, xs, ys)
    keras_record = _keras_masks(sparse, make(), xs, ys)
    changed = 0
    for t in range(steps):
        for name, (k_mask, k_w) in zip(KERNELS, keras_record[t]):
            d_mask = states[t][f"{name}__mask"] > 0
            np.testing.assert_array_equal(d_mask, k_mask, err_msg=f"step {t + 1}")
            np.testing.assert_allclose(states[t][name], k_w, atol=1e-5)
            if t and not np.array_equal(d_mask, states[t - 1][f"{name}__mask"] > 0):
                changed += 1
    # Updates at steps 3, 6, 9 changed the masks (a real test of parity).
    assert changed >= 4
    assert [o["regrown"] > 0 for o in outs][2] and outs[0]["regrown"] == 0


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_neurrev_masks_and_reference_match_the_keras_callback(tmp_path,
                                                              rng, storage):
    steps = 12
    xs, ys = _batches(rng, steps)
    def make():
        return keras_sparse.algorithms.NeurRev(update_interval=3, stop_step=10, drop_fraction=0.5, p=0.1)

    sparse = _sparse(2)
    report, interp = _export(tmp_path, keras_sparse.strip(sparse), make(),
                             keras.optimizers.SGD(0.1, momentum=0.9),
                             weight_storage=storage)
    assert {f"{n}__reference" for n in KERNELS} <= set(report.state_names)
    outs, states = _run(interp, xs, ys)
    algo = make()
    keras_record = _keras_masks(sparse, algo, xs, ys)
    woke = 0.0
    for t in range(steps):
        for name, (k_mask, k_w) in zip(KERNELS, keras_record[t]):
            np.testing.assert_array_equal(states[t][f"{name}__mask"] > 0,
                                          k_mask, err_msg=f"step {t + 1}")
            np.testing.assert_allclose(states[t][name], k_w, atol=1e-5)
        woke += outs[t]["awakened"] if (t + 1) % 3 == 0 else 0.0
    # theta* is the weights after the last update (step 9), as in Keras.
    for i, name in enumerate(KERNELS):
        np.testing.assert_allclose(states[-1][f"{name}__reference"],
                                   algo._reference[i], atol=1e-5)
        np.testing.assert_array_equal(states[-1][f"{name}__reference"],
                                      states[8][name])
    assert woke > 0  # Search & Awake pruned negative weights


def test_mest_plan_follows_elastic_mutation_stages():
    algo = keras_sparse.algorithms.MEST(update_interval=50)
    p = _dst.plan(algo, 1000)
    algo.setup([keras_sparse.algorithms.Target(
        "k", keras.Variable(np.ones((4, 4))),
        keras.Variable(np.ones((4, 4))), 0.0)], 1000)
    assert p.fractions == [algo.drop_fraction_at(t) for t in update_steps(p)]
    assert p.gradient_weight == 1.0
    assert p.fractions[0] == pytest.approx(0.2) and 0.1 in p.fractions


def _one_update_at_step_2(tmp_path, rng, algo):
    """Two device steps with `algo` updating at step 2, and the reference.

    Returns `(xs, ys, plain, before, after, w_after_step)`: the batches, the
    stripped model, the state after step 1 and after step 2, and the
    weights after step 2's optimizer step without an update (the same file
    with the update moved past the run).
    """
    xs, ys = _batches(rng, 2)
    plain = keras_sparse.strip(_sparse(1))
    _, interp = _export(tmp_path, plain, algo)
    train = interp.get_signature_runner("train")
    get_state = interp.get_signature_runner("get_state")
    train(x=xs[0], y=ys[0])
    before = get_state()
    _, ref = _export(tmp_path, plain, keras_sparse.algorithms.SET(
        update_interval=3, stop_step=3))
    ref.get_signature_runner("train")(x=xs[0], y=ys[0])
    ref.get_signature_runner("train")(x=xs[1], y=ys[1])
    w_after_step = ref.get_signature_runner("get_weights")()
    train(x=xs[1], y=ys[1])
    return xs, ys, plain, before, get_state(), w_after_step


@pytest.mark.full
def test_mest_update_equals_numpy_replay(tmp_path, rng):
    """Drop by |w| + lambda |g| (g: this batch's dense gradient at the
    weights before the step), grow by the SET hash."""
    import tensorflow as tf

    xs, ys, plain, before, after, w_after_step = _one_update_at_step_2(
        tmp_path, rng, keras_sparse.algorithms.MEST(
            update_interval=2, stop_step=2, drop_fraction=0.4, seed=3,
            drop_fraction_decay="constant", gradient_weight=10.0))
    # The dense gradient of batch 2 at the weights before step 2.
    names = ["dense_kernel", "dense_bias", "dense_1_kernel", "dense_1_bias"]
    plain.set_weights([before[n] for n in names])
    with tf.GradientTape() as tape:
        loss = LOSS(ys[1], plain(xs[1]))
    grads = dict(zip(names, tape.gradient(loss, plain.trainable_variables)))
    differs = []
    for k, name in zip((0, 2), KERNELS):
        m = before[f"{name}__mask"]
        n_drop = int(np.round(0.4 * m.sum()))
        keep = np.abs(w_after_step[name]) + 10 * np.abs(np.asarray(grads[name]))
        grow = set_scores_np(3, 2, k, m.size).reshape(m.shape)
        new_m, grown = mask_math.prune_and_grow(m, keep, grow.astype(float),
                                                n_drop)
        np.testing.assert_array_equal(after[f"{name}__mask"], new_m)
        by_w, _ = mask_math.prune_and_grow(m, np.abs(w_after_step[name]),
                                           grow.astype(float), n_drop)
        differs.append(not np.array_equal(by_w, new_m))
    assert any(differs)  # lambda matters: magnitude alone drops others


# ------------------------------------------------------- SET invariants

@pytest.mark.full
def test_set_invariants_count_zeros_and_reset_slots(tmp_path, rng):
    steps = 10
    xs, ys = _batches(rng, steps)
    algo = keras_sparse.algorithms.SET(update_interval=2, stop_step=8,
                                       drop_fraction=0.5, seed=7)
    plain = keras_sparse.strip(_sparse())
    _, interp = _export(tmp_path, plain, algo,
                        keras.optimizers.Adam(1e-2))
    w0 = interp.get_signature_runner("get_weights")()
    counts = {n: int(np.count_nonzero(w0[n])) for n in KERNELS}
    outs, states = _run(interp, xs, ys)
    p = _dst.plan(algo, None)
    prev = {n: (w0[n] != 0).astype(np.float32) for n in KERNELS}
    total = sum(w0[n].size for n in KERNELS)
    regrown_total = 0
    for t, (out, st) in enumerate(zip(outs, states), start=1):
        new_total = 0
        for n in KERNELS:
            m = st[f"{n}__mask"]
            assert set(np.unique(m)) <= {0.0, 1.0}
            assert int(m.sum()) == counts[n]  # count conserved per kernel
            assert np.all(st[n][m == 0] == 0.0)  # pruned entries exactly 0
            for k in (0, 1):
                assert np.all(st[f"{n}__slot{k}"][m == 0] == 0.0)
            fresh = (m > 0) & (prev[n] == 0)
            if t in update_steps(p):
                assert np.all(st[n][fresh] == 0.0)  # regrown weights 0
                for k in (0, 1):  # ... and their Adam slots reset
                    assert np.all(st[f"{n}__slot{k}"][fresh] == 0.0)
            else:
                assert not fresh.any()
            new_total += int(fresh.sum())
            prev[n] = m
        if t in update_steps(p):
            assert out["regrown"] == new_total
            regrown_total += new_total
        assert out["sparsity"] == pytest.approx(
            1.0 - sum(counts.values()) / total)
    assert regrown_total > 0


@pytest.mark.full
def test_set_update_equals_numpy_replay_with_the_hash(tmp_path, rng):
    """One SET update on the device is `keras_sparse.masks.prune_and_grow`
    with |w| drop scores and `set_scores_np` grow scores."""
    xs, ys, plain, before, after, w_after_step = _one_update_at_step_2(
        tmp_path, rng, keras_sparse.algorithms.SET(
            update_interval=2, stop_step=2, drop_fraction=0.4, seed=3,
            drop_fraction_decay="constant"))
    # Hash keys are the indices among the trained weights (kernel, bias, ...).
    for k, name in zip((0, 2), KERNELS):
        m = before[f"{name}__mask"]
        n_drop = int(np.round(0.4 * m.sum()))
        grow = set_scores_np(3, 2, k, m.size).reshape(m.shape)
        new_m, grown = mask_math.prune_and_grow(
            m, np.abs(w_after_step[name]), grow.astype(np.float64), n_drop)
        np.testing.assert_array_equal(after[f"{name}__mask"], new_m)
        fresh = (grown > 0) & (m == 0)
        np.testing.assert_allclose(after[name],
                                   w_after_step[name] * new_m * ~fresh,
                                   atol=1e-6)


def test_set_hash_grows_uniformly_over_eligible_positions():
    size, eligible, n, updates = 600, 300, 30, 400
    rng = np.random.default_rng(0)
    ok = np.zeros(size, bool)
    ok[rng.choice(size, eligible, replace=False)] = True
    hits = np.zeros(size)
    for step in range(1, updates + 1):
        s = np.where(ok, set_scores_np(5, step * 10, 1, size), -1)
        hits[np.argsort(-s, kind="stable")[:n]] += 1
    assert hits[~ok].sum() == 0
    expected = updates * n / eligible
    chi2 = float(((hits[ok] - expected) ** 2 / expected).sum())
    # chi-square with 299 dof: mean 299, sd ~24.5; 400 is ~4 sd.
    assert chi2 < 400, chi2
    assert len(set(set_scores_np(5, 10, 1, size))) > 0.99 * size


# ------------------------------------------------------ state and weights

@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_checkpoint_mid_run_continues_exactly(tmp_path, rng, storage):
    steps, cut = 12, 5
    xs, ys = _batches(rng, steps)
    algo = {"class_name": "rigl", "config": {"update_interval": 2,
                                             "stop_step": 10}}
    plain = keras_sparse.strip(_sparse())
    report, interp = _export(tmp_path, plain, algo,
                             keras.optimizers.SGD(0.1, momentum=0.9),
                             weight_storage=storage)
    assert {f"{n}__mask" for n in KERNELS} <= set(report.state_names)
    assert report.state_names[-2:] == ["dst_regrown", "step"]
    outs, states = _run(interp, xs, ys)
    _, fresh = _export(tmp_path, plain, algo,
                       keras.optimizers.SGD(0.1, momentum=0.9),
                       weight_storage=storage)
    fresh.get_signature_runner("set_state")(**states[cut - 1])
    outs2, states2 = _run(fresh, xs[cut:], ys[cut:])
    assert outs2 == outs[cut:]
    for a, b in zip(states2, states[cut:]):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.full
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_get_weights_is_dense_with_exact_zeros_at_pruned(tmp_path, rng,
                                                         storage):
    xs, ys = _batches(rng, 6)
    plain = keras_sparse.strip(_sparse())
    report, interp = _export(tmp_path, plain, keras_sparse.algorithms.RigL(
        update_interval=2, stop_step=6, drop_fraction=0.5),
        weight_storage=storage)
    if storage == "sparse":
        assert any("2 of 4 weights stored as non-zero" in n
                   for n in report.notes)
    _run(interp, xs, ys)
    w = interp.get_signature_runner("get_weights")()
    st = interp.get_signature_runner("get_state")()
    for n, v in zip(KERNELS, plain.layers):
        assert w[n].shape == tuple(v.kernel.shape)
        assert np.all(w[n][st[f"{n}__mask"] == 0] == 0.0)
    # set_weights cannot write pruned positions of the current mask.
    ones = {k: np.ones_like(v) for k, v in w.items()}
    interp.get_signature_runner("set_weights")(**ones)
    w2 = interp.get_signature_runner("get_weights")()
    for n in KERNELS:
        np.testing.assert_array_equal(w2[n], st[f"{n}__mask"])


# ----------------------------------------------------- tflite-runtime 2.14

@pytest.mark.full
@pytest.mark.parametrize("name, storage", [
    ("set", "dense"), ("rigl", "dense"), ("neurrev", "dense"),
    ("mest", "dense"), ("rigl", "sparse"), ("neurrev", "sparse")])
def test_dst_file_trains_identically_in_tflite_runtime_214(tmp_path, rng,
                                                           name, storage):
    from tflite_helpers import train_in_tflite_runtime

    xs, ys = _batches(rng, 8)
    config = {"update_interval": 2, "stop_step": 8, "seed": 1}
    if name == "mest":
        config.update(drop_fraction=0.3, gradient_weight=0.5)
    algo = {"class_name": name, "config": config}
    plain = keras_sparse.strip(_sparse())
    _export(tmp_path, plain, algo, keras.optimizers.Adam(1e-2),
            weight_storage=storage)
    with open(tmp_path / "dst.tflite", "rb") as f:
        litert = make_interpreter(f.read())
    outs, _ = _run(litert, xs, ys)
    w_litert = litert.get_signature_runner("get_weights")()
    losses, w0, w1, _ = train_in_tflite_runtime(
        tmp_path, tmp_path / "dst.tflite", xs, ys)
    np.testing.assert_allclose(losses, [o["loss"] for o in outs], rtol=1e-5)
    for n in KERNELS:
        assert np.count_nonzero(w0[n]) >= np.count_nonzero(w1[n]) > 0
        assert not np.array_equal(w0[n] != 0, w1[n] != 0)  # masks moved
        np.testing.assert_array_equal(w1[n] != 0, w_litert[n] != 0)
        np.testing.assert_allclose(w1[n], w_litert[n], atol=1e-5)


# ------------------------------------------------------------------ runner

@pytest.mark.full
def test_runner_logs_sparsity_and_regrown_and_resumes_exactly(tmp_path, rng):
    from tflite_export import runner

    x = rng.standard_normal((6 * B, 12)).astype(np.float32)
    y = rng.integers(0, 5, 6 * B).astype(np.int32)
    algo = keras_sparse.algorithms.RigL(update_interval=4, stop_step=10)
    plain = keras_sparse.strip(_sparse())
    _export(tmp_path, plain, algo)
    path = str(tmp_path / "dst.tflite")
    lines = []
    interp = runner.make_interpreter(path)
    runner.train_epochs(interp, x, y, 1, seed=0, log=lines.append)
    dst_lines = [ln for ln in lines if "sparsity" in ln]
    assert len(dst_lines) == 1
    masks = runner.get_state(interp)
    counts = sum(masks[f"{n}__mask"].sum() for n in KERNELS)
    size = sum(masks[f"{n}__mask"].size for n in KERNELS)
    assert f"sparsity {1 - counts / size:.4f}" in dst_lines[0]
    assert "regrown at the last mask update" in dst_lines[0]
    # Update at step 4 of 6 grew entries.
    assert not dst_lines[0].endswith("update 0")
    runner.save_checkpoint(interp, str(tmp_path / "c.npz"), 1)
    runner.train_epochs(interp, x, y, 2, seed=0, log=None, start_epoch=1)
    resumed = runner.make_interpreter(path)
    assert runner.load_checkpoint(resumed, str(tmp_path / "c.npz")) == 1
    runner.train_epochs(resumed, x, y, 2, seed=0, log=None, start_epoch=1)
    a, b = runner.get_state(interp), runner.get_state(resumed)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.full
def test_runner_logs_awakened_for_neurrev(tmp_path, rng):
    from tflite_export import runner

    x = rng.standard_normal((4 * B, 12)).astype(np.float32)
    y = rng.integers(0, 5, 4 * B).astype(np.int32)
    _export(tmp_path, keras_sparse.strip(_sparse()), {
        "class_name": "neurrev", "config": {"update_interval": 2,
                                            "stop_step": 4, "p": 0.1}})
    lines = []
    interp = runner.make_interpreter(str(tmp_path / "dst.tflite"))
    runner.train_epochs(interp, x, y, 1, log=lines.append)
    (line,) = [ln for ln in lines if "sparsity" in ln]
    woke = int(line.rsplit("awakened ", 1)[1])
    assert woke == int(interp.get_signature_runner("get_state")()[
        "dst_awakened"])


@pytest.mark.full
def test_fractional_schedule_with_total_steps_runs_where_planned(tmp_path,
                                                                rng):
    xs, ys = _batches(rng, 9)
    algo = keras_sparse.algorithms.RigL(update_interval=2, start_step=0.2,
                                        stop_step=0.6, drop_fraction=0.5,
                                        drop_fraction_decay="constant")
    report, interp = _export(tmp_path, keras_sparse.strip(_sparse()), algo,
                             total_steps=10)
    assert "2 updates every 2 steps in (2, 6]" in " ".join(report.notes)
    _, states = _run(interp, xs, ys)
    moved = [t + 1 for t in range(1, 9) if not np.array_equal(
        states[t]["dense_kernel__mask"], states[t - 1]["dense_kernel__mask"])]
    assert moved == [4, 6]
