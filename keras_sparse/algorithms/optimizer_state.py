"""The ONE place that touches optimizer slots (private Keras 3 internals).

Keras 3 optimizers keep per-variable slots in lists indexed by
`optimizer._get_variable_index(variable)`: `momentums` (SGD), `_momentums`
and `_velocities` (Adam, AdamW, Nadam, RMSprop), `_velocity_hats` (AMSGrad),
`_accumulators` (Adagrad, Adadelta, Ftrl...). None of this is public API, so
it lives here only; `tests/test_algorithms_optimizer_state.py` fails loudly when a
Keras release changes it.
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["SLOT_ATTRIBUTES", "optimizer_slots", "reset_slots"]

SLOT_ATTRIBUTES = (
    "momentums",
    "_momentums",
    "_velocities",
    "_velocity_hats",
    "_accumulators",
    "_accumulated_gradients",
    "_average_gradients",
    "_momentum_cache",
)


def _inner(optimizer):
    # LossScaleOptimizer wraps the optimizer that owns the slots.
    return getattr(optimizer, "inner_optimizer", optimizer)


def optimizer_slots(optimizer: keras.optimizers.Optimizer, variable: keras.Variable) -> list[keras.Variable]:
    """The slot variables of `optimizer` that have the shape of `variable`.

    Returns an empty list when the optimizer is not built yet (no slots).

    Raises:
        RuntimeError: the optimizer is built but Keras's private slot layout
            is not the one this function knows (Keras changed).
    """
    opt = _inner(optimizer)
    if not getattr(opt, "built", False):
        return []
    try:
        index = opt._get_variable_index(variable)
    except (AttributeError, KeyError) as e:
        raise RuntimeError(
            "keras_sparse could not find the optimizer slots of variable "
            f"{variable.path!r} via optimizer._get_variable_index (private Keras "
            f"API, keras {keras.__version__}). Keras internals changed; "
            "please report it."
        ) from e
    slots = []
    for attr in SLOT_ATTRIBUTES:
        values = getattr(opt, attr, None)
        if isinstance(values, (list, tuple)) and len(values) > index:
            slot = values[index]
            if slot is not None and tuple(slot.shape) == tuple(variable.shape):
                slots.append(slot)
    return slots


def reset_slots(optimizer: keras.optimizers.Optimizer | None, variable: keras.Variable, new_entries: np.ndarray) -> int:
    """Zeroes the optimizer moments of `variable` where `new_entries` is 1.

    Args:
        optimizer: the model's optimizer (None or unbuilt: nothing to do).
        variable: a masked weight.
        new_entries: 0/1 array of the variable's shape (the regrown entries).

    Returns:
        The number of slot variables reset.
    """
    if optimizer is None or not np.any(new_entries):
        return 0
    slots = optimizer_slots(optimizer, variable)
    keep = (1.0 - np.asarray(new_entries, np.float32))
    for slot in slots:
        slot.assign(slot * keras.ops.cast(keep, slot.dtype))
    return len(slots)
