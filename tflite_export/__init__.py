"""Export sparse Keras 3 models to TFLite / LiteRT.

Inference export with sparse tensor encoding (verified in the LiteRT
interpreter), builtin-only on-device training export, flatbuffer inspection,
a device-side runner that needs only a TFLite runtime and numpy, and a
static check of XNNPACK's sparse-inference layout rules
(`check_xnnpack_sparse`).

The heavy entry points are loaded lazily so that
`python -m tflite_export.runner` never imports TensorFlow or Keras.

Example:

```python
import tflite_export
report = tflite_export.export_inference(model, "model.tflite",
                                        precision="float32")
print(report.to_markdown())
```
"""

__all__ = [
    "ExportReport",
    "TrainableExportReport",
    "ExportVerificationError",
    "export_inference",
    "export_trainable",
    "inspect_flatbuffer",
    "PRECISIONS",
    "check_xnnpack_sparse",
    "XnnpackSparseReport",
    "XnnpackLayerCheck",
]

_LAZY = {
    "ExportReport": ("tflite_export.report", "ExportReport"),
    "TrainableExportReport": ("tflite_export.report", "TrainableExportReport"),
    "ExportVerificationError": ("tflite_export.verify", "ExportVerificationError"),
    "export_inference": ("tflite_export.inference", "export_inference"),
    "export_trainable": ("tflite_export.trainable", "export_trainable"),
    "inspect_flatbuffer": ("tflite_export.flatbuffer_inspect", "inspect_flatbuffer"),
    "PRECISIONS": ("tflite_export.convert", "PRECISIONS"),
    "check_xnnpack_sparse": ("tflite_export.xnnpack", "check_xnnpack_sparse"),
    "XnnpackSparseReport": ("tflite_export.xnnpack", "XnnpackSparseReport"),
    "XnnpackLayerCheck": ("tflite_export.xnnpack", "XnnpackLayerCheck"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'tflite_export' has no attribute {name!r}")
