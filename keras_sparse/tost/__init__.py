"""ToST: a sparse-training toolkit of tweaks that vanish by the end of training.

- `GhostGate` / `add_ghost_skips` / `remove_ghost_skips`: gated extra skips.
- `GhostSwish` / `add_ghost_swish` / `swap_to_relu`: Swish annealed to ReLU.
- `GhostJump`: the reference's gated 1x1 conv + BN jump (default ghost skip).
- `search_lrsi_scales` / `apply_lrsi_scales`: layer-wise re-scaled init,
  scales searched before training (default LRSI).
- `LRSIScale` / `add_lrsi` / `fold_lrsi`: LRSI with scales trained jointly.
- `LabelSmoothingCrossentropy`, `keras_smoothing_for_tost`: label smoothing.
- `ToSTCallback` (schedules) and `ToST` (all together).

Reference:
    Jaiswal et al., "Training Your Sparse Neural Network Better with Any
    Mask", ICML 2022.
"""

from keras_sparse.tost.label_smoothing import LabelSmoothingCrossentropy, keras_smoothing_for_tost
from keras_sparse.tost.layers import GhostGate, GhostJump, GhostSwish, LRSIScale
from keras_sparse.tost.lrsi import apply_lrsi_scales, search_lrsi_scales
from keras_sparse.tost.toolkit import ToST, ToSTCallback, ghost_schedule
from keras_sparse.tost.transforms import (
    add_ghost_skips,
    add_ghost_swish,
    add_lrsi,
    fold_lrsi,
    ghost_layers,
    remove_ghost_skips,
    swap_to_relu,
)

__all__ = [
    "GhostGate",
    "GhostJump",
    "GhostSwish",
    "LRSIScale",
    "LabelSmoothingCrossentropy",
    "ToST",
    "ToSTCallback",
    "add_ghost_skips",
    "add_ghost_swish",
    "add_lrsi",
    "apply_lrsi_scales",
    "fold_lrsi",
    "ghost_layers",
    "ghost_schedule",
    "keras_smoothing_for_tost",
    "remove_ghost_skips",
    "search_lrsi_scales",
    "swap_to_relu",
]
