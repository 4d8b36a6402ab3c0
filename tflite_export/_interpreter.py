"""One way to create a TFLite interpreter and feed it, for export and device.

Imports only numpy and a TFLite runtime (`ai_edge_litert`, else the legacy
`tflite_runtime`), never TensorFlow or Keras: `tflite_export.runner` uses it
in a bare device venv (numpy<2 and tflite-runtime), `tflite_export.verify`
at export time.
"""

from __future__ import annotations

import numpy as np

RESOLVERS = ("default", "builtin_without_default_delegates")


def load_runtime():
    """Returns `(Interpreter class, OpResolverType or None, runtime name)`."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "ai_edge_litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter

        try:
            from tflite_runtime.interpreter import OpResolverType
        except ImportError:  # very old tflite-runtime
            OpResolverType = None
        return Interpreter, OpResolverType, "tflite_runtime"


def new_interpreter(model_path: str | None = None, model_content: bytes | None = None,
                    resolver: str = "default", num_threads: int = 1):
    """An allocated interpreter for a file or for `.tflite` bytes.

    Args:
        model_path: path of a `.tflite` file (or give `model_content`).
        model_content: the flatbuffer bytes.
        resolver: `"default"` (builtin ops and the default delegates, i.e.
            XNNPACK) or `"builtin_without_default_delegates"`.
        num_threads: interpreter threads.

    Returns:
        The interpreter, with its tensors allocated.

    Raises:
        ValueError: unknown `resolver`.
    """
    if resolver not in RESOLVERS:
        raise ValueError(f"`resolver` must be one of {RESOLVERS}. Received: {resolver!r}.")
    interp_cls, resolver_type, _ = load_runtime()
    kwargs = {"num_threads": num_threads}
    if model_content is not None:
        kwargs["model_content"] = model_content
    else:
        kwargs["model_path"] = model_path
    if resolver != "default" and resolver_type is not None:  # AUTO is the default
        kwargs["experimental_op_resolver_type"] = (
            resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp = interp_cls(**kwargs)
    interp.allocate_tensors()
    return interp


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """`x` as the input tensor described by `detail` expects it (int8/uint8
    inputs are quantized with the tensor's scale and zero point)."""
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zero), info.min,
                       info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """The float values of output `y` of the tensor described by `detail`."""
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y
