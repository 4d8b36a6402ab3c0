"""Sparse-training algorithms (mask updaters) and their registry.

`get("rigl")` returns an updater; callbacks in `keras_sparse.callbacks` run
them during `model.fit`.
"""

from keras_sparse.algorithms.base import Target, Updater, get, register, registered_names
from keras_sparse.algorithms.dst import DSR, MEST, SET, DeepR, NeurRev, RigL, RigLITOP
from keras_sparse.algorithms.chase import Chase
from keras_sparse.algorithms.gradual import GMP, GraNet, GraNetST
from keras_sparse.algorithms.optimizer_state import reset_slots

__all__ = [
    "Chase", "DSR", "DeepR", "GMP", "GraNet", "GraNetST", "MEST", "NeurRev", "RigL", "RigLITOP", "SET",
    "Target", "Updater", "get", "register", "registered_names", "reset_slots",
]
