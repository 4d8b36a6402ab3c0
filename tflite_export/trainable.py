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
- `init_sparse() -> {"step"}` (only with `weight_storage="sparse"`): fills
  the variables from the compact values + indices stored in the file. Run
  it once after loading.

Forward and backward are written by hand (`tflite_export._layers`) so that
the converter needs only TFLITE_BUILTINS. A `tf.Module` does not track the
variables of a Keras 3 model it holds, so the module creates its own
`tf.Variable`s from the model's weights explicitly.

Pruned weights (exact zeros of the kernels at export time) are kept at
exact zero by a mask that selects both the gradient and the update: a
constant boolean tensor with `weight_storage="dense"`, a float variable
set to `weight != 0` by `init_sparse` with `weight_storage="sparse"`.

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
        sparse_init: if True, the file stores the non-zeros of the weights
            (values + int32 flat indices); weights, optimizer slots and
            float masks are variables that start at zero and are filled by
            the `init_sparse` signature (weights scattered from the stored
            non-zeros, slots zero, masks `weight != 0`). All-zero initial
            values of one shape share one buffer in the flatbuffer, so the
            masks cost no file bytes (a constant bool mask costs 1 byte per
            weight).
    """

    def __init__(self, steps, weights, masks, loss, optimizer, batch_size,
                 input_shape, num_classes, final_activation,
                 sparse_init=False):
        super().__init__(name="sparse_trainable")
        self._steps = steps
        self._loss = loss
        self._opt = optimizer
        self._batch = int(batch_size)
        self._num_classes = int(num_classes)
        self._final = final_activation
        self._sparse_init = bool(sparse_init)
        self.weight_names = [_sig_name(n) for n, _ in weights]
        self._shapes = [tuple(int(d) for d in w.shape) for _, w in weights]
        self._has_mask = [m is not None for m in masks]
        self._sparse = []
        # Explicitly created, so tf.Module tracks them (a held Keras 3 model
        # would not expose its variables to tf.Module tracking).
        if sparse_init:
            for _, w in weights:
                flat = w.reshape(-1)
                idx = np.flatnonzero(flat).astype(np.int32)
                if 2 * len(idx) >= flat.size:  # values alone are smaller
                    self._sparse.append((None, tf.constant(flat)))
                else:
                    self._sparse.append((tf.constant(idx[:, None]),
                                         tf.constant(flat[idx])))

            # Shape-less variables that start empty would avoid even the
            # zero buffers, but the XNNPACK delegate (LiteRT 2.3) fails on
            # them and resized variables read back as zeros in
            # tflite-runtime 2.14, so every variable keeps its static shape.
            def zeros(name, shape):
                return tf.Variable(tf.zeros(shape), name=name)

            self.vars = [zeros(n, s) for n, s in zip(self.weight_names,
                                                     self._shapes)]
            self.slots = [[zeros(f"{n}_slot{k}", s)
                           for k in range(optimizer.num_slots)]
                          for n, s in zip(self.weight_names, self._shapes)]
            self.mask_vars = [zeros(f"{n}_mask", s) if has else None
                              for n, s, has in zip(self.weight_names,
                                                   self._shapes,
                                                   self._has_mask)]
            self._masks = [None] * len(weights)
        else:
            self.vars = [tf.Variable(w.astype(np.float32), name=n)
                         for (_, w), n in zip(weights, self.weight_names)]
            self.slots = [[tf.Variable(tf.zeros(v.shape), name=f"{n}_slot{k}")
                           for k in range(optimizer.num_slots)]
                          for v, n in zip(self.vars, self.weight_names)]
            self.mask_vars = [None] * len(weights)
            self._masks = [None if m is None else tf.constant(m)
                           for m in masks]
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
        if sparse_init:
            self.init_sparse = tf.function(self._init_sparse,
                                           input_signature=[])

    def signatures(self) -> dict[str, Any]:
        sigs = {
            "train": self.train.get_concrete_function(),
            "infer": self.infer.get_concrete_function(),
            "get_weights": self.get_weights.get_concrete_function(),
            "set_weights": self.set_weights.get_concrete_function(),
        }
        if self._sparse_init:
            sigs["init_sparse"] = self.init_sparse.get_concrete_function()
        return sigs

    def _weights(self):
        return [v.read_value() for v in self.vars]

    def _train(self, x, y):
        ws = self._weights()
        logits, caches = _layers.forward(self._steps, ws, x, keep=True)
        loss, dz = tm.cross_entropy(self._loss, logits, y, self._num_classes,
                                    self._batch)
        grads = _layers.backward(self._steps, ws, caches, dz, self._batch)
        step = self.step.read_value()
        for k, (var, w, g, slots) in enumerate(zip(self.vars, ws, grads,
                                                   self.slots)):
            mask = self._masks[k]
            if self.mask_vars[k] is not None:
                mask = self.mask_vars[k].read_value() > 0.5
            slot_values = [s.read_value() for s in slots]
            tm.apply_update(self._opt, var, w, g, slots, slot_values, step,
                            mask)
        self.step.assign_add(1.0)
        return {"loss": loss}

    def _infer(self, x):
        out, _ = _layers.forward(self._steps, self._weights(), x, keep=False)
        if self._final == "softmax":
            out = tf.nn.softmax(out)
        return {"output": out}

    def _get_weights(self):
        return dict(zip(self.weight_names, self._weights()))

    def _set_weights(self, *values):
        for v, val in zip(self.vars, values):
            v.assign(val)
        return {"step": self.step.read_value()}

    def _init_sparse(self):
        for k, (idx, vals) in enumerate(self._sparse):
            shape = self._shapes[k]
            if idx is None:
                full = tf.reshape(vals, shape)
            else:
                full = tf.reshape(
                    tf.scatter_nd(idx, vals, [int(np.prod(shape))]), shape)
            self.vars[k].assign(full)
            # Folded into the same shared zero buffer as the initial values.
            zeros = tf.zeros(shape)
            for slot in self.slots[k]:
                slot.assign(zeros)
            if self.mask_vars[k] is not None:
                self.mask_vars[k].assign(
                    tf.cast(tf.not_equal(full, 0.0), tf.float32))
        self.step.assign(0.0)
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
                          final_act, sparse_init=(weight_storage == "sparse"))


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
        weight_storage: `"dense"` stores the initial weights as dense
            variable initializers (what the converter does); `"sparse"`
            stores only non-zeros + int32 indices and adds an `init_sparse`
            signature that must be run once after loading.
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
        notes.append("Run the 'init_sparse' signature once after loading: "
                     "variables start at zero.")
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
