"""examples/quickstart.py and examples/export_and_train_on_device.py: argument
handling and quick end-to-end runs on small synthetic data (one on a real
Fashion-MNIST subset, marked real_data). No timing assertions."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

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
    with pytest.raises(SystemExit):
        ex.parse_args(["--device-samples", "8"])


def test_export_and_train_on_device_quick_synthetic(tmp_path):
    pytest.importorskip("ai_edge_litert")
    res = _load("export_and_train_on_device").main([
        "--quick", "--synthetic", "--train-size", "256", "--test-size", "32",
        "--device-samples", "64", "--device-epochs", "1", "--verbose", "0",
        "--out-dir", str(tmp_path)])
    inf = res["inference"]
    assert inf["bytes"] < inf["dense_float32_bytes"]
    assert inf["images"] == 32 and inf["agreement"] >= 0.95
    dev = res["on_device"]
    assert len(dev["losses"]) == 1 and all(math.isfinite(v) for v in dev["losses"])
    assert dev["zeros_kept"]
    assert np.load(tmp_path / "pred.npy").shape == (32, 10)
