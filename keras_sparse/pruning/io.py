"""Masks as files: save, load, and apply onto a fresh model.

A mask file is a NumPy `.npz` archive with one array per masked weight, keyed
`"layer_name/weight_name"` (e.g. `"conv2d/kernel"`), so masks computed by any
tool can be written with `np.savez(path, **{"conv2d/kernel": mask, ...})`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from keras_sparse.pruning.core import (
    as_sparse_model,
    get_masks,
    masked_weight_table,
    set_masks,
)

__all__ = ["apply_masks", "get_masks", "load_masks", "save_masks"]

_MATCH = ("name", "order")


def save_masks(model: keras.Model, path: str | os.PathLike) -> str:
    """Writes the masks of a sparse model to an `.npz` file.

    Args:
        model: a model with `SparseWrapper` layers.
        path: destination; `.npz` is appended by NumPy when missing.

    Returns:
        The path written.

    Raises:
        ValueError: the model has no masks.

    Example:

    >>> keras_sparse.pruning.save_masks(sparse, "snip90.npz")
    """
    masks = get_masks(model)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    np.savez_compressed(path, **{k: v.astype(np.uint8) for k, v in masks.items()})
    return path


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads masks written by `save_masks` (or any `.npz` of 0/1 arrays).

    Args:
        path: an `.npz` file.

    Returns:
        `{"layer/weight": float32 array}` in file order.

    Raises:
        ValueError: an array is not binary.
    """
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        masks = {key: np.asarray(archive[key], np.float32) for key in archive.files}
    for key, value in masks.items():
        if not np.all((value == 0) | (value == 1)):
            raise ValueError(f"Mask {key!r} in {os.fspath(path)!r} is not binary (0/1).")
    return masks


def apply_masks(
    model: keras.Model,
    masks: Mapping[str, np.ndarray] | str | os.PathLike,
    match: str = "name",
    strict: bool = True,
) -> keras.Model:
    """Applies masks to a model of the same architecture.

    Everything is validated before anything is assigned: on any error the
    model is unchanged.

    Args:
        model: a sparse model (masks set in place, returned) or a dense
            Sequential/Functional model (unchanged; a copy wrapped with
            `sparsify(model, 0.0, "uniform", keep_dense=None)` receives the
            masks and is returned).
        masks: `{"layer/weight": array}` or the path of a mask file.
        match: `"name"` pairs masks and weights by their keys; `"order"` by
            position (for fresh models whose auto-generated layer names
            differ, e.g. `dense_3` vs `dense`; shapes must still match).
        strict: with `match="name"`, every masked weight of the model must
            have a mask; with False, weights not named keep their masks.

    Returns:
        The sparse model carrying the masks; pruned weights are zeroed.

    Raises:
        ValueError: unknown keys, missing keys (strict), shape mismatch,
            non-binary values, different counts with `match="order"`.

    Example:

    >>> fresh = keras_sparse.pruning.apply_masks(build_model(), "snip90.npz")
    """
    if isinstance(masks, (str, os.PathLike)):
        masks = load_masks(masks)
    if not isinstance(masks, Mapping):
        raise TypeError(
            "`masks` must be a dict {'layer/weight': array} or a path to a "
            f"mask file. Received: {type(masks).__name__}."
        )
    if match not in _MATCH:
        raise ValueError(f"Unknown `match`: {match!r}. Accepted: {_MATCH}.")
    # Validate against the layout the (possibly wrapped) model will have,
    # without building anything for a sparse model.
    sparse = as_sparse_model(model, "apply_masks")
    table = masked_weight_table(sparse)
    expected = {k: tuple(w.shape) for k, (_, w, _) in table.items()}
    if match == "order":
        if len(masks) != len(expected):
            raise ValueError(
                f"`masks` has {len(masks)} arrays but the model has "
                f"{len(expected)} masked weights ({list(expected)}); "
                "`match='order'` needs one mask per masked weight."
            )
        renamed = dict(zip(expected, masks.values()))
        source = dict(zip(expected, masks))
    else:
        unknown = sorted(set(masks) - set(expected))
        missing = sorted(set(expected) - set(masks))
        if unknown or (strict and missing):
            raise ValueError(
                "Mask keys do not match the model's masked weights. "
                f"Received keys not in the model: {unknown}; model weights "
                f"without a mask: {missing if strict else []}. Accepted keys: "
                f"{sorted(expected)}. For a fresh model whose layer names "
                "differ, pass `match='order'`."
            )
        renamed = dict(masks)
        source = {k: k for k in masks}
    for key, value in renamed.items():
        value = np.asarray(value)
        if tuple(value.shape) != expected[key]:
            raise ValueError(
                f"Mask {source[key]!r} has shape {tuple(value.shape)} but "
                f"weight {key!r} of the model has shape {expected[key]}."
            )
        if not np.all((value == 0) | (value == 1)):
            raise ValueError(f"Mask {source[key]!r} is not binary (0/1).")
    set_masks(sparse, {k: np.asarray(v, np.float32) for k, v in renamed.items()})
    return sparse
