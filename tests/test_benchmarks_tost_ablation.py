"""benchmarks/tost_ablation.py helpers: plan, resume, aggregation, tables, plot.

No training: `execute` is replaced by a fake, so each test takes well under a
second (no timing assertion).
"""

import json

import numpy as np
import pytest

from benchmarks import harness
from benchmarks import tost_ablation as ta
from benchmarks.harness import BenchData, Budget


def _data(n_test=7):
    x = np.zeros((4, 28, 28, 1), "float32")
    return BenchData(x, np.zeros(4, "int64"), np.zeros((n_test, 28, 28, 1), "float32"),
                     np.zeros(n_test, "int64"))


def _rec(run, acc, budget_id="b", swap=None, status="ok"):
    rec = {"mask": run.mask, "row": run.row, "seed": run.seed,
           "ghost_fraction": run.ghost_fraction, "beta_end": run.beta_end,
           "budget_id": budget_id, "status": status, "seconds": 10.0}
    if status == "ok":
        rec.update(test_accuracy=acc, final_sparsity=0.95)
        if swap is not None:
            rec["swap_accuracy_change"] = swap
    return rec


def test_plan_rows_then_sweep_on_first_seed():
    runs = ta.plan(["snip"], [0, 1], sweep=True)
    base = [r for r in runs if not r.is_sweep]
    assert [r.row for r in base] == list(ta.ROWS) * 2
    sweep = [r for r in runs if r.is_sweep]
    assert len(sweep) == len(ta.SWEEP) and {r.seed for r in sweep} == {0}
    assert all(r.row == "tost" for r in sweep)
    assert {(r.ghost_fraction, r.beta_end) for r in sweep} == {
        (0.25, 100.0), (0.75, 100.0), (0.5, 10.0), (0.5, 1000.0)}
    assert len(ta.plan(["snip"], [0], sweep=False)) == len(ta.ROWS)


def test_rows_switch_exactly_one_tweak():
    assert ta.Run("snip", "mask", 0).tost_kwargs() is None
    full = ta.Run("snip", "tost", 0, 0.25, 10.0).tost_kwargs()
    assert full == {"ghost_fraction": 0.25, "beta_end": 10.0}
    for row, on in (("gsw", "ghost_swish"), ("gsk", "ghost_skip"), ("lrsi", "lrsi")):
        kw = ta.Run("snip", row, 0).tost_kwargs()
        flags = {k for k in ("ghost_skip", "ghost_swish", "lrsi") if kw[k]}
        assert flags == {on} and kw["label_smoothing"] == 0.0
    assert ta.Run("snip", "ls", 0).tost_kwargs()["label_smoothing"] > 0


def test_resume_skips_finished_runs_and_retries_failures(tmp_path, monkeypatch):
    path = tmp_path / "abl.jsonl"
    budget = Budget(epochs=1, train_size=4)
    data = _data()
    runs = ta.plan(["snip"], [0], sweep=False)
    bid = ta.budget_id(budget, len(data.x_test))
    harness.append_run(path, _rec(runs[0], 0.7, bid))
    harness.append_run(path, _rec(runs[1], None, bid, status="failed"))
    harness.append_run(path, _rec(runs[2], 0.7, "another-budget"))
    with path.open("a") as f:
        f.write('{"mask": "snip", "row": "gs')  # a line cut by a kill
    calls = []
    monkeypatch.setattr(ta, "execute", lambda run, data, budget, cache: (
        calls.append(run) or _rec(run, 0.8, bid)))
    ta.run_all(runs, data, budget, path, progress=False)
    assert calls == runs[1:]
    calls.clear()
    ta.run_all(runs, data, budget, path, progress=False)
    assert calls == []
    assert len(harness.read_runs(path)) == 3 + len(runs) - 1


