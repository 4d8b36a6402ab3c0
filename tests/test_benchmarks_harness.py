"""Benchmark harness: resume after a kill, table rendering, plots, on a tiny fake method.

No training and no real data: the fake method returns a fake "model"-less
result, so these tests run in well under a second each.
"""

import json
import math

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.harness import BenchData, Budget, MethodSpec, RunKey


class Killed(BaseException):
    """Stands for SIGKILL/Ctrl-C: not an Exception, so the harness does not record it."""


def _fake_registry(calls, kill_after=None):
    def fake(model, sparsity, distribution, data, budget, seed):
        if kill_after is not None and len(calls) >= kill_after:
            raise Killed()
        calls.append((sparsity, distribution, seed))
        acc = 0.9 - 0.1 * sparsity + 0.01 * seed
        return None, {"test_accuracy": acc, "final_sparsity": sparsity, "extra": 1}

    def dense(model, sparsity, distribution, data, budget, seed):
        calls.append(("dense", seed))
        return None, {"test_accuracy": 0.95, "final_sparsity": 0.0}

    def broken(model, sparsity, distribution, data, budget, seed):
        raise RuntimeError("boom")

    return {
        "dense": MethodSpec("dense", dense, "dense", kind="dense", dense=True),
        "fake": MethodSpec("fake", fake, "fake method"),
        "broken": MethodSpec("broken", broken, "broken method"),
        "later": MethodSpec("later", fake, "not merged", available=lambda: "not merged yet"),
    }


def _data():
    x = np.zeros((4, 2, 2, 1), np.float32)
    y = np.zeros((4,), np.int64)
    return BenchData(x, y, x, y)


def _run(tmp_path, registry, methods=("fake",), seeds=(0, 1, 2), budget=None):
    keys = harness.plan_runs(methods, ["tiny"], [0.9, 0.95], ["uniform", "erk"], seeds,
                             registry=registry)
    return harness.run_all(keys, lambda name, seed: None, _data(), budget or Budget(epochs=1),
                           tmp_path / "runs.jsonl", registry=registry, progress=False,
                           log=lambda msg: None, fresh_session=False)


def test_plan_runs_dense_once_per_seed():
    reg = _fake_registry([])
    keys = harness.plan_runs(["dense", "fake"], ["tiny"], [0.9, 0.95], ["uniform", "erk"],
                             [0, 1], registry=reg)
    assert [k for k in keys if k.method == "dense"] == [
        RunKey("dense", "tiny", 0.0, "-", 0), RunKey("dense", "tiny", 0.0, "-", 1)]
    assert len([k for k in keys if k.method == "fake"]) == 2 * 2 * 2


def test_killed_run_resumes_skipping_finished_keys(tmp_path):
    calls = []
    with pytest.raises(Killed):
        _run(tmp_path, _fake_registry(calls, kill_after=5))
    finished = harness.read_runs(tmp_path / "runs.jsonl")
    assert len(finished) == 5 and all(r["status"] == "ok" for r in finished)

    calls_after = []
    new = _run(tmp_path, _fake_registry(calls_after))
    assert len(new) == 12 - 5 == len(calls_after)
    done_before = {(r["sparsity"], r["distribution"], r["seed"]) for r in finished}
    assert not done_before & set(calls_after)

    # Everything finished: a third run does nothing.
    assert _run(tmp_path, _fake_registry([])) == []
    assert len(harness.read_runs(tmp_path / "runs.jsonl")) == 12


def test_torn_last_line_is_ignored_and_rerun(tmp_path):
    calls = []
    _run(tmp_path, _fake_registry(calls), seeds=(0,))
    path = tmp_path / "runs.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # killed mid-write
    calls2 = []
    _run(tmp_path, _fake_registry(calls2), seeds=(0,))
    assert len(calls2) == 1


def test_other_budget_is_not_resumed(tmp_path):
    _run(tmp_path, _fake_registry([]), seeds=(0,))
    calls = []
    _run(tmp_path, _fake_registry(calls), seeds=(0,), budget=Budget(epochs=2))
    assert len(calls) == 4


def test_failures_are_recorded_and_retried(tmp_path):
    reg = _fake_registry([])
    new = _run(tmp_path, reg, methods=("broken",), seeds=(0,))
    assert {r["status"] for r in new} == {"failed"}
    assert "RuntimeError: boom" in new[0]["error"]
    assert len(_run(tmp_path, reg, methods=("broken",), seeds=(0,))) == 4  # retried


