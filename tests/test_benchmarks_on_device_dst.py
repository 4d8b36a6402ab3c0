"""benchmarks/on_device_dst.py: plan, schedule, aggregation and the claim table on fake rows.

Nothing is trained or timed here; the script's end-to-end run is
`python -m benchmarks.on_device_dst --quick`.
"""

import pytest

from benchmarks import on_device_dst as odd


def _row(method, sparsity, interval, seed, acc, total, load=None, machine="m1", **extra):
    return {"method": method, "sparsity": sparsity, "interval": interval, "seed": seed,
            "test_accuracy": acc, "keras_test_accuracy": acc - 0.01, "epoch_s": [total / 2, total / 2],
            "total_s": total, "plain_step_ms": total / 100, "update_step_ms": None if not interval else 5.0,
            "updates": 3 if interval else 0, "update_overhead_s": 0.1 if interval else 0.0,
            "load": load, "machine": machine, **extra}


def test_plan_has_every_row_once_per_seed():
    keys = odd.plan([0.9, 0.95], [100, 400], [0, 1])
    assert len(keys) == len(set(keys)) == 2 * (1 + 2 * (1 + 3 * 2))
    assert keys[0] == odd.RunKey("dense", 0.0, 0, 0)
    assert {k.seed for k in keys[:len(keys) // 2]} == {0}


def test_update_steps_follow_the_interval_until_the_stop():
    budget = odd.Budget(train_size=800, test_size=10, epochs=2, batch_size=8, input_shape=(4, 4, 1))
    key = odd.RunKey("rigl", 0.9, 30, 0)
    stop = odd.algorithm_config(key, budget)["config"]["stop_step"]
    assert stop == int(0.75 * 200)
    assert odd.update_steps(key, budget) == set(range(30, stop + 1, 30))
    assert odd.update_steps(odd.RunKey("static", 0.9, 0, 0), budget) == set()
    assert odd.algorithm_config(odd.RunKey("dense", 0.0, 0, 0), budget) is None


def test_aggregate_means_over_seeds_and_claim_picks_best_interval():
    rows = [_row("dense", 0.0, 0, s, 0.90, 100.0) for s in (0, 1)]
    rows += [_row("rigl", 0.9, 100, s, 0.80 + 0.02 * s, 60.0) for s in (0, 1)]
    rows += [_row("rigl", 0.9, 400, s, 0.85, 50.0) for s in (0, 1)]
    rows += [_row("neurrev", 0.9, 100, 0, 0.86, 40.0)]
    table = odd.aggregate(rows)
    rigl100 = next(r for r in table if r["method"] == "rigl" and r["interval"] == 100)
    assert rigl100["n"] == 2 and rigl100["test_accuracy"] == pytest.approx(0.81)
    assert rigl100["dense_s_over_s"] == pytest.approx(100.0 / 60.0)
    assert rigl100["dense_step_over_step"] == pytest.approx(1.0 / 0.6)
    assert rigl100["update_over_plain_step"] == pytest.approx(5.0 / 0.6)
    assert rigl100["update_overhead_pct"] == pytest.approx(100 * 0.1 / 60.0)
    best = {b["method"]: b for b in odd.claim(table)}
    assert best["rigl"]["best_interval"] == 400
    assert best["rigl"]["speedup_vs_dense"] == pytest.approx(100.0 / 50.0)
    assert best["neurrev"]["speedup_vs_dense"] == pytest.approx(2.5)
    assert best["rigl"]["neurrev_advantage"] == pytest.approx(2.5 / 2.0)
    assert best["neurrev"]["neurrev_advantage"] == pytest.approx(1.0)


def test_times_are_compared_only_with_dense_on_the_same_machine():
    # Machine m2 is twice as fast: its rigl run is as fast as its dense run.
    rows = [_row("dense", 0.0, 0, 0, 0.90, 100.0, machine="m1"),
            _row("dense", 0.0, 0, 1, 0.90, 50.0, machine="m2", reference=True),
            _row("rigl", 0.9, 100, 0, 0.80, 125.0, machine="m1"),
            _row("rigl", 0.9, 100, 1, 0.80, 50.0, machine="m2"),
            _row("rigl", 0.9, 100, 2, 0.80, 10.0, machine="m3")]
    table = odd.aggregate(rows)
    dense = next(r for r in table if r["method"] == "dense")
    assert dense["n"] == 1  # the reference run times only; it is not a seed of the table
    rigl = next(r for r in table if r["method"] == "rigl")
    assert rigl["n"] == 3 and rigl["n_timed"] == 2  # m3 has no dense run
    assert rigl["dense_s_over_s"] == pytest.approx((100 / 125 + 50 / 50) / 2)
    assert rigl["epoch_s_by_machine"] == {"m1": 62.5, "m2": 25.0, "m3": 5.0}


def test_a_machine_without_a_dense_run_times_one_first():
    rigl = odd.RunKey("rigl", 0.9, 100, 1)
    rows = [_row("dense", 0.0, 0, 0, 0.9, 100.0, machine="m1")]
    assert odd.needs_dense_reference(rows, [rigl], "m2")
    assert not odd.needs_dense_reference(rows, [rigl], "m1")
    assert not odd.needs_dense_reference(rows, [odd.RunKey("dense", 0.0, 0, 1), rigl], "m2")
    assert not odd.needs_dense_reference(rows, [], "m2")


def test_main_resumes_and_runs_a_dense_reference_on_a_new_machine(tmp_path, monkeypatch):
    calls = []

    def fake_run(key, budget, data, reference=False):
        calls.append((key, reference))
        return _row(key.method, key.sparsity, key.interval, key.seed, 0.8, 10.0, machine="new",
                    **({"reference": True} if reference else {}))

    monkeypatch.setattr(odd, "run_one", fake_run)
    monkeypatch.setattr(odd, "load_data", lambda budget, quick: None)
    monkeypatch.setattr(odd, "machine_fingerprint", lambda: "new")
    done = [_row("dense", 0.0, 0, 0, 0.9, 20.0, machine="old"),
            _row("static", 0.9, 0, 0, 0.85, 22.0, machine="old")]
    (tmp_path / "on_device_dst.jsonl").write_text("".join(odd.json.dumps(r) + "\n" for r in done))
    args = ["--seeds", "0", "--sparsities", "0.9", "--intervals", "100", "--out-dir", str(tmp_path)]
    rows = odd.main(args)
    assert calls[0] == (odd.RunKey("dense", 0.0, 0, 0), True)
    assert [k.method for k, ref in calls[1:]] == ["set", "rigl", "neurrev"]
    assert len(rows) == 6
    text = (tmp_path / "on_device_dst.md").read_text()
    assert "complete" in text and "`old`: 2 run(s)" in text and "`new`: 4 run(s)" in text
    calls.clear()
    odd.main(args)
    assert calls == []


def test_render_marks_partial_tables_and_loaded_runs():
    loaded = {"before": [3.0], "after": [3.0], "other_cores": 1.5}
    rows = [_row("dense", 0.0, 0, 0, 0.9, 100.0, load=loaded), _row("rigl", 0.9, 100, 0, 0.8, 50.0)]
    text = odd.render(rows, planned=5, budget=odd.QUICK, info={
        "date": "d", "platform": "p", "processor": "x", "cpu_count": 2, "gpus": [], "python": "3",
        "tensorflow": "t", "keras": "k", "keras_backend": "tensorflow", "numpy": "n"})
    assert "PARTIAL: 2 of 5 runs" in text
    assert "1 of 2 runs were timed on a machine loaded" in text
    assert "| rigl | 0.9 | 100 | 1 | 0.8000 | 0.7900 | 25.0 | 2.00x |" in text


def test_load_data_keeps_the_loader_scale(monkeypatch):
    # The loader returns float32 in [0, 1]; dividing by 255 again once cost
    # the dense run 7 points.
    import numpy as np

    x = np.linspace(0.0, 1.0, 30 * 784, dtype=np.float32).reshape(30, 28, 28, 1)
    y = np.arange(30) % 10
    monkeypatch.setattr(odd.keras_sparse.datasets, "load_fashion_mnist",
                        lambda: ((x[:20], y[:20]), (x[20:], y[20:])))
    budget = odd.Budget(train_size=20, test_size=10, epochs=1, batch_size=4,
                        input_shape=(28, 28, 1))
    xt, yt, xv, yv = odd.load_data(budget, quick=False)
    np.testing.assert_array_equal(xt, x[:20])
    np.testing.assert_array_equal(xv, x[20:])
    assert xv.max() == 1.0 and yt.dtype == np.int32