def test_aggregate_mean_std_and_last_record_wins():
    r0, r1 = ta.Run("snip", "gsw", 0), ta.Run("snip", "gsw", 1)
    recs = [_rec(r0, 0.5, swap=-0.1), _rec(r0, 0.70, swap=-0.01), _rec(r1, 0.74, swap=0.01),
            _rec(ta.Run("snip", "mask", 0), 0.9, budget_id="other")]
    rows = ta.aggregate(recs, "b")
    assert len(rows) == 1
    row = rows[0]
    assert row["n"] == 2 and row["seeds"] == [0, 1]
    assert row["acc_mean"] == pytest.approx(0.72)
    assert row["acc_std"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    assert row["swap_mean"] == pytest.approx(0.0)


def test_render_tables_deltas_swap_and_sweep():
    recs = [_rec(ta.Run("snip", "mask", 0), 0.80), _rec(ta.Run("snip", "ls", 0), 0.81),
            _rec(ta.Run("snip", "gsw", 0), 0.78, swap=-0.005),
            _rec(ta.Run("snip", "tost", 0), 0.79, swap=0.0),
            _rec(ta.Run("snip", "tost", 0, 0.25, 100.0), 0.795, swap=0.001),
            _rec(ta.Run("snip", "gsk", 0), None, status="failed")]
    md = ta.render_tables(ta.aggregate(recs, "b"))
    lines = md.splitlines()
    assert "| mask alone | 80.00 | - | - | 0.950 | 1 | 10 |" in lines
    assert "| + label smoothing (LS) | 81.00 | +1.00 | - | 0.950 | 1 | 10 |" in lines
    assert "| + ghost Swish (GSw) | 78.00 | -2.00 | -0.50 | 0.950 | 1 | 10 |" in lines
    assert "| + ghost skips (GSk) | failed (1) | - | - | - | 0 | - |" in lines
    assert "#### Schedule sweep, full ToST, SNIP mask" in md
    assert "| 0.25 | 100 |  | 79.50 | +0.50 | +0.10 | 1 |" in lines
    assert "| 0.5 | 100 | (default) | 79.00 | - | +0.00 | 1 |" in lines
    # The breakdown table lists rows in ROWS order.
    order = [l.split(" | ")[0][2:] for l in lines if l.startswith("| +") or l.startswith("| all")
             or l.startswith("| mask")]
    assert order == ["mask alone", "+ label smoothing (LS)", "+ ghost Swish (GSw)",
                     "+ ghost skips (GSk)", "all (ToST)"]


def test_plot_writes_png(tmp_path):
    recs = [_rec(ta.Run("snip", row, 0), 0.8 + 0.01 * i) for i, row in enumerate(ta.ROWS)]
    recs.append(_rec(ta.Run("snip", "tost", 0, 0.5, 10.0), 0.8))
    out = ta.plot(ta.aggregate(recs, "b"), tmp_path / "p.png")
    assert out.exists() and out.stat().st_size > 1000
    assert ta.plot([], tmp_path / "none.png") is None


def test_records_round_trip_as_json_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = _rec(ta.Run("snip", "mask", 0), 0.8)
    harness.append_run(path, rec)
    assert json.loads(path.read_text().splitlines()[0]) == rec
    assert harness.read_runs(tmp_path / "missing.jsonl") == []


def test_recalibrate_bn_sets_moving_stats_to_the_batch_and_restores_momentum():
    import keras

    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, name="d")(inputs)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="bn")],
                             name="inner")
    model = keras.Model(inputs, inner(h))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(64, 3)).astype("float32")
    assert ta.recalibrate_bn(model, x) == 1
    bn = inner.get_layer("bn")
    pre = np.asarray(model.get_layer("d")(x))
    np.testing.assert_allclose(bn.moving_mean.numpy(), pre.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), pre.var(0), rtol=1e-3, atol=1e-4)
    assert bn.momentum == 0.99


def test_sweep_compares_with_the_default_on_the_sweep_seeds_only():
    recs = [_rec(ta.Run("snip", "tost", 0), 0.60), _rec(ta.Run("snip", "tost", 1), 0.70),
            _rec(ta.Run("snip", "tost", 0, 0.25, 100.0), 0.58)]
    md = ta.render_tables(ta.aggregate(recs, "b"))
    lines = md.splitlines()
    assert "| all (ToST) | 65.00 ± 7.07 | - | - | 0.950 | 2 | 10 |" in lines
    assert "#### Schedule sweep, full ToST, SNIP mask (seeds [0])" in md
    assert "| 0.5 | 100 | (default) | 60.00 | - | - | 1 |" in lines
    assert "| 0.25 | 100 |  | 58.00 | -2.00 | - | 1 |" in lines
