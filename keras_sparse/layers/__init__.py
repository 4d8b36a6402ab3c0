"""Layer wrappers that hold and enforce weight masks."""

from keras_sparse.layers.prunable import (
    get_prunable_weights,
    is_prunable,
    register_prunable_weights,
)
from keras_sparse.layers.sparse_wrapper import MaskConstraint, MaskedWeight, SparseWrapper

__all__ = [
    "MaskConstraint",
    "MaskedWeight",
    "SparseWrapper",
    "get_prunable_weights",
    "is_prunable",
    "register_prunable_weights",
]
