"""Input checks shared by the exporters. Everything here raises before any
file is written."""

from __future__ import annotations

import os
from collections.abc import Iterator

import keras


def iter_layers(model) -> Iterator:
    """Yields every layer of `model`, descending into nested models and
    wrappers (public attributes only: `.layers` and `.layer`)."""
    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        inner = getattr(layer, "layer", None)
        if isinstance(inner, keras.layers.Layer):
            yield inner
            if isinstance(inner, keras.Model):
                yield from iter_layers(inner)


def is_sparse_wrapper(layer) -> bool:
    """A `keras_sparse` SparseWrapper (by class name along the MRO, so
    tflite_export needs no keras_sparse import)."""
    return any(c.__name__ == "SparseWrapper" for c in type(layer).__mro__)


def check_model(model, what: str = "export",
                allow_sparse_wrapper: bool = False) -> None:
    """Checks that `model` is a plain, built Keras 3 model.

    Args:
        model: the model.
        what: the caller's name, for messages.
        allow_sparse_wrapper: accept `SparseWrapper` layers (the caller
            reads their masks through `wrapper.layer` and
            `wrapper.masked_weights`).

    Raises:
        TypeError: `model` is not a `keras.Model` (e.g. a `tf.Module`, a
            tf_keras model or a path), or it still contains
            `keras_sparse` `SparseWrapper` layers.
        ValueError: the model has no defined inputs.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{what} expects a Keras 3 model (an instance of keras.Model, e.g. "
            "keras.Sequential or a functional keras.Model); received "
            f"{type(model).__module__}.{type(model).__qualname__}.")
    wrapped = [
        layer.name for layer in iter_layers(model) if is_sparse_wrapper(layer)
    ]
    if wrapped and not allow_sparse_wrapper:
        raise TypeError(
            f"{what} received a model with SparseWrapper layers {wrapped}. "
            "Call `keras_sparse.strip(model)` first: it returns a plain Keras "
            "model whose pruned weights are exact zeros, which is what the "
            "TFLite exporters accept.")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"{what} needs a model with defined inputs (build it with "
            "keras.Input(...), or call it once on data); received a model "
            f"'{model.name}' without inputs.")


def check_output_path(path) -> str:
    """Validates the output path and returns it as a string.

    Raises:
        TypeError: `path` is not a str or os.PathLike.
        ValueError: the parent directory does not exist or `path` is a
            directory.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "path must be a str or os.PathLike naming the .tflite file to "
            f"write; received {type(path).__name__}.")
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(
            f"The directory of the output path does not exist: {parent!r}.")
    if os.path.isdir(path):
        raise ValueError(f"Output path {path!r} is a directory; expected a "
                         "file name such as 'model.tflite'.")
    return path
