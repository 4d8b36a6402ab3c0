"""`export_trainable`: a builtin-only on-device training model.

The exported `.tflite` has these signatures:

- `train(x, y) -> {"loss"}`: one optimizer step on the batch (fixed batch
  size), returns the mean loss before the step.
- `infer(x) -> {"output"}`: forward pass (logits, or probabilities when
  the Keras model ends with softmax); any batch size.
- `get_weights() -> {name: tensor}` and `set_weights(**{name: tensor})
  -> {"step"}`: read / restore the trainable weights (the names are in
  `TrainableExportReport.weight_names`). Optimizer slots are not part of
  them.

With `weight_storage="sparse"` a pruned kernel is stored compactly: its
variable holds only the non-zero values (shape `[nnz]`), a constant int32
tensor holds their flat indices, and every use scatters them into the dense
kernel (SCATTER_ND); the gradient is gathered back at the same indices
(GATHER_ND) and the optimizer slots are `[nnz]` too. Nothing needs to be
run after loading, and pruned weights are exactly zero by construction.

Forward and backward are written by hand (`tflite_export._layers`) so that
the converter needs only TFLITE_BUILTINS. A `tf.Module` does not track the
variables of a Keras 3 model it holds, so the module creates its own
`tf.Variable`s from the model's weights explicitly.

Pruned weights (exact zeros of the kernels at export time) are kept at
exact zero: with `weight_storage="dense"` by a constant boolean mask that
selects both the gradient and the update; with `weight_storage="sparse"`
because the pruned entries are not variables at all (only the stored
indices are scattered).

Why not dense variables filled by an init signature: the converter stores
every variable's initial value as a dense buffer of the variable's shape
(all-zero buffers of one shape are shared), so dense-shaped variables cost
the full dense bytes however they are initialized (measured: 8.98 MB for
the 90%-sparse benchmark MLP vs 7.45 MB dense inference).

On device, BatchNormalization is frozen and Dropout is the identity (see
`export_trainable`).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import numpy as np
import tensorflow as tf

from tflite_export import _layers
from tflite_export import _train_math as tm
from tflite_export._atomic import atomic_write_bytes
from tflite_export._validate import check_model, check_output_path
from tflite_export.flatbuffer_inspect import inspect_flatbuffer
from tflite_export.report import TrainableExportReport

WEIGHT_STORAGE = ("dense", "sparse")


def _sig_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class TrainingModule(tf.Module):
    """Holds explicit variables and the signature functions.

    Args:
        steps: plan from `_layers.plan_model`.
        weights: list of `(name, np.ndarray)`.
        masks: per weight, a bool array (kernels with pruned entries) or
            None.
        loss: `LossSpec`.
        optimizer: `OptimizerSpec`.
        batch_size: fixed batch of the `train` signature.
        input_shape: per-sample input shape.
        num_classes: width of the logits.
        final_activation: `linear` or `softmax` (applied by `infer`).
        compact: if True, every masked weight with at most half of its
            entries non-zero is a `[nnz]` variable of its non-zeros plus a
            constant `[nnz, 1]` int32 tensor of flat indices (see the
            module docstring); its optimizer slots are `[nnz]` as well.
    """

    def __init__(self, steps, weights, masks, loss, optimizer, batch_size,
                 input_shape, num_classes, final_activation, compact=False):
        super().__init__(name="sparse_trainable")
        self._steps = steps
        self._loss = loss
        self._opt = optimizer
        self._batch = int(batch_size)
        self._num_classes = int(num_classes)
        self._final = final_activation
        self.weight_names = [_sig_name(n) for n, _ in weights]
        self._shapes = [tuple(int(d) for d in w.shape) for _, w in weights]
        self._has_mask = [m is not None for m in masks]
        # Per weight: None (dense variable) or the [nnz, 1] int32 constant
        # of the flat indices of the stored non-zeros.
        self._indices = []
        self._masks = []
        initial = []
        for (_, w), m in zip(weights, masks):
            flat = w.reshape(-1).astype(np.float32)
            nz = np.flatnonzero(m.reshape(-1)) if m is not None else None
            if compact and nz is not None and 2 * len(nz) <= flat.size:
                self._indices.append(tf.constant(nz.astype(np.int32)[:, None]))
                self._masks.append(None)  # pruned entries are not stored
                initial.append(flat[nz])
            else:
                self._indices.append(None)
                self._masks.append(None if m is None else tf.constant(m))
                initial.append(w.astype(np.float32))
        # Explicitly created, so tf.Module tracks them (a held Keras 3 model
        # would not expose its variables to tf.Module tracking).
        self.vars = [tf.Variable(v, name=n)
                     for v, n in zip(initial, self.weight_names)]
        self.slots = [[tf.Variable(tf.zeros(v.shape), name=f"{n}_slot{k}")
                       for k in range(optimizer.num_slots)]
                      for v, n in zip(self.vars, self.weight_names)]
        self.step = tf.Variable(0.0, name="step")
        label_spec = (tf.TensorSpec([self._batch], tf.int32, name="y")
                      if loss.kind == "sparse" else
                      tf.TensorSpec([self._batch, self._num_classes],
                                    tf.float32, name="y"))
        x_train = tf.TensorSpec([self._batch, *input_shape], tf.float32,
                                name="x")
        x_infer = tf.TensorSpec([None, *input_shape], tf.float32, name="x")
        self.train = tf.function(self._train, input_signature=[x_train,
                                                               label_spec])
        self.infer = tf.function(self._infer, input_signature=[x_infer])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        self.set_weights = tf.function(self._set_weights, input_signature=[
            tf.TensorSpec(shape, tf.float32, name=n)
            for shape, n in zip(self._shapes, self.weight_names)])

    @property
    def num_compact(self) -> int:
        """Weights stored as non-zero values + indices."""
        return sum(i is not None for i in self._indices)

    def signatures(self) -> dict[str, Any]:
        return {
            "train": self.train.get_concrete_function(),
            "infer": self.infer.get_concrete_function(),
            "get_weights": self.get_weights.get_concrete_function(),
            "set_weights": self.set_weights.get_concrete_function(),
        }

    def _dense(self, k, stored):
        idx = self._indices[k]
        if idx is None:
            return stored
        shape = self._shapes[k]
        return tf.reshape(
            tf.scatter_nd(idx, stored, [int(np.prod(shape))]), shape)

    def _compact(self, k, dense):
        idx = self._indices[k]
        if idx is None:
            return dense
        return tf.gather_nd(tf.reshape(dense, [-1]), idx)

    def _train(self, x, y):
        stored = [v.read_value() for v in self.vars]
        ws = [self._dense(k, s) for k, s in enumerate(stored)]
        logits, caches = _layers.forward(self._steps, ws, x, keep=True)
        loss, dz = tm.cross_entropy(self._loss, logits, y, self._num_classes,
                                    self._batch)
        grads = _layers.backward(self._steps, ws, caches, dz, self._batch)
        step = self.step.read_value()
        for k, (var, w, g, slots) in enumerate(zip(self.vars, stored, grads,
                                                   self.slots)):
            slot_values = [s.read_value() for s in slots]
            tm.apply_update(self._opt, var, w, self._compact(k, g), slots,
                            slot_values, step, self._masks[k])
        self.step.assign_add(1.0)
        return {"loss": loss}

    def _weights(self):
        return [self._dense(k, v.read_value())
                for k, v in enumerate(self.vars)]

    def _infer(self, x):
        out, _ = _layers.forward(self._steps, self._weights(), x, keep=False)
        if self._final == "softmax":
            out = tf.nn.softmax(out)
        return {"output": out}

    def _get_weights(self):
        return dict(zip(self.weight_names, self._weights()))

    def _set_weights(self, *values):
        for k, (v, val) in enumerate(zip(self.vars, values)):
            v.assign(self._compact(k, val))
        return {"step": self.step.read_value()}


def _convert_module(module: TrainingModule) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.experimental_enable_resource_variables = True
        try:
            return conv.convert()
        except Exception as e:  # ConverterError is not public API
            from tflite_export.convert import unsupported_ops

            bad = unsupported_ops(str(e))
            if not bad:
                raise
            raise ValueError(
                "The on-device training graph needs TensorFlow ops without a "
                f"TFLite builtin lowering: {bad}. Only TFLITE_BUILTINS are "
                "accepted (no Flex).") from None


def build_module(model, optimizer, loss, batch_size: int = 32,
                 label_smoothing: float | None = None,
                 weight_storage: str = "dense") -> TrainingModule:
    """Validates the inputs and builds the `TrainingModule` (no file I/O).

    Raises:
        TypeError / ValueError: see `export_trainable`.
    """
    check_model(model, "export_trainable")
    if weight_storage not in WEIGHT_STORAGE:
        raise ValueError(f"weight_storage must be one of {WEIGHT_STORAGE}; "
                         f"received {weight_storage!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; received "
                         f"{batch_size!r}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("export_trainable supports single-input, "
                         f"single-output models; '{model.name}' has "
                         f"{len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs.")
    lspec = tm.loss_spec(loss, label_smoothing)
    ospec = tm.optimizer_spec(optimizer)
    steps, weights, final_act = _layers.plan_model(model)
    if lspec.from_logits and final_act == "softmax":
        raise ValueError("The model ends with softmax but the loss has "
                         "from_logits=True; use from_logits=False.")
    if not lspec.from_logits and final_act != "softmax":
        raise ValueError(
            "The loss has from_logits=False but the model does not end with "
            "softmax; pass from_logits=True for a model that outputs logits.")
    arrays = [(n, np.asarray(v, dtype=np.float32)) for n, v in weights]
    masks = []
    for (n, w) in arrays:
        is_kernel = n.endswith("_kernel")
        masks.append((w != 0) if is_kernel and np.any(w == 0) else None)
    num_classes = int(model.outputs[0].shape[-1])
    return TrainingModule(steps, arrays, masks, lspec, ospec, batch_size,
                          tuple(model.inputs[0].shape[1:]), num_classes,
                          final_act, compact=(weight_storage == "sparse"))


def export_trainable(model, path, optimizer, loss, *, batch_size: int = 32,
                     label_smoothing: float | None = None,
                     weight_storage: str = "dense",
                     compare_dense: bool = True) -> TrainableExportReport:
    """Exports a sparse Keras 3 model for on-device training in TFLite.

    The file runs in ai-edge-litert and tflite-runtime (>= 2.14) with
    builtin ops only; see the module docstring for the signatures. Kernels
    that contain exact zeros keep them exactly zero through training.

    Args:
        model: a plain Keras 3 Sequential (or chain-shaped functional)
            model; see `tflite_export._layers` for the supported layers.
        path: output `.tflite` path.
        optimizer: `keras.optimizers.SGD` (momentum, nesterov) or
            `keras.optimizers.Adam`, with a constant learning rate.
        loss: `keras.losses.SparseCategoricalCrossentropy`,
            `keras.losses.CategoricalCrossentropy` (label smoothing
            supported) or their names.
        batch_size: fixed batch size of the `train` signature.
        label_smoothing: overrides the loss' label smoothing (also allows it
            for the sparse loss, which in Keras has no such option).
        weight_storage: `"dense"`: every weight is a dense variable and a
            constant bool mask (1 byte per entry) keeps pruned entries
            zero. `"sparse"`: kernels with at least half of their entries
            pruned are stored as their non-zero values (a `[nnz]`
            variable) + int32 flat indices, scattered into the dense
            kernel by every signature; the file is ~12 bytes per non-zero
            (value, index, one zero buffer shared by the optimizer slots)
            instead of ~9 bytes per weight. Same signatures, same
            results; nothing to run after loading. `set_weights` ignores
            values given at pruned positions (they stay 0).
        compare_dense: also measure the dense float32 inference export.

    Layers whose training behaviour differs from inference: on device,
    `BatchNormalization` is frozen (moving statistics, gamma and beta are
    constants, not trained) and `Dropout` is the identity. Keras by default
    trains BN with batch statistics and applies dropout, so the Keras model
    that trains identically has its BN layers set `trainable=False` and its
    Dropout rates 0; the report's `notes` list the affected layers.

    Returns:
        A `TrainableExportReport`.

    Raises:
        TypeError: not a Keras 3 model, or SparseWrapper layers present.
        ValueError: unsupported layers, activations (non-ReLU), optimizer,
            loss or options; ops without builtin lowering.

    Example:

    ```python
    report = tflite_export.export_trainable(
        keras_sparse.strip(model), "train.tflite",
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```
    """
    path = check_output_path(path)
    module = build_module(model, optimizer, loss, batch_size,
                          label_smoothing, weight_storage)
    data = _convert_module(module)
    summary = inspect_flatbuffer(data)
    flex = [op for op in summary.op_counts
            if op.startswith("CUSTOM") or "FLEX" in op.upper()]
    if flex:
        raise ValueError(f"Converted training model contains non-builtin ops "
                         f"{flex}; refusing to write it.")
    dense_bytes = None
    if compare_dense:
        from tflite_export.convert import convert

        dense_bytes = len(convert(model, "float32", sparsity=False))
    notes = []
    bn = [l.name for l in model.layers
          if type(l).__name__ == "BatchNormalization" and l.trainable]
    if bn:
        notes.append(f"BatchNormalization layers {bn} are frozen on device "
                     "(inference statistics, gamma/beta not trained).")
    drop = [l.name for l in model.layers
            if type(l).__name__ == "Dropout" and l.rate > 0]
    if drop:
        notes.append(f"Dropout layers {drop} are identity on device (no "
                     "dropout in the train signature).")
    if weight_storage == "sparse":
        notes.append(
            f"{module.num_compact} of {len(module.vars)} weights stored as "
            "non-zero values + int32 indices; set_weights ignores values at "
            "their pruned positions (they stay exactly 0).")
    report = TrainableExportReport(
        path=path,
        num_bytes=len(data),
        dense_inference_float32_bytes=dense_bytes,
        weight_storage=weight_storage,
        signatures=summary.signatures,
        operators=summary.op_counts,
        flex_ops=flex,
        num_weights=len(module.vars),
        num_masked=sum(module._has_mask),
        weight_names=list(module.weight_names),
        notes=notes,
    )
    atomic_write_bytes(path, data)
    return report
