"""Which weights of a layer can be masked.

One table, looked up along the class MRO so subclasses of the listed Keras
layers work unchanged, plus two opt-in routes for custom layers:

1. `register_prunable_weights(MyLayer, ["w"])` adds the class to the table, or
2. the layer defines `get_prunable_weights()` returning its variables.

A table entry is a weight name, or a `(name, path)` pair when the variable
sits in a sub-layer reached through public attributes: a
`MultiHeadAttention` masks `query_dense.kernel` as `query_kernel`, an `LSTM`
masks `cell.recurrent_kernel` as `recurrent_kernel`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

__all__ = [
    "get_prunable_weights",
    "is_prunable",
    "register_prunable_weights",
]

_RECURRENT = (("kernel", "cell.kernel"), ("recurrent_kernel", "cell.recurrent_kernel"))

_TABLE: dict[type, tuple[str | tuple[str, str], ...]] = {
    keras.layers.Dense: ("kernel",),
    keras.layers.EinsumDense: ("kernel",),
    keras.layers.Conv1D: ("kernel",),
    keras.layers.Conv2D: ("kernel",),
    keras.layers.Conv3D: ("kernel",),
    keras.layers.Conv1DTranspose: ("kernel",),
    keras.layers.Conv2DTranspose: ("kernel",),
    keras.layers.Conv3DTranspose: ("kernel",),
    keras.layers.DepthwiseConv1D: ("kernel",),
    keras.layers.DepthwiseConv2D: ("kernel",),
    keras.layers.SeparableConv1D: ("depthwise_kernel", "pointwise_kernel"),
    keras.layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    keras.layers.Embedding: ("embeddings",),
    keras.layers.MultiHeadAttention: tuple(
        (f"{part}_kernel", f"{part}_dense.kernel") for part in ("query", "key", "value", "output")
    ),
    keras.layers.LSTM: _RECURRENT,
    keras.layers.GRU: _RECURRENT,
    keras.layers.SimpleRNN: _RECURRENT,
}

ACCEPTED_TYPES = (
    "Dense, EinsumDense, Conv1D/2D/3D (and Transpose), DepthwiseConv1D/2D, "
    "SeparableConv1D/2D, Embedding, MultiHeadAttention, LSTM, GRU, SimpleRNN, "
    "their subclasses"
)

_HOOK = "get_prunable_weights"


def register_prunable_weights(layer_class: type, weight_names: Sequence[str]) -> None:
    """Declares which attributes of `layer_class` hold prunable weights.

    Args:
        layer_class: a subclass of `keras.layers.Layer`.
        weight_names: attribute names of the variables to mask, e.g.
            `["kernel"]`. Each must be a `keras.Variable` once built.

    Raises:
        TypeError: if `layer_class` is not a Layer subclass or names are not
            strings.

    Example:

    >>> keras_sparse.layers.register_prunable_weights(MyDense, ["w"])
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(
            "`layer_class` must be a subclass of keras.layers.Layer. "
            f"Received: {layer_class!r}."
        )
    names = tuple(weight_names) if not isinstance(weight_names, str) else (weight_names,)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError(
            "`weight_names` must be a non-empty list of attribute names. "
            f"Received: {weight_names!r}."
        )
    _TABLE[layer_class] = names


def _table_entries(layer: keras.layers.Layer) -> list[tuple[str, str]] | None:
    """`(name, attribute path)` pairs of `layer`'s class, or None if not listed."""
    for cls in type(layer).__mro__:
        if cls in _TABLE:
            return [(e, e) if isinstance(e, str) else e for e in _TABLE[cls]]
    return None


def _resolve(layer: keras.layers.Layer, path: str):
    value = layer
    for attr in path.split("."):
        value = getattr(value, attr)
    return value


def is_prunable(layer: keras.layers.Layer) -> bool:
    """Whether keras_sparse knows how to mask `layer` (table or hook)."""
    return callable(getattr(layer, _HOOK, None)) or _table_entries(layer) is not None


def get_prunable_weights(layer: keras.layers.Layer) -> list[tuple[str, keras.Variable]]:
    """The `(name, variable)` pairs to mask in a built `layer`.

    Args:
        layer: a built Keras layer.

    Returns:
        A list of `(name, variable)`; `name` is the attribute name for table
        layers and the variable's own name for hook layers.

    Raises:
        TypeError: if the layer is not prunable, or an entry is not a
            `keras.Variable` (e.g. a LoRA-enabled kernel).
    """
    hook = getattr(layer, _HOOK, None)
    if callable(hook):
        variables = list(hook())
        pairs = [(getattr(v, "name", f"weight_{i}"), v) for i, v in enumerate(variables)]
    else:
        entries = _table_entries(layer)
        if entries is None:
            raise TypeError(
                f"Layer {layer.name!r} of type {type(layer).__name__} has no "
                f"prunable weights. Accepted: {ACCEPTED_TYPES}, or a custom "
                "layer registered with "
                "`keras_sparse.layers.register_prunable_weights` or "
                f"defining `{_HOOK}()`."
            )
        pairs = [(name, _resolve(layer, path)) for name, path in entries]
    if not pairs:
        raise TypeError(f"Layer {layer.name!r} returned no prunable weights.")
    for name, variable in pairs:
        if not isinstance(variable, keras.Variable):
            raise TypeError(
                f"Prunable weight {name!r} of layer {layer.name!r} must be a "
                f"keras.Variable. Received: {type(variable).__name__} (LoRA "
                "or quantized layers cannot be masked)."
            )
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise TypeError(f"Layer {layer.name!r} has duplicate prunable weight names: {names}.")
    return pairs
