"""Shared plumbing of the mask makers: masks as dicts, data, loss, selection.

Masks are handled as `{"layer_name/weight_name": np.ndarray}` dicts (the same
keys `save_masks` writes). Selection from scores reuses
`keras_sparse.masks.topk_mask` and `keras_sparse.allocation.allocate`.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterable, Iterator, Mapping

import keras
import numpy as np

from keras_sparse import allocation
from keras_sparse import masks as mask_math
from keras_sparse.model_utils import check_graph_model
from keras_sparse.model_view import masked_weights, sparse_wrappers
from keras_sparse.sparsify import sparsify

__all__ = [
    "SCOPES",
    "as_sparse_model",
    "get_masks",
    "iter_batches",
    "masked_weight_table",
    "masks_from_scores",
    "resolve_loss",
    "set_masks",
]

SCOPES = ("global", "layer")


def masked_weight_table(model: keras.Model) -> dict[str, tuple[Any, Any, Any]]:
    """`{"layer/weight": (wrapper, weight, mask)}` for every masked weight."""
    return {r.key: (r.wrapper, r.weight, r.mask) for r in masked_weights(model)}


def get_masks(model: keras.Model) -> dict[str, np.ndarray]:
    """The current masks of a sparse model as `{"layer/weight": array}`.

    Args:
        model: a model with `SparseWrapper` layers.

    Returns:
        A dict of float32 0/1 arrays keyed by `"layer_name/weight_name"`.

    Raises:
        ValueError: if the model has no `SparseWrapper`.
    """
    table = masked_weight_table(model)
    if not table:
        raise ValueError(
            f"Model {model.name!r} has no SparseWrapper layer, so it has no "
            "masks. Use `keras_sparse.sparsify(model, sparsity)` or a mask "
            "maker from `keras_sparse.pruning` first."
        )
    return {key: np.asarray(mask.numpy(), np.float32) for key, (_, _, mask) in table.items()}


def set_masks(model: keras.Model, new_masks: Mapping[str, np.ndarray]) -> None:
    """Assigns masks (already validated) and zeroes the pruned weights."""
    table = masked_weight_table(model)
    touched = []
    for key, value in new_masks.items():
        wrapper, _, mask = table[key]
        mask.assign(np.asarray(value, np.float32))
        if wrapper not in touched:
            touched.append(wrapper)
    for wrapper in touched:
        wrapper.apply_masks()


def as_sparse_model(model: keras.Model, what: str) -> keras.Model:
    """`model` itself if it has `SparseWrapper`s, else a fully-dense wrapped copy.

    A dense model is wrapped with `sparsify(model, 0.0, "uniform",
    keep_dense=None)`: every prunable layer gets an all-ones mask and keeps its
    weights, so the mask maker sees the dense initialization.
    """
    check_graph_model(model, what)
    if sparse_wrappers(model):
        return model
    return sparsify(model, 0.0, distribution="uniform", keep_dense=None, seed=0)


def check_scope(scope: str) -> str:
    if not isinstance(scope, str) or scope.lower() not in SCOPES:
        raise ValueError(
            f"Unknown `scope`: {scope!r}. Accepted: 'global' (one threshold "
            "over all masked weights) or 'layer' (per-weight budgets from "
            "`distribution`)."
        )
    return scope.lower()


def check_distribution(distribution) -> None:
    if isinstance(distribution, Mapping):
        for key, value in distribution.items():
            mask_math.validate_sparsity(value, f"distribution[{key!r}]")
        return
    if not isinstance(distribution, str) or distribution.lower() not in allocation.DISTRIBUTIONS:
        raise ValueError(
            f"Unknown `distribution`: {distribution!r}. Accepted: "
            f"{', '.join(map(repr, allocation.DISTRIBUTIONS))} or a dict "
            "{'layer/weight': sparsity}."
        )


def layer_budgets(
    shapes: Mapping[str, tuple[int, ...]],
    sparsity: float,
    distribution: str | Mapping[str, float],
) -> dict[str, float]:
    """Per-weight sparsity for scope "layer"."""
    if isinstance(distribution, Mapping):
        unknown = sorted(set(distribution) - set(shapes))
        if unknown:
            raise ValueError(
                f"`distribution` names {unknown}, which are not masked weights "
                f"of the model. Accepted keys: {sorted(shapes)}."
            )
        return {
            key: mask_math.validate_sparsity(distribution.get(key, 0.0), f"distribution[{key!r}]")
            for key in shapes
        }
    return allocation.allocate(dict(shapes), sparsity, distribution.lower())


def masks_from_scores(
    scores: Mapping[str, np.ndarray],
    sparsity: float,
    scope: str = "global",
    distribution: str | Mapping[str, float] = "erk",
    current: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Keeps the highest-scoring entries: globally or with per-weight budgets.

    Args:
        scores: `{"layer/weight": scores}`; higher means more important.
        sparsity: target fraction of zeros over all the weights in `scores`.
        scope: `"global"` ranks all entries together (one threshold);
            `"layer"` keeps the top `1 - s_i` of each weight, with `s_i` from
            `keras_sparse.allocation.allocate(shapes, sparsity, distribution)`
            or from a `{"layer/weight": s_i}` dict.
        distribution: budgets for scope `"layer"`.
        current: masks already in place; their zeros are never revived.

    Returns:
        `{"layer/weight": mask}` float32 0/1 arrays.
    """
    sparsity = mask_math.validate_sparsity(sparsity)
    scope = check_scope(scope)
    prepared = {}
    for key, value in scores.items():
        value = np.array(value, dtype=np.float64)
        value[np.isnan(value)] = -np.inf
        if current is not None and key in current:
            value = np.where(np.asarray(current[key]) > 0, value, -np.inf)
        prepared[key] = value
    if scope == "global":
        keys = list(prepared)
        flat = np.concatenate([prepared[k].reshape(-1) for k in keys])
        keep = mask_math.topk_mask(flat, mask_math.num_active(flat.size, sparsity))
        out, start = {}, 0
        for key in keys:
            size = prepared[key].size
            out[key] = keep[start : start + size].reshape(prepared[key].shape)
            start += size
        return out
    budgets = layer_budgets({k: v.shape for k, v in prepared.items()}, sparsity, distribution)
    return {
        key: mask_math.topk_mask(value, mask_math.num_active(value.size, budgets[key]))
        for key, value in prepared.items()
    }


