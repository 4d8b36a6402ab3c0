"""benchmarks/pai_diagnostics.py on tiny synthetic data (nothing trained)."""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from benchmarks import harness, pai_diagnostics
from keras_sparse import pruning


def _tiny_data(per_class=10):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), per_class).astype("int64")
    x = rng.random((len(y), 28, 28, 1)).astype("float32")
    return harness.BenchData(x, y, x[:20], y[:20])


def test_negative_share_counts_only_kept_entries():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, use_bias=False, name="d")])
    sparse = ks.sparsify(model, 0.5, "uniform", keep_dense=None, seed=0)
    sparse.get_layer("d").layer.kernel.assign(np.array([[-1, 2], [-3, 4], [5, -6], [7, 8]], "float32"))
    pruning.apply_masks(sparse, {"d/kernel": np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32")})
    # kept: -1, -3, -6, 8 -> 3 of 4 negative (the pruned 2, 4, 5, 7 do not count)
    assert pai_diagnostics.negative_share(sparse) == {"d/kernel": 0.75}


@pytest.mark.full
def test_measure_and_render_on_tiny_data():
    data = _tiny_data()
    probe = data.x_train[:32]
    records = [pai_diagnostics.measure("small_cnn", mask, 0, data, probe)
               for mask in ("random", "grasp", "grasp_t1")]
    for r in records:
        assert set(r["negative_share"]) == {"conv1/kernel", "conv2/kernel", "fc1/kernel",
                                            "logits/kernel"}
        assert all(0.0 <= v <= 1.0 for v in r["negative_share"].values())
        assert 0.0 <= r["dormant_at_init"] <= 1.0 and r["logit_std_at_init"] > 0
    # The T=1 and T=200 GraSP masks are different masks.
    assert records[1]["negative_share"] != records[2]["negative_share"]
    md = pai_diagnostics.render(records, {"date": "d", "platform": "p", "processor": "x",
                                          "cpu_count": 2, "gpus": [], "python": "3.11",
                                          "tensorflow": "t", "keras": "k",
                                          "keras_backend": "tensorflow", "numpy": "n"})
    assert "#### small_cnn" in md and "| GraSP (T=1) |" in md and "neg % conv2" in md


def test_unconnected_share_counts_output_units_without_kept_weights():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, use_bias=False, name="d")])
    sparse = ks.sparsify(model, 0.5, "uniform", keep_dense=None, seed=0)
    # columns = output units: unit 1 and unit 3 keep nothing
    pruning.apply_masks(sparse, {"d/kernel": np.array([[1, 0, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]], "float32")})
    assert pai_diagnostics.unconnected_share(sparse) == {"d/kernel": 0.5}


def test_uniform_distribution_is_measured_and_labelled(tmp_path):
    data = _tiny_data()
    rec = pai_diagnostics.measure("small_cnn", "random", 0, data, data.x_train[:32], "uniform")
    assert rec["distribution"] == "uniform" and set(rec["unconnected_share"]) == set(rec["negative_share"])
    # uniform keeps the first conv dense (RigL's convention): every output channel connected
    assert rec["unconnected_share"]["conv1/kernel"] == 0.0
    md = pai_diagnostics.render([rec], {"date": "d", "platform": "p", "processor": "x", "cpu_count": 2,
                                        "gpus": [], "python": "3.11", "tensorflow": "t", "keras": "k",
                                        "keras_backend": "tensorflow", "numpy": "n"})
    assert "UNIFORM per-layer budgets" in md and "unconnected logits" in md
