"""One view of a sparse model: its masked weights, and how sparse they are.

`masked_weights(model)` is the one traversal of a model's `SparseWrapper`
layers: callbacks, pruning, lottery, reports, ToST and the TFLite export read
masks and weights through it, keyed `"layer/weight"`. `sparsity_counts`
is the one place that counts zeros.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import keras
import numpy as np

from keras_sparse.layers.sparse_wrapper import SparseWrapper
from keras_sparse.model_utils import iter_layers

__all__ = ["MaskedWeightRecord", "SparsityCounts", "masked_weights", "sparse_wrappers", "sparsity_counts"]


class MaskedWeightRecord(NamedTuple):
    """One masked weight of a model, as yielded by `masked_weights`.

    Attributes:
        key: `"layer/weight"`, e.g. `"fc/kernel"`: the key of `get_masks`,
            `set_masks`, reports and logs.
        wrapper: the `SparseWrapper` holding the weight.
        name: the weight's name in the wrapped layer (`"kernel"`).
        weight: the weight variable.
        mask: its mask variable (0/1, same shape).
    """

    key: str
    wrapper: SparseWrapper
    name: str
    weight: Any
    mask: Any


def sparse_wrappers(model: keras.Model) -> list[SparseWrapper]:
    """Every distinct `SparseWrapper` in `model`, nested models included.

    Depth-first in `model.layers` order; a layer reached twice (shared) is
    listed once, where it is first seen.

    Args:
        model: a Keras model or layer.

    Returns:
        The `SparseWrapper` layers, in that order.

    Raises:
        TypeError: `model` is not a Keras layer or model.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"Expected a keras.Model. Received: {type(model).__name__}.")
    if isinstance(model, SparseWrapper):
        return [model]

    def container(layer):
        return not isinstance(layer, SparseWrapper) and bool(getattr(layer, "layers", None))

    return [layer for _, layer in iter_layers(model, container) if isinstance(layer, SparseWrapper)]


def masked_weights(model: keras.Model) -> Iterator[MaskedWeightRecord]:
    """Yields one record per masked weight of `model`, nested models included.

    The order is deterministic: wrappers as `sparse_wrappers` lists them,
    then each wrapper's weights in `SparseWrapper.masked_weights` order.
    Layers left dense (not wrapped) yield nothing.

    Args:
        model: a Keras model (or layer) with `SparseWrapper` layers.

    Yields:
        `MaskedWeightRecord(key, wrapper, name, weight, mask)`.

    Raises:
        TypeError: `model` is not a Keras layer or model.

    Example:

    >>> for r in keras_sparse.masked_weights(sparse_model):
    ...     print(r.key, r.mask.shape)
    """
    for wrapper in sparse_wrappers(model):
        for name, weight, mask in wrapper.masked_weights:
            yield MaskedWeightRecord(f"{wrapper.name}/{name}", wrapper, name, weight, mask)


class SparsityCounts(NamedTuple):
    """Zero entries and all entries; `sparsity` is their ratio (0.0 when empty)."""

    zeros: int
    total: int

    @property
    def nonzeros(self) -> int:
        return self.total - self.zeros

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


def sparsity_counts(source: keras.Model | Iterable[Any]) -> SparsityCounts:
    """Counts the zeros of masks or arrays.

    Args:
        source: a model (its masks, as `masked_weights` yields them), an
            iterable of `MaskedWeightRecord` (their masks), or an iterable of
            arrays or tensors (their own zeros: masks, or masked weight
            values), e.g. the values of a `{"layer/weight": mask}` dict.

    Returns:
        `SparsityCounts(zeros, total)`, with `.sparsity` and `.nonzeros`.

    Raises:
        TypeError: `source` is not a model or an iterable.

    Example:

    >>> keras_sparse.sparsity_counts(sparse_model).sparsity
    >>> keras_sparse.sparsity_counts(keras_sparse.pruning.get_masks(sparse_model).values())
    """
    if isinstance(source, keras.layers.Layer):
        source = masked_weights(source)
    if not isinstance(source, Iterable):
        raise TypeError(
            "`sparsity_counts` expects a keras.Model, MaskedWeightRecords or arrays. "
            f"Received: {source!r} of type {type(source).__name__}."
        )
    zeros = total = 0
    for item in source:
        value = item.mask if isinstance(item, MaskedWeightRecord) else item
        array = np.asarray(keras.ops.convert_to_numpy(value))
        total += int(array.size)
        zeros += int(array.size) - int(np.count_nonzero(array))
    return SparsityCounts(zeros, total)
