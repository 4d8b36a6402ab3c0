"""tf.distribute reliability: masks identical on every replica/worker.

TensorFlow fixes its device list at the first op, so each scenario runs in a
subprocess (`benchmarks/rel_distributed.py`) and returns JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.rel_distributed", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _check_mirrored(result, mask_op):
    assert result["mask_op"] == mask_op
    assert result["replicas"] == 2
    assert result["init_masks_equal_single"]
    assert result["masks_equal_single"]
    assert result["max_abs_weight_diff_vs_single"] < 1e-5
    # A replica-context assign of replica-dependent values must not split
    # the mask (SparseWrapper uses aggregation="only_first_replica").
    assert result["replica_context_assign_diverges"] is False
    for check in result["replica_checks"]:
        assert check["replicas"] == 2
        assert check["mask_kind"] == "MirroredVariable"
        assert check["masks_identical"], check
        assert check["masks_binary"], check
        assert check["pruned_zero_every_replica"], check
        assert check["weights_identical"], check
        if mask_op is None:  # masks as drawn: exact per-layer counts
            assert check["active"] == check["configured_active"], check
    target = 0.8 if mask_op is None else 0.9
    assert abs(result["global_sparsity"] - target) < 1e-3


def test_mirrored_two_cpus_matches_single_device():
    results = _run("mirrored", "none,random_pruning")
    _check_mirrored(results[0], None)
    _check_mirrored(results[1], "random_pruning")


@pytest.mark.slow
@pytest.mark.parametrize("mask_op", ["snip"])  # DST updaters join MASK_OPS later
def test_mirrored_mask_changing_ops(mask_op):
    (result,) = _run("mirrored", mask_op)
    _check_mirrored(result, mask_op)


@pytest.mark.slow
def test_multi_worker_two_processes_masks_identical():
    result = _run("multi_worker", "150", timeout=200)
    assert not result["timed_out"] and result["return_codes"] == [0, 0], result
    assert result["replicas"] == 2
    assert result["masks_identical_across_workers"]
    assert result["weights_identical_across_workers"]
    assert result["masks_equal_single"]
    assert result["pruned_zero_every_worker"]
    assert result["max_abs_weight_diff_vs_single"] < 1e-5
    assert all(abs(s - 0.8) < 1e-3 for s in result["global_sparsity"])
