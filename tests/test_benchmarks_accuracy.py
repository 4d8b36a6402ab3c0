"""benchmarks/accuracy.py: CLI defaults, registry, and real methods on a tiny budget."""

import numpy as np
import pytest

from benchmarks import accuracy, harness


def test_quick_defaults():
    a = accuracy.parse_args(["--quick"])
    assert a.models == ["small_cnn"] and a.sparsities == [0.9] and a.seeds == [0]
    assert not a.full_plan
    b = accuracy.budgets(a)["small_cnn"]
    assert b.epochs == 1 and b.train_size == accuracy.QUICK_TRAIN_SIZE
    assert a.results.name == "accuracy_quick.jsonl"
    assert set(a.methods) <= set(harness.REGISTRY)


def test_full_defaults_follow_the_issue_budget_and_recipe():
    a = accuracy.parse_args([])
    assert a.full_plan and a.models == ["small_cnn", "resnet20"] and a.seeds == [0, 1, 2]
    assert a.results.name == "accuracy.jsonl"
    budgets = accuracy.budgets(a)
    cnn, resnet = budgets["small_cnn"], budgets["resnet20"]
    assert cnn.epochs >= 10 and cnn.train_size == 60_000 and cnn.batch_size == 128
    assert resnet.epochs >= 15 and resnet.train_size >= 20_000
    for b in budgets.values():
        assert b.momentum == 0.9 and b.l2 == 5e-4 and b.weight_decay == 0.0
        assert b.warmup_epochs > 0 and b.schedule == "cosine"
        assert b.lr == accuracy.RECIPE_LR  # one recipe for every method and model


def test_full_plan_has_the_issue_rows():
    keys = accuracy.plan(accuracy.parse_args([]))
    cells = {(k.model, k.method, k.sparsity, k.distribution) for k in keys}
    for m in ("static", "set", "rigl", "rigl_itop", "mest", "dsr", "deep_r", "neurrev", "gmp",
              "granet", "granet_st", "tfmot"):
        for s in (0.9, 0.95, 0.98):
            assert ("small_cnn", m, s, "erk") in cells, (m, s)
    for m in ("granet_global", "granet_st_global"):
        assert ("small_cnn", m, 0.95, "global") in cells
    for m in ("snip", "grasp", "synflow", "random_pai", "snip_tost", "grasp_tost", "synflow_tost",
              "random_tost"):
        assert {("small_cnn", m, 0.95, "erk"), ("small_cnn", m, 0.98, "erk")} <= cells, m
        assert ("small_cnn", m, 0.9, "erk") not in cells
    assert {("small_cnn", "lth", 0.98, "global"), ("small_cnn", "lth_tost", 0.95, "global")} <= cells
    resnet = {m for mod, m, s, d in cells if mod == "resnet20"}
    assert resnet == {"dense", "static", "set", "rigl", "rigl_itop", "neurrev", "gmp", "granet",
                      "granet_st", "tfmot"}
    assert {s for mod, m, s, d in cells if mod == "resnet20" and m != "dense"} == {0.95}
    assert sum(k.method == "dense" and k.model == "small_cnn" for k in keys) == 3
    assert all(k.seed in (0, 1, 2) for k in keys) and len(keys) == len(set(keys))
    # Seed-major: every seed-0 run of a model comes before its first seed-1 run.
    cnn = [k.seed for k in keys if k.model == "small_cnn"]
    assert cnn == sorted(cnn)


def test_update_intervals_of_the_full_table(monkeypatch):
    budget = accuracy.budgets(accuracy.parse_args([]))["small_cnn"]
    monkeypatch.setattr(accuracy, "_FIXED_INTERVAL", accuracy.DST_INTERVAL)
    assert accuracy.update_interval(budget, 60_000) == 100
    assert accuracy.update_interval(budget, 60_000, "rigl") == 100
    itop = accuracy.update_interval(budget, 60_000, "rigl_itop")
    assert itop == round(4000 / 97_750 * 4690)  # ~4% of training, as in the reference


def test_rejects_bad_input():
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--methods", "nope"])
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--sparsities", "1.0"])


def test_registry_has_the_protocol_rows():
    for name in ("dense", "static", "snip", "grasp", "synflow", "random_pai", "lth", "lth_tost",
                 "snip_tost", "grasp_tost", "synflow_tost", "random_tost", "tfmot",
                 "set", "rigl", "rigl_itop", "neurrev", "granet", "granet_st", "gmp", "mest",
                 "dsr", "deep_r", "granet_global", "granet_st_global"):
        assert name in harness.REGISTRY, name


def test_plan_puts_lth_in_global_column():
    a = accuracy.parse_args(["--methods", "lth", "lth_tost", "static", "--models", "small_cnn",
                             "--sparsities", "0.9", "--seeds", "0", "--distributions", "uniform",
                             "erk"])
    keys = accuracy.plan(a)
    assert {k.distribution for k in keys if k.method.startswith("lth")} == {"global"}
    assert {k.distribution for k in keys if k.method == "static"} == {"uniform", "erk"}


