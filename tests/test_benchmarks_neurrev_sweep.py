"""Helpers of benchmarks/neurrev_sweep.py and benchmarks/dormant_itop.py (synthetic, fast)."""

import keras
import numpy as np
import pytest

from benchmarks import dormant_itop, neurrev_sweep
from keras_sparse import algorithms as alg


def test_negative_fraction_counts_active_nonzero_entries_only():
    w = np.array([[-1.0, 2.0, 0.0, -3.0], [-0.5, 0.0, 0.0, 4.0]])
    m = np.array([[1, 1, 1, 0], [1, 1, 0, 1]], np.float32)
    # Active non-zero: -1, 2, -0.5, 4 (the active zeros are just-grown entries).
    assert neurrev_sweep.negative_fraction([w], [m]) == [0.5]
    assert np.isnan(neurrev_sweep.negative_fraction([w], [np.zeros_like(m)])[0])


def test_cumulative_churn_is_ratio_times_updates():
    assert neurrev_sweep.cumulative_churn(0.1, 16) == pytest.approx(1.6)
    assert neurrev_sweep.cumulative_churn(0.0, 5) == 0.0


def _targets(*weights):
    return [alg.Target(f"l{i}/kernel", keras.Variable(np.asarray(w, np.float32)),
                       keras.Variable((np.asarray(w) != 0).astype(np.float32)), 0.0)
            for i, w in enumerate(weights)]


def test_neurrev_class_relaxes_ratio_of_the_nonzero_budget():
    w = np.zeros((10, 20), np.float32)
    w.flat[:40] = np.linspace(-1, 1, 40)  # s = 0.8: 40 of 200 active
    ts = _targets(w, np.ones((2, 2), np.float32))
    a = neurrev_sweep.neurrev_class(0.25)()
    a.setup(ts, 1000)
    assert a._relax == [10, 0]  # 0.25 * 40; the dense weight cannot relax
    # The sweep's r is not scaled by the update interval (the library default is).
    a = neurrev_sweep.neurrev_class(0.25)(update_interval=5)
    a.setup(ts, 1000)
    assert a._relax == [10, 0]
    assert "relax_ratio" not in a.get_config()  # the config is NeurRev's own


def test_sign_free_ablation_prunes_either_sign_and_keeps_sparsity():
    w0 = np.array([[0.9, -0.2, 0.3, -0.6, 0.4, 0, 0, 0, 0, 0]], np.float32)
    ts = _targets(w0)
    a = neurrev_sweep.neurrev_class(0.4, sign_free=True)(drop_fraction=0.2,
                                                        drop_fraction_decay="constant")
    a.setup(ts, 1000)  # 5 active, relax 2
    w = w0 + np.array([[0.5, 0.0, 0.01, 0.3, 0.2, 0, 0, 0, 0, 0]], np.float32)
    ts[0].weight.assign(w)
    g = np.array([[0, 0, 0, 0, 0, 0.5, 0.4, 0.3, 0.2, 0.1]], np.float32)
    stats = a.update(100, ts, [g])
    m = keras.ops.convert_to_numpy(ts[0].mask).ravel()
    assert m.sum() == 5
    # Drop 1 (|w| smallest: -0.2), grow 1 + 2 (idx 5, 6, 7). Search over
    # non-zero active entries by ascending delta: idx 2 (+0.31, delta 0.01)
    # and idx 4 (+0.6, delta 0.2): positive weights pruned, which plain S&A never does.
    np.testing.assert_array_equal(m, [1, 0, 0, 1, 0, 1, 1, 1, 0, 0])
    assert stats["l0/kernel"]["awakened"] == 0
    assert stats["l0/kernel"]["sign_free"] == 2


def _row(method, ratio, interval, acc, std=0.0):
    return {"method": method, "ratio": ratio, "interval": interval, "accuracy_mean": acc,
            "accuracy_std": std}


def test_choose_default_compares_constant_ratios_and_the_library_rule():
    rows = [_row("rigl", None, 11, 0.80, 0.01), _row("rigl", None, 50, 0.81, 0.01),
            _row("neurrev", 0.01, 11, 0.805), _row("neurrev", 0.01, 50, 0.812),
            _row("neurrev", 0.03, 11, 0.795), _row("neurrev", 0.03, 50, 0.815),
            _row("neurrev", 0.1, 11, 0.70), _row("neurrev", 0.1, 50, 0.82)]
    choice = neurrev_sweep.choose_default(rows, default_ratio=lambda i: 0.01 if i < 50 else 0.1)
    assert choice["at_least_rigl"] == [0.01]
    assert choice["within_noise"] == [0.01, 0.03]
    assert choice["best_worst_case"] == 0.01
    assert choice["gaps_to_rigl"]["0.1"] == pytest.approx(-0.10)
    assert choice["library_default"]["11"]["gap"] == pytest.approx(0.005)
    assert choice["library_default"]["50"]["gap"] == pytest.approx(0.01)


def test_library_default_ratio_follows_neurrev():
    assert neurrev_sweep.library_default_ratio(100) == pytest.approx(0.1)
    assert neurrev_sweep.library_default_ratio(11) == pytest.approx(0.1)  # independent of the interval


def test_probe_steps_include_start_and_end():
    assert dormant_itop.probe_steps(25, 10) == [0, 10, 20, 25]
    assert dormant_itop.probe_steps(20, 10) == [0, 10, 20]
    with pytest.raises(ValueError, match="every >= 1"):
        dormant_itop.probe_steps(20, 0)
