"""Masks from anywhere: pruning at initialization and mask files.

- `snip`, `grasp`, `synflow`, `random_pruning` (and `prune_at_init(model,
  method, ...)`): one-shot mask makers, scope global or per layer.
- `snip_scores`, `grasp_scores`, `synflow_scores`: the raw scores.
- `get_masks`, `save_masks`, `load_masks`, `apply_masks`: masks as dicts and
  `.npz` files, applied onto a fresh model of the same architecture.
"""

from keras_sparse.pruning.core import get_masks, masks_from_scores
from keras_sparse.pruning.io import apply_masks, load_masks, save_masks
from keras_sparse.pruning.methods import (
    METHODS,
    grasp,
    grasp_scores,
    prune_at_init,
    random_pruning,
    snip,
    snip_scores,
    synflow,
    synflow_round_budgets,
    synflow_scores,
)

__all__ = [
    "METHODS",
    "apply_masks",
    "get_masks",
    "grasp",
    "grasp_scores",
    "load_masks",
    "masks_from_scores",
    "prune_at_init",
    "random_pruning",
    "save_masks",
    "snip",
    "snip_scores",
    "synflow",
    "synflow_round_budgets",
    "synflow_scores",
]