def resolve_loss(model: keras.Model, loss, what: str):
    """The loss callable: `loss` if given, else the compiled loss of `model`."""
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                f"`{what}` needs a loss: pass `loss=` (e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)) "
                "or compile the model first. Received: loss=None on an "
                "uncompiled model."
            )
    if isinstance(loss, (str, dict)):
        return keras.losses.get(loss)
    if not callable(loss):
        raise TypeError(
            f"`loss` must be a keras loss, its name, or a callable "
            f"(y_true, y_pred) -> scalar. Received: {loss!r}."
        )
    return loss


def iter_batches(data, num_batches: int | None, what: str) -> Iterator[tuple]:
    """Yields up to `num_batches` `(x, y)` batches from `data`.

    Accepted `data`: a `(x, y)` tuple of arrays (one batch), a
    `tf.data.Dataset` or any iterable of `(x, y)` / `(x, y, sample_weight)`
    batches.
    """
    if data is None:
        raise ValueError(
            f"`{what}` is data-dependent and needs `data`: a (x, y) tuple, a "
            "tf.data.Dataset or an iterable of (x, y) batches. Received: "
            "data=None. (SynFlow and random pruning are data-free.)"
        )
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ValueError(f"`num_batches` must be a positive int or None. Received: {num_batches!r}.")
    if isinstance(data, tuple) and len(data) in (2, 3) and hasattr(data[0], "shape"):
        yield data[0], data[1]
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            f"`data` must be a (x, y) tuple, a tf.data.Dataset or an iterable "
            f"of (x, y) batches. Received: {type(data).__name__}."
        )
    count = 0
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError(
                "Each batch of `data` must be (x, y) or (x, y, sample_weight). "
                f"Received a batch of type {type(batch).__name__}."
            )
        yield batch[0], batch[1]
        count += 1
        if num_batches is not None and count >= num_batches:
            return
    if count == 0:
        raise ValueError("`data` yielded no batch.")
