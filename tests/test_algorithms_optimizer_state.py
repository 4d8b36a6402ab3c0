"""Fails loudly if Keras changes the private optimizer-slot layout we rely on."""

import keras
import numpy as np
import pytest

from keras_sparse.algorithms.optimizer_state import optimizer_slots, reset_slots

EXPECTED_SLOTS = {
    "SGD": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "Adam": lambda: keras.optimizers.Adam(),
    "AdamW": lambda: keras.optimizers.AdamW(),
    "RMSprop": lambda: keras.optimizers.RMSprop(momentum=0.9),
    "Nadam": lambda: keras.optimizers.Nadam(),
}
N_SLOTS = {"SGD": 1, "Adam": 2, "AdamW": 2, "RMSprop": 2, "Nadam": 2}


@pytest.mark.parametrize("name", sorted(EXPECTED_SLOTS))
def test_reset_slots_zeroes_exactly_the_new_entries(name):
    opt = EXPECTED_SLOTS[name]()
    v = keras.Variable(np.ones((3, 4), np.float32))
    other = keras.Variable(np.ones((3, 4), np.float32))
    opt.build([other, v])
    for _ in range(2):
        opt.apply([keras.ops.ones((3, 4)), keras.ops.ones((3, 4))], [other, v])
    slots = optimizer_slots(opt, v)
    assert len(slots) == N_SLOTS[name], (
        f"Keras {keras.__version__} changed the private slot layout of {name}: "
        "update keras_sparse/algorithms/optimizer_state.py"
    )
    assert all(np.any(s.numpy() != 0) for s in slots)
    new = np.zeros((3, 4), np.float32)
    new[0, 1] = new[2, 3] = 1
    assert reset_slots(opt, v, new) == N_SLOTS[name]
    for s in slots:
        assert np.all(s.numpy()[new == 1] == 0)
        assert np.all(s.numpy()[new == 0] != 0)
    for s in optimizer_slots(opt, other):  # other variables untouched
        assert np.all(s.numpy() != 0)


def test_loss_scale_optimizer_reaches_inner_slots():
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    v = keras.Variable(np.ones((4,), np.float32))
    opt.build([v])
    opt.apply([keras.ops.ones((4,))], [v])
    assert len(optimizer_slots(opt, v)) == 2


def test_unbuilt_optimizer_is_noop():
    assert reset_slots(keras.optimizers.Adam(), keras.Variable(np.ones(2)), np.ones(2)) == 0
