"""Diagnostics of sparse training: dormant ReLU neurons and exploration (ITOP).

Reference:
    - Li et al., "NeurRev", ICLR 2024 (dormant neurons in DST).
    - Liu et al., "Do We Actually Need Dense Over-Parameterization? In-Time
      Over-Parameterization in Sparse Training", ICML 2021 (ITOP rate).
"""

from __future__ import annotations

import keras

from keras_sparse.layers.sparse_wrapper import SparseWrapper
from keras_sparse.model_utils import iter_leaf_layers

__all__ = ["dormant_fraction", "relu_layers"]


def _is_relu(layer) -> bool:
    inner = layer.layer if isinstance(layer, SparseWrapper) else layer
    if isinstance(inner, keras.layers.ReLU):
        return True
    act = getattr(inner, "activation", None)
    if act is None:
        return False
    if isinstance(inner, keras.layers.Activation) or hasattr(inner, "kernel") or hasattr(inner, "depthwise_kernel"):
        return act is keras.activations.relu or getattr(act, "__name__", "") == "relu"
    return False


def relu_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers whose output is post-ReLU: `ReLU`, `Activation("relu")`, and
    Dense/Conv layers (wrapped or not) with `activation="relu"`."""
    return [layer for layer in iter_leaf_layers(model) if _is_relu(layer)]


def dormant_fraction(model: keras.Model, x_batch, threshold: float = 0.99) -> dict[str, float]:
    """Fraction of dormant channels per ReLU layer on a batch of data.

    A channel (last axis of the layer output) is dormant when its post-ReLU
    output is exactly zero on at least `threshold` of the positions of the
    batch (all samples and, for convolutions, all spatial positions).

    Args:
        model: a Sequential or Functional model.
        x_batch: a batch of inputs.
        threshold: fraction of zero outputs, in (0, 1], that makes a channel
            dormant (default 0.99: "zero on almost all of the batch").

    Returns:
        `{layer_name: fraction of dormant channels}`, plus `"all"`: over all
        channels of all ReLU layers.

    Raises:
        ValueError: `threshold` outside (0, 1], or no ReLU layer.

    Example:

    >>> keras_sparse.diagnostics.dormant_fraction(model, x_test[:512])
    {'conv2d': 0.03, 'dense': 0.12, 'all': 0.09}
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"`threshold` must be a float in (0, 1]. Received: {threshold!r}.")
    layers = relu_layers(model)
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no ReLU layer (ReLU, Activation('relu') "
            "or a Dense/Conv layer with activation='relu')."
        )
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    outputs = probe(x_batch, training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    result, dormant, total = {}, 0, 0
    for layer, out in zip(layers, outputs):
        a = keras.ops.convert_to_numpy(out)
        a = a.reshape(-1, a.shape[-1])
        zero_share = (a <= 0).mean(axis=0)
        d = zero_share >= threshold
        result[layer.name] = float(d.mean())
        dormant += int(d.sum())
        total += d.size
    result["all"] = dormant / total
    return result
