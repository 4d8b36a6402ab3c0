"""Walking and cloning Sequential/Functional models layer by layer.

`sparsify` and `strip` both rebuild a model with some layers replaced; this
module holds the one traversal and the one clone-and-copy-weights routine they
share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras

__all__ = ["check_graph_model", "clone_with", "iter_layers", "iter_leaf_layers"]


def is_graph_model(model) -> bool:
    """True for Sequential and Functional models (the ones Keras can clone)."""
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and isinstance(model, keras.Function)
    )


def check_graph_model(model, what: str) -> None:
    """Raises a clear error unless `model` is a Sequential or Functional model.

    Args:
        model: the object received.
        what: the public function name, for the message.

    Raises:
        TypeError: for non-models and subclassed models.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{what}` expects a keras.Model (Sequential or Functional). "
            f"Received: {model!r} of type {type(model).__name__}."
        )
    if not is_graph_model(model):
        raise TypeError(
            f"`{what}` cannot rebuild subclassed model {model.name!r} of type "
            f"{type(model).__name__}: Keras can only clone Sequential and "
            "Functional models. Wrap its layers directly instead, e.g. "
            "`self.dense = keras_sparse.layers.SparseWrapper("
            "keras.layers.Dense(64), sparsity=0.9)` in the model's __init__."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built, so its weight shapes are "
            "unknown. Give it an `Input` or call `model.build(input_shape)` "
            f"before `{what}`."
        )


def is_nested_model(layer) -> bool:
    """True for a `keras.Model` with sub-layers (any kind: graph or subclassed)."""
    return isinstance(layer, keras.Model) and hasattr(layer, "layers")


def iter_layers(
    model: keras.layers.Layer,
    descend: Callable[[keras.layers.Layer], bool] = is_nested_model,
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """The one walk over a model's layers: yields `(path, layer)`.

    Depth-first in `.layers` order, it descends into every layer for which
    `descend(layer)` is true (default: nested models) instead of yielding
    it; `path` names those containers, `"sub_model/"` (`""` at the top).
    Shared layers (used at several call sites or in several sub-models) are
    yielded once, where first seen.

    Args:
        model: a model (or any layer with `.layers`).
        descend: which layers are containers to walk into.

    Yields:
        `(path, layer)` for every distinct non-container layer.
    """
    seen: set[int] = set()

    def walk(container, prefix):
        for layer in getattr(container, "layers", None) or ():
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if descend(layer):
                yield from walk(layer, f"{prefix}{layer.name}/")
            else:
                yield prefix, layer

    yield from walk(model, "")


def iter_leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Yields each distinct non-model layer, descending into nested graph models.

    Shared layers are yielded once, in first-seen order (`iter_layers`).
    """
    for _, layer in iter_layers(model, is_graph_model):
        yield layer


def _copy_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    if getattr(source, "weights", None):  # ops in the graph (x + y) have none
        target.set_weights(source.get_weights())


def clone_with(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    copy_weights: Callable[[keras.layers.Layer, keras.layers.Layer], None] | None = None,
) -> keras.Model:
    """Clones `model`, replacing layers, and carries the weights over.

    Args:
        model: a built Sequential or Functional model.
        replace: called on every leaf layer; returns a new (unbuilt) layer to
            use in its place, or None to clone it unchanged from its config.
        copy_weights: `(old_layer, new_layer)` callable run after the clone is
            built, for replaced layers; default `set_weights(get_weights())`.

    Returns:
        A new model of the same graph; the original is left untouched.
    """
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer, bool]] = []

    def clone_fn(layer):
        new = replace(layer)
        replaced = new is not None
        if new is None:
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new, replaced))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_fn, recursive=True)
    for old, new, replaced in pairs:
        if replaced and copy_weights is not None:
            copy_weights(old, new)
        else:
            _copy_weights(old, new)
    return clone