def test_unavailable_method_is_skipped_without_record(tmp_path):
    assert _run(tmp_path, _fake_registry([]), methods=("later",)) == []
    assert harness.read_runs(tmp_path / "runs.jsonl") == []


def test_aggregate_mean_std_over_seeds(tmp_path):
    _run(tmp_path, _fake_registry([]), methods=("dense", "fake"))
    rows = harness.aggregate(harness.read_runs(tmp_path / "runs.jsonl"), Budget(epochs=1).fingerprint)
    row = next(r for r in rows if r["method"] == "fake" and r["sparsity"] == 0.9
               and r["distribution"] == "erk")
    accs = [0.9 - 0.09 + 0.01 * s for s in (0, 1, 2)]
    assert row["n"] == 3 and row["seeds"] == [0, 1, 2]
    assert math.isclose(row["acc_mean"], np.mean(accs))
    assert math.isclose(row["acc_std"], np.std(accs, ddof=1))
    assert math.isclose(row["sparsity_mean"], 0.9)


def test_render_table_cells_show_accuracy_std_and_sparsity(tmp_path):
    reg = _fake_registry([])
    _run(tmp_path, reg, methods=("dense", "fake", "broken"))
    rows = harness.aggregate(harness.read_runs(tmp_path / "runs.jsonl"))
    md = harness.render_table(rows, registry=reg, pending={"later": "not merged yet"})
    lines = md.splitlines()
    assert lines[0] == "#### tiny"
    assert lines[2] == "| method | 90% erk | 90% uniform | 95% erk | 95% uniform |"
    fake = next(l for l in lines if l.startswith("| fake method |"))
    # 100 * mean(0.81, 0.82, 0.83) = 82.00, std 1.00
    assert "82.00 ± 1.00 (sp 0.900, n=3)" in fake
    assert next(l for l in lines if l.startswith("| dense |")).count("95.00 ± 0.00 (sp 0.000, n=3)") == 4
    assert "failed (3)" in next(l for l in lines if l.startswith("| broken method |"))
    assert "pending: not merged yet" in next(l for l in lines if l.startswith("| not merged |"))
    assert all(l.count("|") == 6 for l in lines[2:])


def test_plots_are_written(tmp_path):
    reg = _fake_registry([])
    _run(tmp_path, reg, methods=("dense", "fake"))
    rows = harness.aggregate(harness.read_runs(tmp_path / "runs.jsonl"))
    pngs = harness.plot_accuracy_vs_sparsity(rows, tmp_path / "plots", registry=reg)
    assert sorted(p.name for p in pngs) == ["accuracy_vs_sparsity_tiny_erk.png",
                                            "accuracy_vs_sparsity_tiny_uniform.png"]
    bars = harness.plot_density_bars({"uniform": {"a/kernel": 1.0, "b/kernel": 0.1},
                                      "erk": {"a/kernel": 0.5, "b/kernel": 0.2}},
                                     tmp_path / "plots" / "d.png", "t")
    for p in pngs + [bars]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_fingerprint_is_stable_and_sensitive():
    assert Budget(epochs=3).fingerprint == Budget(epochs=3).fingerprint
    assert Budget(epochs=3).fingerprint != Budget(epochs=4).fingerprint
    assert Budget(epochs=3).steps(1000) == 3 * 8


def test_records_are_json_lines(tmp_path):
    _run(tmp_path, _fake_registry([]), seeds=(0,))
    for line in (tmp_path / "runs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert {"method", "model", "sparsity", "distribution", "seed", "budget", "budget_id",
                "test_accuracy", "final_sparsity", "status", "seconds"} <= set(rec)


def test_coupled_sgd_is_pytorch_weight_decay():
    """One step of CoupledSGD(l2) from w with gradient g: w - lr * (g + l2 * w) (momentum 0 at start)."""
    import keras

    w0 = np.array([1.0, -2.0, 0.0], np.float32)
    g = np.array([0.5, 0.5, 0.5], np.float32)
    v = keras.Variable(w0)
    opt = harness.coupled_sgd()(l2=0.1, learning_rate=0.5, momentum=0.9)
    opt.apply([keras.ops.convert_to_tensor(g)], [v])
    np.testing.assert_allclose(v.numpy(), w0 - 0.5 * (g + 0.1 * w0), rtol=1e-6)
    # Second step: the decay term goes through the momentum buffer, as in torch.
    w1 = v.numpy().copy()
    opt.apply([keras.ops.convert_to_tensor(g)], [v])
    buf = 0.9 * (g + 0.1 * w0) + (g + 0.1 * w1)
    np.testing.assert_allclose(v.numpy(), w1 - 0.5 * buf, rtol=1e-5)
    assert opt.get_config()["l2"] == 0.1


