"""Keras 3 model -> TFLite flatbuffer bytes, builtin ops only.

The model is traced into a `tf.function` concrete function whose variables
the converter freezes into constants. `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`
makes the converter store mostly-zero constant weights sparse-encoded: 1x4
(float32) or 1x16 (int8) block patterns of FULLY_CONNECTED weights become
block-sparse (BSR) tensors that the sparse FC kernel reads directly; other
patterns are stored CSR and expanded by a DENSIFY op at load time.
"""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

PRECISIONS = ("float32", "float16", "int8_dynamic", "int8_full")


def check_precision(precision) -> str:
    """Raises ValueError unless `precision` is one of `PRECISIONS`."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}; accepted values are "
            f"{', '.join(repr(p) for p in PRECISIONS)}.")
    return precision



def check_calibration(precision: str, representative_data) -> None:
    """Full-integer quantization needs representative data to calibrate.

    Raises:
        ValueError: `precision="int8_full"` with `representative_data=None`.
    """
    if precision == "int8_full" and representative_data is None:
        raise ValueError(
            "precision='int8_full' needs representative_data (a numpy array "
            "of typical input samples) to calibrate activation ranges; "
            "received representative_data=None. Use 'int8_dynamic' for "
            "weight-only quantization without calibration data.")

def input_specs(model, batch_size: int | None = None) -> list[tf.TensorSpec]:
    """TensorSpecs of the model inputs with the batch dimension replaced by
    `batch_size` (None keeps it dynamic)."""
    specs = []
    for t in model.inputs:
        shape = list(t.shape)
        shape[0] = batch_size
        dtype = getattr(t, "dtype", "float32") or "float32"
        specs.append(tf.TensorSpec(shape, tf.as_dtype(dtype),
                                   name=t.name.replace(":", "_")))
    return specs


def concrete_function(model, batch_size: int | None = 1):
    """Traces `model(inputs, training=False)` into a concrete function."""
    specs = input_specs(model, batch_size)
    single = len(specs) == 1

    @tf.function
    def serve(*args):
        x = args[0] if single else list(args)
        return model(x, training=False)

    return serve.get_concrete_function(*specs)


def representative_dataset(data, model) -> Callable[[], Iterable[list]]:
    """Normalizes `representative_data` into the converter's generator.

    Accepts a numpy array of samples (first axis = samples), a list of such
    arrays (one per model input), or a callable returning an iterable of
    lists of batch-1 arrays (the converter's own format).

    Raises:
        TypeError: on any other type.
        ValueError: if the data are empty or do not match the inputs.
    """
    if callable(data):
        return data
    arrays = data if isinstance(data, (list, tuple)) else [data]
    if not all(isinstance(a, np.ndarray) for a in arrays):
        raise TypeError(
            "representative_data must be a numpy array of samples, a list of "
            "arrays (one per model input) or a callable yielding lists of "
            f"arrays; received {type(data).__name__}.")
    if len(arrays) != len(model.inputs):
        raise ValueError(
            f"representative_data has {len(arrays)} arrays; the model has "
            f"{len(model.inputs)} inputs.")
    n = len(arrays[0])
    if n == 0:
        raise ValueError("representative_data is empty; int8_full needs "
                         "samples to calibrate activation ranges.")
    for a, t in zip(arrays, model.inputs):
        if tuple(a.shape[1:]) != tuple(t.shape[1:]):
            raise ValueError(
                f"representative_data sample shape {a.shape[1:]} does not "
                f"match model input shape {tuple(t.shape[1:])}.")

    def gen():
        for i in range(n):
            yield [a[i:i + 1].astype(np.float32) for a in arrays]

    return gen


_TF_OP = re.compile(r"'tf\.(\w+)' op is neither")
_SELECT = re.compile(r"TF Select ops: ([\w, ]+)")
_CUSTOM = re.compile(r"Custom ops: ([\w, ]+)")


def unsupported_ops(message: str) -> list[str]:
    """Extracts TF op names the converter could not lower to builtins."""
    names = set(_TF_OP.findall(message))
    for rx in (_SELECT, _CUSTOM):
        for group in rx.findall(message):
            names.update(n.strip() for n in group.split(",") if n.strip())
    return sorted(names)


def layers_using_ops(model, ops: list[str]) -> list[str]:
    """Best effort: the layers that may have produced `ops`.

    The converter's error does not map ops back to layers through a public
    API, so this lists the top-level layers whose class is not one of the
    common Keras layers known to lower to builtins.
    """
    common = {
        "InputLayer", "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D",
        "SeparableConv2D", "MaxPooling2D", "AveragePooling2D",
        "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Reshape",
        "ReLU", "Activation", "BatchNormalization", "Dropout", "Add",
        "Concatenate", "ZeroPadding2D", "Softmax", "LayerNormalization",
        "Multiply", "Rescaling", "Sequential", "Functional",
    }
    return [f"{l.name} ({type(l).__name__})" for l in model.layers
            if type(l).__name__ not in common]


def convert(model, precision: str = "float32", *, sparsity: bool = True,
            representative_data: Any = None,
            batch_size: int | None = 1) -> bytes:
    """Converts a Keras 3 model to TFLite bytes with builtin ops only.

    Args:
        model: a built `keras.Model`.
        precision: one of `PRECISIONS`.
        sparsity: whether to add `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`.
        representative_data: calibration samples, required for `int8_full`
            (see `representative_dataset`).
        batch_size: fixed batch dimension of the exported signature
            (None = dynamic).

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: unknown precision, missing representative data, or ops
            without a TFLite builtin lowering (the message names them).
    """
    check_precision(precision)
    check_calibration(precision, representative_data)
    fn = concrete_function(model, batch_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    opts = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparsity else []
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision != "float32":
        opts.append(tf.lite.Optimize.DEFAULT)
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8_full":
        converter.representative_dataset = representative_dataset(
            representative_data, model)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.optimizations = opts
    converter.target_spec.supported_ops = ops
    try:
        return converter.convert()
    except Exception as e:  # ConverterError is not public API.
        msg = str(e)
        bad = unsupported_ops(msg)
        if not bad:
            raise
        raise ValueError(
            f"Model '{model.name}' uses TensorFlow ops with no TFLite builtin "
            f"lowering: {bad} (candidate layers: "
            f"{layers_using_ops(model, bad) or 'see traceback'}). Only "
            "TFLITE_BUILTINS ops are accepted because SELECT_TF_OPS/Flex is "
            "unavailable in ai-edge-litert, tflite-runtime and LiteRT on "
            "Android. Replace these layers or ops.") from None
