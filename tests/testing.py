"""Helpers shared by several test files (import from here, never from a test file)."""

import keras_sparse


def masks_of(model) -> list:
    """Copies of every mask of `model`, in a fixed order."""
    return [m.numpy().copy() for w in keras_sparse.sparse_wrappers(model)
            for _, _, m in w.masked_weights]


def assert_export_choice_holds(inference_result: dict) -> None:
    """The inference file is the sparse (smaller) one, or the measurably faster dense one.

    `inference_result` holds `bytes`, `dense_float32_bytes` and the report's
    `encoding_choice` (`tflite_export.export_inference`, `optimize="latency"`).
    """
    c = inference_result["encoding_choice"]
    if c["chosen"] == "sparse":
        assert inference_result["bytes"] < inference_result["dense_float32_bytes"]
    else:
        assert c["dense_latency_us"] < c["sparse_latency_us"]
