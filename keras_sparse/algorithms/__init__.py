"""Sparse-training algorithms (mask updaters) and their registry.

`get("rigl")` returns an updater; callbacks in `keras_sparse.callbacks` run
them during `model.fit`. An algorithm is a policy (what each update drops
and grows, `Policy`) run by the shared engine (`engine.Engine`); see
`keras_sparse.algorithms.base` for writing a new one.
"""

from keras_sparse.algorithms.base import (
    Algorithm, LayerResult, Policy, SetupContext, Target, UpdateContext, Updater, get, register,
    registered_names,
)
from keras_sparse.algorithms.dst import DSR, MEST, SET, DeepR, NeurRev, RigL, RigLITOP
from keras_sparse.algorithms.chase import Chase
from keras_sparse.algorithms.gradual import GMP, GraNet, GraNetST, Pruner
from keras_sparse.algorithms.optimizer_state import reset_slots

__all__ = [
    "Algorithm", "Chase", "DSR", "DeepR", "GMP", "GraNet", "GraNetST", "LayerResult", "MEST",
    "NeurRev", "Policy", "Pruner", "RigL", "RigLITOP", "SET", "SetupContext", "Target",
    "UpdateContext", "Updater", "get", "register", "registered_names", "reset_slots",
]
