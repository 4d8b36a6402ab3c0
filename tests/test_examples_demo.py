"""Tests for examples/demo.py: argument handling (fast) and a quick end-to-end
run (about 20 s on 2 cores, in the default run; needs the real Fashion-MNIST
files, skips without them)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from testing import assert_export_choice_holds

DEMO_PATH = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("keras_sparse_demo", DEMO_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_demo_defaults():
    args = _load_demo().parse_args([])
    assert (args.epochs, args.batch_size, args.sparsity, args.distribution) == (3, 128, 0.9, "erk")
    assert not args.quick


def test_demo_quick_flag_and_env(monkeypatch):
    demo = _load_demo()
    assert demo.parse_args(["--quick", "--epochs", "7"]).epochs == 1
    monkeypatch.setenv("KERAS_SPARSE_DEMO_QUICK", "1")
    args = demo.parse_args([])
    assert args.quick and args.epochs == 1


def test_demo_rejects_bad_epochs():
    with pytest.raises(SystemExit):
        _load_demo().parse_args(["--epochs", "0"])


def test_demo_steps_end_with_summary():
    demo = _load_demo()
    assert demo.STEPS[0] is demo.step_load_data
    assert demo.STEPS[-1] is demo.step_summary


def test_demo_has_dense_baseline_tflite_and_on_device_steps():
    demo = _load_demo()
    names = [step.__name__ for step in demo.STEPS]
    for name in ("step_sparse_training", "step_dense_baseline", "step_tflite_export",
                 "step_on_device_training"):
        assert name in names
    assert demo.parse_args([]).algorithm == "neurrev"


@pytest.mark.real_data
def test_demo_quick_end_to_end(tmp_path, fashion_mnist):
    ctx = _load_demo().main(["--quick", "--verbose", "0", "--out-dir", str(tmp_path)])
    sparse = ctx.results["sparse"]
    assert abs(sparse["total_sparsity"] - 0.9) < 1e-3
    # Better than chance (10 classes) after one quick epoch.
    assert sparse["test_accuracy"] > 0.15
    assert ctx.results["strip"]["max_abs_output_diff"] < 1e-5
    assert ctx.results["dense"]["test_accuracy"] > 0.15
    tfl = ctx.results["tflite"]
    assert_export_choice_holds(tfl)
    assert tfl["agreement"] >= 0.99 and tfl["images"] == 1000
    on_device = ctx.results["on_device"]
    assert len(on_device["losses"]) == 5 and all(math.isfinite(v) for v in on_device["losses"])
    assert on_device["zeros_kept"]
    # Sparse weight storage: the trainable file is smaller than the dense inference file.
    assert on_device["bytes"] < tfl["dense_float32_bytes"]
