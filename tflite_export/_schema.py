"""The TFLite flatbuffer schema: generated Python classes (object API).

They come from ai-edge-litert (`ai_edge_litert.schema_py_generated`), the
LiteRT package that export verification runs in anyway (`pip install
keras_sparse[tflite]`); it needs only the `flatbuffers` package. TensorFlow
ships the same module only under the private `tensorflow.lite.python`, so
there is no fallback to it.
"""

from __future__ import annotations

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError as error:  # pragma: no cover - only without ai-edge-litert
    raise ImportError(
        "Reading or writing .tflite flatbuffers needs ai-edge-litert "
        "(`pip install keras_sparse[tflite]` or `pip install ai-edge-litert`)."
    ) from error

__all__ = ["schema"]
