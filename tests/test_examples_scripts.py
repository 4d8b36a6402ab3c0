"""examples/quickstart.py, examples/export_and_train_on_device.py and
examples/tost_on_fixed_mask.py: argument handling and quick end-to-end runs on
small synthetic data (and on real Fashion-MNIST subsets, marked real_data).
No timing assertions."""

import importlib.util
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from testing import assert_export_choice_holds

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quickstart_args():
    qs = _load("quickstart")
    args = qs.parse_args(["--quick", "--epochs", "5"])
    assert (args.epochs, args.train_size, args.test_size) == (1, 5000, 2000)
    assert qs.parse_args(["--quick", "--synthetic"]).train_size is None  # synthetic: own small sizes
    assert qs.parse_args([]).epochs == 3 and qs.parse_args([]).distribution == "erk"
    assert [qs.rigl_interval(s) for s in (40, 500, 5000)] == [10, 50, 100]
    with pytest.raises(SystemExit):
        qs.parse_args(["--epochs", "0"])


def test_quickstart_quick_synthetic_end_to_end():
    res = _load("quickstart").main(["--quick", "--synthetic", "--train-size", "256",
                                    "--test-size", "64", "--verbose", "0"])
    assert abs(res["static"]["sparsity"] - 0.9) < 1e-3
    assert abs(res["rigl"]["sparsity"] - 0.9) < 1e-3  # RigL conserves the budget
    assert res["strip"]["max_abs_output_diff"] < 1e-5
    assert abs(res["strip"]["kernel_zero_fraction"] - 0.9) < 1e-2
    assert 0.0 <= res["dense"]["accuracy"] <= 1.0


@pytest.mark.real_data
def test_quickstart_quick_real_subset(fashion_mnist):
    res = _load("quickstart").main(["--quick", "--train-size", "3000", "--test-size", "500",
                                    "--no-dense", "--verbose", "0"])
    assert res["train_size"] == 3000 and res["test_size"] == 500
    assert res["static"]["accuracy"] > 0.15 and res["rigl"]["accuracy"] > 0.15  # chance: 0.1
    assert "dense" not in res


def test_export_args():
    ex = _load("export_and_train_on_device")
    args = ex.parse_args(["--quick"])
    assert (args.epochs, args.train_size, args.test_size, args.device_samples) == (1, 5000, 1000, 512)
    assert (args.weight_storage, args.sparse_matmul) == ("dense", "off")
    with pytest.raises(SystemExit):
        ex.parse_args(["--device-samples", "8"])
    with pytest.raises(SystemExit):
        ex.parse_args(["--sparse-matmul", "yes"])


def test_export_and_train_on_device_quick_synthetic(tmp_path):
    pytest.importorskip("ai_edge_litert")
    res = _load("export_and_train_on_device").main([
        "--quick", "--synthetic", "--train-size", "256", "--test-size", "32",
        "--device-samples", "64", "--device-epochs", "1", "--verbose", "0",
        "--weight-storage", "sparse", "--sparse-matmul", "on",
        "--out-dir", str(tmp_path)])
    inf = res["inference"]
    assert_export_choice_holds(inf)
    assert inf["images"] == 32 and inf["agreement"] >= 0.95
    dev = res["on_device"]
    assert len(dev["losses"]) == 1 and all(math.isfinite(v) for v in dev["losses"])
    assert dev["zeros_kept"]
    assert np.load(tmp_path / "pred.npy").shape == (32, 10)


# examples/tost_on_fixed_mask.py: a fixed mask (prune-at-init or a lottery
# ticket) trained plainly and with ToST, finalized back to plain ReLU.

def _zero_pattern(model):
    return [np.asarray(w.numpy()) == 0 for w in model.weights if w.path.endswith("kernel")]


def test_tost_example_args(capsys):
    ex = _load("tost_on_fixed_mask")
    args = ex.parse_args(["--quick", "--mask", "lth"])
    assert (args.epochs, args.depth, args.train_size, args.test_size) == (1, 8, 2000, 1000)
    assert args.lth_max_prune == 0.8
    full = ex.parse_args([])
    assert (full.mask, full.epochs, full.depth, full.train_size, full.lth_max_prune) == (
        "snip", 3, 20, 20000, 0.2)
    assert ex.parse_args(["--method", "grasp"]).mask == "grasp"  # the old flag still works
    assert ex.parse_args(["--quick", "--synthetic"]).train_size == ex.SYNTHETIC_TRAIN
    for argv, received, accepted in [
            (["--mask", "imp"], "'imp'", "snip, grasp, synflow, random, lth"),
            (["--variants", "none", "swish"], "swish", "none, tost, gsk"),
            (["--sparsity", "1.0"], "1.0", "(0, 1)"),
            (["--lth-max-prune", "0"], "0", "(0, 1)"),
            (["--depth", "10"], "10", "6n + 2"),
            (["--epochs", "0"], "0", ">= 1")]:
        with pytest.raises(SystemExit):
            ex.parse_args(argv)
        err = capsys.readouterr().err
        assert received in err and accepted in err, (argv, err)