def test_lth_trajectory_passes_through_the_columns():
    segments = accuracy.lth_trajectory(0.98)
    assert [(s, r) for s, r, _ in segments] == [(0.9, 11), (0.95, 4), (0.98, 5)]
    density = 1.0
    for stop, rounds, frac in segments:
        assert frac <= 0.2
        density *= (1 - frac) ** rounds
        assert abs(density - (1 - stop)) < 1e-12
    assert accuracy.lth_trajectory(0.9) == segments[:1]
    assert [s for s, _, _ in accuracy.lth_trajectory(0.93)] == [0.9, 0.93]


def _tiny_data(n=256):
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return harness.BenchData(x, y, x[:64], y[:64])


@pytest.mark.parametrize("method", ["static", pytest.param("snip", marks=pytest.mark.slow)])
def test_real_methods_measure_sparsity(method, tmp_path):
    key = harness.RunKey(method, "small_cnn", 0.9, "erk", 0)
    rec = harness.execute(key, accuracy.build_model, _tiny_data(), harness.Budget(epochs=1),
                          harness.REGISTRY[method])
    assert rec["status"] == "ok", rec.get("error")
    assert abs(rec["final_sparsity"] - 0.9) < 2e-3
    assert 0.0 <= rec["test_accuracy"] <= 1.0


@pytest.mark.full
def test_lth_ticket_is_found_once_and_reused(tmp_path, monkeypatch):
    """The lth and lth_tost rows train the same ticket; the second call loads it."""
    import keras

    monkeypatch.setattr(accuracy, "TICKET_CACHE", tmp_path)
    data, budget = _tiny_data(128), harness.Budget(epochs=1)

    def ticket():
        keras.utils.set_random_seed(0)
        return accuracy.lottery_ticket(accuracy.build_model("small_cnn", 0), 0.5, "global",
                                       data, budget, 0)

    found, extras = ticket()
    assert extras["lth_ticket_cached"] is False and extras["lth_rounds"] == 4
    assert len(list(tmp_path.glob("*.npz"))) == 1
    loaded, extras2 = ticket()
    assert extras2["lth_ticket_cached"] is True
    for a, b in zip(found.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)  # rewound weights and masks
    with pytest.raises(ValueError, match="global"):
        accuracy.lottery_ticket(accuracy.build_model("small_cnn", 0), 0.5, "erk", data, budget, 0)


@pytest.mark.full
def test_lth_higher_sparsity_continues_from_the_cached_ticket(tmp_path, monkeypatch):
    import keras

    import keras_sparse as ks

    monkeypatch.setattr(accuracy, "TICKET_CACHE", tmp_path)
    monkeypatch.setattr(accuracy, "LTH_MILESTONES", (0.3, 0.6))
    data, budget = _tiny_data(128), harness.Budget(epochs=1)

    def ticket(sparsity):
        keras.utils.set_random_seed(0)
        return accuracy.lottery_ticket(accuracy.build_model("small_cnn", 0), sparsity, "global",
                                       data, budget, 0)

    low, _ = ticket(0.3)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    high, extras = ticket(0.6)
    assert extras["lth_ticket_cached"] is False
    assert extras["lth_rounds"] == sum(r for _, r, _ in accuracy.lth_trajectory(0.6))
    assert len(list(tmp_path.glob("*.npz"))) == 2  # only the 0.3 -> 0.6 segment was run
    assert abs(ks.sparsity_report(high).total_sparsity - 0.6) < 0.01
    from keras_sparse.pruning.core import get_masks

    low_masks, high_masks = get_masks(low), get_masks(high)
    for key, m in high_masks.items():  # IMP only removes: the 60% ticket is inside the 30% one
        assert np.all(m <= low_masks[key])


def _aggregated_row(method, sparsity, dist, accs, model="small_cnn"):
    acc = np.array(accs)
    return {"method": method, "model": model, "sparsity": sparsity, "distribution": dist,
            "n": len(accs), "failed": 0, "acc_mean": float(acc.mean()),
            "acc_std": float(acc.std(ddof=1)) if len(accs) > 1 else 0.0,
            "sparsity_mean": sparsity, "seeds": list(range(len(accs)))}


