"""Every public class of keras_sparse through the shared checks of tests/testing.py.

- `run_serialization_test`: each algorithm, named callback, schedule and
  the generic callback survive `get_config` / `from_config` and Keras
  (de)serialization.
- `run_layer_test`: `SparseWrapper` around each supported layer family
  masks its forward pass exactly and round-trips its config.
- `run_updater_invariants`: each registered algorithm keeps binary masks,
  exact zeros and, for the drop-and-grow family, the non-zero count.
"""

import inspect

import keras
import pytest
from testing import GRADUAL, run_layer_test, run_serialization_test, run_updater_invariants

import keras_sparse as ks
from keras_sparse import algorithms as alg
from keras_sparse import schedules

NAMED_CALLBACKS = sorted(
    name for name, obj in vars(ks.callbacks).items()
    if inspect.isclass(obj) and issubclass(obj, ks.callbacks.DynamicSparseTraining)
    and obj is not ks.callbacks.DynamicSparseTraining and not name.startswith("_"))

SCHEDULES = [
    schedules.UpdateSchedule(10, 0, 100), schedules.ConstantFraction(0.3), schedules.CosineDecay(0.3, alpha=0.1),
    schedules.StagewiseDecay(0.3), schedules.CubicSparsity(0.0, 0.9),
]


@pytest.mark.parametrize("name", alg.registered_names())
def test_algorithm_serialization(name):
    run_serialization_test(alg.get(name))


@pytest.mark.parametrize("name", NAMED_CALLBACKS)
def test_named_callback_serialization(name):
    run_serialization_test(getattr(ks.callbacks, name)())


def test_generic_callback_serialization():
    run_serialization_test(ks.callbacks.DynamicSparseTraining(alg.RigL(update_interval=7, seed=3)))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedule_serialization(schedule):
    run_serialization_test(schedule)


@pytest.mark.parametrize("make_layer, input_shape", [
    (lambda: keras.layers.Dense(6), (8,)),
    (lambda: keras.layers.Conv2D(4, 3), (6, 6, 3)),
    (lambda: keras.layers.DepthwiseConv2D(3), (6, 6, 3)),
    (lambda: keras.layers.Conv1D(4, 3), (7, 3)),
    (lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=5), (8,)),
], ids=["dense", "conv2d", "depthwise", "conv1d", "einsum"])
def test_sparse_wrapper_layer(make_layer, input_shape):
    run_layer_test(make_layer(), input_shape)


@pytest.mark.parametrize("name", alg.registered_names())
def test_updater_invariants(name):
    history = run_updater_invariants(name)
    assert len(history) == 6  # 96 examples, batch 16: updates at steps 2 and 4 (stop at 75%)
    totals = [sum(counts) for counts in history]
    if name in GRADUAL:  # pruners: the count only goes down
        assert all(b <= a for a, b in zip(totals, totals[1:])) and totals[-1] < totals[0], totals
    elif name in ("dsr", "chase"):  # reallocate between weights, keep the total
        assert totals == [totals[0]] * len(totals), totals
    else:  # drop and grow per weight
        assert all(counts == history[0] for counts in history), history