def _check_tost_example(res, target):
    from keras_sparse import tost

    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) == {"none", "tost"}
    for variant, row in rows.items():
        assert isinstance(row["accuracy"], float) and 0.0 <= row["accuracy"] <= 1.0
        assert abs(row["sparsity"] - target) < 1e-3
        assert abs(row["kernel_zero_fraction"] - target) < 1e-3
        assert row["activations"] == ["ReLU"] and row["tost_layers_left"] == 0
        final = res["final_models"][f"{variant}/seed0"]
        # measured on the model itself: plain Keras layers, no ToST layer, only ReLU
        layer_types = {type(layer) for layer in final.layers}
        assert not layer_types & {tost.GhostGate, tost.GhostSwish, tost.LRSIScale}
        assert any(issubclass(t, keras.layers.ReLU) for t in layer_types)
        zeros = _zero_pattern(final)
        assert abs(sum(z.sum() for z in zeros) / sum(z.size for z in zeros) - target) < 1e-3
    tost_row = rows["tost"]
    assert tost_row["beta"] > 1.0  # Swish annealed towards ReLU before the swap
    assert 0.0 <= tost_row["accuracy_with_swish"] <= 1.0 and abs(tost_row["swap_accuracy_change"]) <= 1.0
    # the same fixed mask in both variants
    same = zip(_zero_pattern(res["final_models"]["none/seed0"]),
               _zero_pattern(res["final_models"]["tost/seed0"]))
    assert all(np.array_equal(a, b) for a, b in same)
    assert "| none |" in res["table"] and "| tost |" in res["table"]


def test_tost_example_quick_synthetic_snip(capsys):
    res = _load("tost_on_fixed_mask").main(["--quick", "--synthetic", "--mask", "snip",
                                            "--sparsity", "0.9", "--train-size", "128",
                                            "--test-size", "64"])
    _check_tost_example(res, 0.9)
    out = capsys.readouterr().out
    assert "snip 90%: trained plainly" in out and "with ToST" in out


def test_tost_example_quick_synthetic_lth():
    res = _load("tost_on_fixed_mask").main(["--quick", "--synthetic", "--mask", "lth",
                                            "--sparsity", "0.9", "--train-size", "128",
                                            "--test-size", "64"])
    _check_tost_example(res, 0.9)
    assert all(r["lth_rounds"] == 2 for r in res["rows"])  # 0.2 ** 1 > 0.1 >= 0.2 ** 2


@pytest.mark.real_data
def test_tost_example_quick_real_subset_lth(fashion_mnist):
    res = _load("tost_on_fixed_mask").main(["--quick", "--mask", "lth", "--train-size", "1000",
                                            "--test-size", "500"])
    assert all((r["train_size"], r["test_size"], r["synthetic"]) == (1000, 500, False)
               for r in res["rows"])
    _check_tost_example(res, 0.95)


# examples/personalize_head_on_device.py: a head trained on the device
# (runner process) on top of a frozen sparse backbone.

def test_personalize_head_args():
    ex = _load("personalize_head_on_device")
    args = ex.parse_args(["--quick"])
    assert (args.base_epochs, args.user_samples, args.device_epochs) == (1, 48, 3)
    with pytest.raises(SystemExit):
        ex.parse_args(["--user-samples", "4"])


def test_personalize_head_quick(tmp_path):
    pytest.importorskip("ai_edge_litert")
    res = _load("personalize_head_on_device").main(["--quick", "--out-dir", str(tmp_path)])
    assert res["trained_weights"] == ["user_head_kernel", "user_head_bias"]
    assert res["frozen_layers"] > 20
    assert set(res["checkpoint_arrays"]) == {
        "user_head_kernel", "user_head_bias", "step",
        "user_head_kernel__slot0", "user_head_kernel__slot1",
        "user_head_bias__slot0", "user_head_bias__slot1"}
    assert res["device_losses"][-1] < res["device_losses"][0]
    assert res["accuracy_after"] > res["accuracy_before"]
