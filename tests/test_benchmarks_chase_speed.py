"""benchmarks/chase_speed.py: the summary and the verdict on fake runs (nothing trained or timed).

The end-to-end run is `python -m benchmarks.chase_speed --quick`.
"""

import json

import numpy as np
import pytest

from benchmarks import chase_speed as cs

INFO = {"date": "d", "platform": "p", "processor": "x", "cpu_count": 2, "gpus": [], "python": "3",
        "tensorflow": "t", "keras": "k", "keras_backend": "tensorflow", "numpy": "n"}


def _train(method, seed, acc):
    return {"model": "small_cnn", "method": method, "seed": seed, "test_accuracy": acc,
            "sparsity": None if method == "dense" else 0.9}


def _speed(seed, chase_us, machine="m1"):
    files = {m: {"latency_us": us, "bytes": 10, "params": 5, "nonzero_params": 5, "flops": 2e6,
                 "peak_rss_mib": 40.0} for m, us in (("dense", 100.0), ("rigl", 100.0), ("chase", chase_us))}
    files["dense"]["train_step_us"], files["chase"]["train_step_us"] = 1000.0, 400.0
    return {"model": "small_cnn", "seed": seed, "files": files, "load": None, "machine": machine}


def test_summary_means_over_seeds_and_ratios_against_dense():
    train = [_train(m, s, a) for s in (0, 1) for m, a in (("dense", 0.91), ("rigl", 0.89), ("chase", 0.885))]
    table = cs.summarize(train, [_speed(0, 50.0), _speed(1, 100.0)])
    chase = next(r for r in table if r["method"] == "chase")
    assert chase["n"] == 2 and chase["test_accuracy"] == pytest.approx(0.885)
    assert chase["speedup_vs_dense"] == pytest.approx((2.0 + 1.0) / 2)
    assert chase["train_speedup_vs_dense"] == pytest.approx(2.5)
    assert next(r for r in table if r["method"] == "rigl")["train_speedup_vs_dense"] is None


@pytest.mark.parametrize("chase_us, chase_acc, verdict", [
    (50.0, 0.885, "met"), (80.0, 0.885, "missed"), (50.0, 0.87, "missed")])
def test_verdict_needs_speed_and_accuracy(chase_us, chase_acc, verdict):
    train = [_train("dense", 0, 0.91), _train("rigl", 0, 0.89), _train("chase", 0, chase_acc)]
    speed = [_speed(0, chase_us)]
    text = cs.render(cs.summarize(train, speed), planned=6, done=3, info=INFO, speed_rows=speed)
    assert "PARTIAL: 3 of 6 training runs" in text
    assert f"within 1 point) {verdict}." in text


def test_per_seed_table_names_each_seeds_machine():
    train = [_train(m, s, a) for s in (0, 1) for m, a in (("dense", 0.91), ("rigl", 0.89), ("chase", 0.885))]
    speed = [_speed(0, 50.0, machine="old vm"), _speed(1, 80.0, machine="new vm")]
    text = cs.render(cs.summarize(train, speed), planned=6, done=6, info=INFO, speed_rows=speed)
    assert "| small_cnn | 0 | M1 | 100 | 1.00x | 2.00x | 1.00 | 2.50x |" in text
    assert "| small_cnn | 1 | M2 | 100 | 1.00x | 1.25x | 1.00 | 2.50x |" in text
    assert "M1 = `old vm`; M2 = `new vm`" in text


def test_unknown_model_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown --models \['resnet50'\]; accepted: \['mobilenet_v2_small'"):
        cs.main(["--models", "small_cnn", "resnet50", "--out-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


@pytest.mark.real_data
def test_fashion_mnist_runs_read_the_accuracy_tables_data(fashion_mnist):
    # The images come in [0, 1]; an earlier version divided them by 255
    # again, and every run stayed at chance (10%).
    spec = cs.model_specs(quick=False)["small_cnn"]
    data = cs.load_data(spec, seed=0)
    (x, _), (x_test, _) = fashion_mnist
    assert data.x_train.shape[1:] == spec["shape"] and len(data.x_train) == spec["budget"].train_size
    assert data.x_train.max() == 1.0 and data.x_test.max() == x_test.max() == 1.0
    np.testing.assert_array_equal(data.x_test, x_test)


def test_report_counts_only_the_planned_runs(tmp_path):
    rows = [dict(_train(m, 0, a), budget={}, data="fashion_mnist") for m, a in
            (("dense", 0.91), ("rigl", 0.89), ("chase", 0.885))]
    (tmp_path / "chase_speed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cs.main(["--phase", "report", "--models", "small_cnn", "--seeds", "0", "--out-dir", str(tmp_path)])
    assert "Status: complete." in (tmp_path / "chase_speed.md").read_text()
    # Runs of other models do not count toward the plan of this invocation.
    cs.main(["--phase", "report", "--models", "resnet20", "--seeds", "0", "--out-dir", str(tmp_path)])
    assert "PARTIAL: 0 of 3 training runs" in (tmp_path / "chase_speed.md").read_text()
    cs.main(["--phase", "report", "--out-dir", str(tmp_path)])
    assert "PARTIAL: 3 of 27 training runs" in (tmp_path / "chase_speed.md").read_text()