def test_readme_table_from_aggregated_rows():
    rows = [_aggregated_row("dense", 0.0, "-", [0.80, 0.82, 0.84]),
            _aggregated_row("rigl", 0.9, "erk", [0.70, 0.72, 0.74]),
            _aggregated_row("snip", 0.95, "erk", [0.5]),
            _aggregated_row("tfmot", 0.9, "erk", [0.71]),
            _aggregated_row("rigl", 0.98, "uniform", [0.6, 0.6, 0.6]),
            _aggregated_row("lth", 0.9, "global", [0.85, 0.86, 0.87])]
    lines = accuracy.readme_table(rows, "small_cnn", "erk").splitlines()
    assert lines[0] == "| method | 90% | 95% |"  # only the sparsities with an ERK result
    assert lines[2] == "| dense | 82.0 ± 2.0 | 82.0 ± 2.0 |"  # dense first, repeated
    assert lines[3] == "| RigL | 72.0 ± 2.0 | - |"  # masks trained from the start first
    assert lines[4].startswith("| TF-MOT") and lines[4].endswith("| 71.0 (n=1) | - |")
    assert lines[5] == "| SNIP | - | 50.0 (n=1) |"  # then masks found before training
    assert not any(line.startswith(("| SET", "| LTH")) for line in lines)
    lth = accuracy.readme_table(rows, "small_cnn", "global").splitlines()
    assert lth[0] == "| method | 90% |" and lth[3].endswith("| 86.0 ± 1.0 |") and len(lth) == 4
    assert accuracy.readme_table(rows, "resnet20", "erk") == ""  # no rows: no table


def test_readme_tables_one_table_per_model_and_allocation():
    rows = [_aggregated_row("rigl", 0.98, "uniform", [0.70, 0.72], model="resnet20"),
            _aggregated_row("rigl", 0.9, "erk", [0.84, 0.85, 0.86], model="resnet20"),
            _aggregated_row("dense", 0.0, "-", [0.9, 0.9, 0.9], model="resnet20"),
            _aggregated_row("rigl", 0.9, "uniform", [0.75], model="small_cnn")]
    text = accuracy.readme_tables(rows)
    titles = [line for line in text.splitlines() if line.endswith(":")]
    assert titles == ["small_cnn, uniform per-layer sparsity:", "resnet20, ERK per-layer sparsity:",
                      "resnet20, uniform per-layer sparsity:"]
    resnet_erk = text[text.index("resnet20, ERK"):text.index("resnet20, uniform")]
    assert "| dense | 90.0 ± 0.0 |" in resnet_erk and "| RigL | 85.0 ± 1.0 |" in resnet_erk
    assert "| RigL | 71.0 ± 1.4 (n=2) |" in text[text.index("resnet20, uniform"):]
    assert "global" not in text  # no global rows given: no global table


def test_density_plots_use_each_models_own_top_sparsity(tmp_path):
    rows = [_aggregated_row("rigl", 0.98, "erk", [0.6]),
            _aggregated_row("rigl", 0.95, "erk", [0.8], model="resnet20"),
            {**_aggregated_row("gmp", 0.98, "erk", [0.0], model="resnet20"), "n": 0}]  # all failed
    tops = accuracy.top_sparsities(rows, ["small_cnn", "resnet20"], [0.9, 0.95, 0.98])
    assert tops == {"small_cnn": 0.98, "resnet20": 0.95}
    assert accuracy.top_sparsities([], ["resnet20"], [0.9, 0.95]) == {"resnet20": 0.95}
    written = accuracy.erk_density_plot(tmp_path, {"small_cnn": 0.9})
    assert [p.name for p in written] == ["density_small_cnn_90.png"] and written[0].exists()


def test_update_interval_ablation_needs_its_own_results_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--update-interval", "4"])
    assert "--results FILE of its own" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--update-interval", "0", "--results", str(tmp_path / "a.jsonl")])
    assert "received 0" in capsys.readouterr().err
    a = accuracy.parse_args(["--update-interval", "4", "--results", str(tmp_path / "a.jsonl")])
    assert a.update_interval == 4 and accuracy.parse_args([]).update_interval is None


@pytest.mark.full
def test_global_granet_row_prunes_globally_and_logs_dynamics(monkeypatch):
    budget = harness.Budget(epochs=1)
    monkeypatch.setattr(accuracy, "_INTERVAL_OVERRIDE", 1)
    key = harness.RunKey("granet_st_global", "small_cnn", 0.9, "global", 0)
    rec = harness.execute(key, accuracy.build_model, _tiny_data(), budget,
                          harness.REGISTRY["granet_st_global"])
    assert rec["status"] == "ok", rec.get("error")
    assert abs(rec["final_sparsity"] - 0.9) < 2e-3
    assert 0.0 < rec["final_itop_rate"] <= 1.0 and 0.0 <= rec["final_churn_mean"] <= 1.0


def test_update_interval_override_reaches_the_dst_run(monkeypatch):
    budget = harness.Budget(epochs=1)
    assert accuracy.update_interval(budget, 256) == 1  # 2 steps // 20, floored at 1
    monkeypatch.setattr(accuracy, "_INTERVAL_OVERRIDE", 2)
    assert accuracy.update_interval(budget, 10_000) == 2
    key = harness.RunKey("gmp", "small_cnn", 0.5, "erk", 0)
    rec = harness.execute(key, accuracy.build_model, _tiny_data(), budget, harness.REGISTRY["gmp"])
    assert rec["status"] == "ok", rec.get("error")
    assert rec["update_interval"] == 2
