"""tf.distribute reliability: every DST method, pruning at init and ToST.

TensorFlow fixes its device list at the first op, so each mode runs in one
subprocess (`benchmarks/rel_distributed.py`) that trains every requested
scenario and returns JSON; the tests below are parametrized over the
scenarios of that one run (one subprocess per strategy, not per method).

- MirroredStrategy over 2 logical CPUs, Keras `fit`.
- MultiWorkerMirroredStrategy, 2 worker processes on loopback ports, custom
  `strategy.run` loop driving the same keras_sparse callbacks (Keras 3.15
  `fit` fails under MWMS; see `benchmarks.rel_distributed._custom_loop`).

After every step: masks identical on every replica (each replica's own
copy), binary, pruned weights exactly 0 on every replica, ghost-gate alphas
identical; masks equal to a 1-device run's after every step; sparsity exact
for the method; final weights within 1e-5 of the 1-device run.

The default run covers a representative subset (static, RigL, SNIP, ToST
mirrored; RigL multi-worker); `-m slow` runs every scenario. With
KERAS_SPARSE_DIST_RESULTS=path the raw results are written there as JSON
(benchmarks/reliability.py builds its table from them).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.rel_distributed import all_scenarios  # noqa: E402

FAST_MIRRORED = ["static", "dst:rigl", "pai:snip", "tost"]
FAST_MULTI_WORKER = ["dst:rigl"]
SLOW_TIMEOUT = 590  # seconds; the slow MWMS run trains 15 scenarios on 2 workers

_CACHE = {}


def _run(mode, scenarios, timeout):
    key = (mode, tuple(scenarios))
    if key in _CACHE:
        return _CACHE[key]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    args = [mode, ",".join(scenarios)]
    if mode == "multi_worker":
        args.append(str(timeout - 30))  # workers are killed before this test's timeout
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.rel_distributed", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    _CACHE[key] = json.loads(lines[-1][len("RESULT "):])
    path = os.environ.get("KERAS_SPARSE_DIST_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump({f"{m}|{','.join(s)}": v for (m, s), v in _CACHE.items()}, f)
    return _CACHE[key]


def _check_scenario(row):
    scenario = row["scenario"]
    assert row["steps_checked"] == 8, row
    assert row["masks_binary"], row
    assert row["pruned_zero_every_replica"], row
    assert row["gates_identical"], row
    assert row["masks_equal_single_every_step"], row
    assert row["max_abs_weight_diff_vs_single"] < 1e-5, row
    assert row["sparsity"]["exact"], row["sparsity"]
    if scenario.startswith("dst:"):
        assert row["mask_changes"] >= 2, row  # the updates really changed masks
    if scenario == "tost":
        assert row["ghost_alpha_final"] == [0.0] and row["ghost_alpha_equal_single"], row


def _check_mirrored(row):
    _check_scenario(row)
    assert row["replicas"] == 2 and row["mask_kind"] == "MirroredVariable", row
    assert row["masks_identical"] and row["weights_identical"], row
    if row["scenario"] == "static":
        # A replica-context assign of replica-dependent values must not split
        # the mask (SparseWrapper uses aggregation="only_first_replica").
        assert row["replica_context_assign_diverges"] is False


def _check_multi_worker(result, row):
    assert not result["timed_out"] and result["return_codes"] == [0, 0], result
    assert result["replicas"] == 2
    _check_scenario(row)
    assert row["masks_identical_across_workers_every_step"], row
    assert row["weights_identical_across_workers"], row


def _row(rows, scenario):
    (row,) = [r for r in rows if r["scenario"] == scenario]
    return row


def test_mirrored_two_cpus_matches_single_device():
    rows = _run("mirrored", FAST_MIRRORED, timeout=300)
    assert [r["scenario"] for r in rows] == FAST_MIRRORED
    for row in rows:
        _check_mirrored(row)


def test_multi_worker_two_processes_match_single_device():
    result = _run("multi_worker", FAST_MULTI_WORKER, timeout=240)
    for scenario in FAST_MULTI_WORKER:
        _check_multi_worker(result, _row(result["scenarios"], scenario))


@pytest.mark.slow
@pytest.mark.parametrize("scenario", all_scenarios())
def test_mirrored_every_method(scenario):
    rows = _run("mirrored", all_scenarios(), timeout=SLOW_TIMEOUT)
    _check_mirrored(_row(rows, scenario))


@pytest.mark.slow
@pytest.mark.parametrize("scenario", all_scenarios())
def test_multi_worker_every_method(scenario):
    result = _run("multi_worker", all_scenarios(), timeout=SLOW_TIMEOUT)
    _check_multi_worker(result, _row(result["scenarios"], scenario))


def test_every_registered_method_is_a_scenario():
    import keras_sparse

    names = {s.partition(":")[2] for s in all_scenarios() if s.startswith("dst:")}
    assert names == set(keras_sparse.algorithms.registered_names())
    pai = {s.partition(":")[2] for s in all_scenarios() if s.startswith("pai:")}
    assert pai == set(keras_sparse.pruning.METHODS)
