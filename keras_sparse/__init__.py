"""keras_sparse: train sparse neural networks with Keras 3 and ship them to phones.

Public API:
    - `sparsify(model, sparsity, distribution="erk")`: wrap prunable layers
      with masks (uniform / ER / ERK allocation).
    - `strip(model)`: back to a plain Keras model with exact zeros;
      `strip(model, remove_channels=True)` also takes masked-out channels
      out physically (`keras_sparse.channels`).
    - `summary(model)`, `sparsity_report(model)`: per-layer sparsity and FLOPs.
    - `masked_weights(model)`, `sparsity_counts(model)`: the masked weights
      (`"layer/weight"`, wrapper, weight, mask) and their zero counts.
    - `keras_sparse.layers.SparseWrapper`: the mask-holding layer wrapper.
    - `keras_sparse.callbacks`: `model.fit` callbacks.
    - `keras_sparse.allocation`, `keras_sparse.masks`: the underlying math.
"""

from keras_sparse import (
    algorithms,
    allocation,
    callbacks,
    channels,
    datasets,
    diagnostics,
    layers,
    lottery,
    masks,
    models,
    pruning,
    schedules,
    tost,
)
from keras_sparse.model_view import MaskedWeightRecord, SparsityCounts, masked_weights, sparsity_counts
from keras_sparse.report import SparsityReport, sparsity_report, summary
from keras_sparse.sparsify import sparse_wrappers, sparsify, strip
from keras_sparse.version import __version__

__all__ = [
    "MaskedWeightRecord",
    "SparsityCounts",
    "SparsityReport",
    "__version__",
    "algorithms",
    "allocation",
    "callbacks",
    "channels",
    "datasets",
    "diagnostics",
    "layers",
    "lottery",
    "masked_weights",
    "masks",
    "models",
    "pruning",
    "schedules",
    "sparse_wrappers",
    "sparsify",
    "sparsity_counts",
    "sparsity_report",
    "strip",
    "summary",
    "tost",
]