def test_compile_model_uses_coupled_l2_and_warmup_then_cosine():
    import keras

    budget = Budget(epochs=2, batch_size=2, lr=0.2, l2=5e-4, warmup_epochs=0.5)
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    harness.compile_model(model, _data(), budget)  # 4 examples: 2 steps/epoch, 4 steps, 1 warm-up
    opt = model.optimizer
    assert isinstance(opt, harness.coupled_sgd()) and opt.l2 == 5e-4 and not opt.weight_decay
    lr = opt._learning_rate
    values = [float(lr(step)) for step in range(5)]
    assert values[0] == 0.0 and values[1] == pytest.approx(0.2)  # warm-up to the peak
    assert values[2] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi / 3)), rel=1e-5)
    assert values[4] == pytest.approx(0.0, abs=1e-7)  # cosine to 0 at the end
    assert "coupled L2 0.0005" in harness.recipe_text(budget)


def test_error_bars_are_clipped_to_0_100():
    rows = [{"acc_mean": 0.995, "acc_std": 0.02}, {"acc_mean": 0.1, "acc_std": 0.2},
            {"acc_mean": 0.5, "acc_std": None}]
    err = harness.clipped_errors(rows)
    np.testing.assert_allclose(err, [[2.0, 10.0, 0.0], [0.5, 20.0, 0.0]], atol=1e-9)


def test_dodge_sets_methods_apart_within_a_sparsity():
    one = harness.dodge_offsets(10, [0.95])  # one sparsity: all ten methods on one line before
    assert len(set(one.round(9))) == 10 and abs(one.mean()) < 1e-12 and np.ptp(one) <= 1.0
    three = harness.dodge_offsets(13, [0.9, 0.95, 0.98])
    assert np.ptp(three) < 3.0  # never reaches the next sparsity (98 - 95 = 3 points)
    assert list(harness.dodge_offsets(1, [0.9, 0.95])) == [0.0]


def test_cells_show_itop_and_churn_of_mask_updating_rows(tmp_path):
    def fake(model, sparsity, distribution, data, budget, seed):
        return None, {"test_accuracy": 0.8, "final_sparsity": sparsity,
                      "final_itop_rate": 0.5 + 0.1 * seed, "final_churn_mean": 0.2}

    reg = {"dst": MethodSpec("dst", fake, "DST", kind="dst")}
    keys = harness.plan_runs(["dst"], ["tiny"], [0.9], ["erk"], [0, 1], registry=reg)
    harness.run_all(keys, lambda name, seed: None, _data(), Budget(epochs=1), tmp_path / "r.jsonl",
                    registry=reg, progress=False, log=lambda m: None, fresh_session=False)
    rows = harness.aggregate(harness.read_runs(tmp_path / "r.jsonl"))
    assert rows[0]["itop_mean"] == pytest.approx(0.55) and rows[0]["churn_mean"] == pytest.approx(0.2)
    assert "ITOP 0.55, churn 0.20" in harness.render_table(rows, registry=reg)


def test_after_each_runs_after_every_record_and_never_stops_the_runs(tmp_path):
    seen = []

    def after(rec):
        seen.append(rec["seed"])
        raise RuntimeError("report broke")

    logs = []
    reg = _fake_registry([])
    keys = harness.plan_runs(["fake"], ["tiny"], [0.9], ["erk"], [0, 1], registry=reg)
    new = harness.run_all(keys, lambda name, seed: None, _data(), Budget(epochs=1),
                          tmp_path / "r.jsonl", registry=reg, progress=False, log=logs.append,
                          fresh_session=False, after_each=after)
    assert len(new) == 2 and seen == [0, 1]
    assert sum("report broke" in m for m in logs) == 2


def test_plot_panels_split_trained_masks_from_prune_at_init():
    reg = {m: MethodSpec(m, None, m.upper(), kind=k) for m, k in
           (("static", "static"), ("rigl", "dst"), ("gmp", "gradual"), ("snip", "pai"), ("lth", "lth"),
            ("odd", "custom"))}
    panels = harness.plot_panels(["static", "rigl", "gmp", "snip", "lth", "odd"], reg)
    assert [ms for _, ms in panels] == [["static", "rigl", "gmp", "odd"], ["static", "snip", "lth"]]
    # One group only: one panel; only static rows: one panel with them.
    assert [ms for _, ms in harness.plot_panels(["static", "snip"], reg)] == [["static", "snip"]]
    assert [ms for _, ms in harness.plot_panels(["static"], reg)] == [["static"]]
