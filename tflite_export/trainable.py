"""`export_trainable`: a builtin-only on-device training model.

The exported `.tflite` has these signatures:

- `train(x, y) -> {"loss"}`: one optimizer step on the batch (fixed batch
  size), returns the mean loss before the step.
- `infer(x) -> {"output"}`: forward pass (logits, or probabilities when
  the Keras model ends with softmax); any batch size.
- `get_weights() -> {name: tensor}` and `set_weights(**{name: tensor})
  -> {"step"}`: read / restore what trains on the device (the names are in
  `TrainableExportReport.weight_names`). Frozen layers are not part of
  them. Values given at pruned positions are dropped: pruned entries stay
  exactly 0 whatever the storage.
- `get_state() -> {name: tensor}` and `set_state(**{name: tensor}) ->
  {"step"}`: a checkpoint, i.e. the weights plus the optimizer slots
  (`<weight>__slot<k>`) and the step counter (`step`), so that a resumed
  run continues exactly (`TrainableExportReport.state_names`).

How the gradient is built: the `train` signature runs the Keras model's
own forward (`stateless_call` on a re-wired copy of its graph, see
`tflite_export._layers`) under `tf.GradientTape`, and asks the tape for the
gradient of the logits times `dL/dlogits` (the softmax cross-entropy
gradient, written out in `tflite_export._train_math`). The few ops whose
TensorFlow gradient has no TFLite builtin carry a `tf.custom_gradient`
(`tflite_export._grad_ops`), so the converter needs only TFLITE_BUILTINS.
The tape records only ops that depend on a trained weight, so no backward
runs below the lowest trainable layer: a frozen backbone costs a forward
pass only (sparse back-propagation as in TinyTL and PockEngine).

Which weights train: the model's `trainable_variables`, except those of
BatchNormalization layers unless `batchnorm="train"`. Everything else
(layers with `trainable=False`, frozen BN) is a constant of the file; with
`weight_storage="sparse"` a frozen kernel that is at least half zeros is
stored as its non-zeros (a read-only variable: a constant scatter would be
folded back into a dense constant by the converter) plus int32 indices.

With `weight_storage="sparse"` a pruned trainable kernel is stored
compactly: its variable holds only the non-zero values (shape `[nnz]`), a
constant int32 tensor holds their flat indices, and every use scatters them
into the dense kernel (SCATTER_ND); the gradient is gathered back at the
same indices (GATHER_ND) and the optimizer slots are `[nnz]` too. Nothing
needs to be run after loading, and pruned weights are exactly zero by
construction. With `weight_storage="dense"` a constant boolean mask selects
both the gradient and the update.

With `algorithm=` (SET, RigL, NeurRev or MEST), the masks are float32 variables
instead (dense storage) or the flat indices are an int32 variable of fixed
length (sparse storage: DST conserves each kernel's count), and `train`
updates them on the algorithm's
schedule after the optimizer step, returning `sparsity` and `regrown` too
(NeurRev: and `awakened`); the checkpoint signatures carry the masks
(`<weight>__mask`), NeurRev's reference weights (`<weight>__reference`),
`dst_regrown` and NeurRev's `dst_awakened`. Design and deviations from the Keras callback:
`tflite_export._dst`.

Why not dense variables filled by an init signature: the converter stores
every variable's initial value as a dense buffer of the variable's shape
(all-zero buffers of one shape are shared), so dense-shaped variables cost
the full dense bytes however they are initialized.

The file carries its runtime requirements in the flatbuffer metadata
(`tflite_export.metadata`), so a bare `.tflite` runs through the runner.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from typing import Any

import numpy as np
import tensorflow as tf

from tflite_export import _dst, _layers
from tflite_export import _sparse_matmul as sm
from tflite_export import _train_math as tm
from tflite_export import metadata as meta
from tflite_export._atomic import atomic_write_bytes
from tflite_export._validate import check_model, check_output_path
from tflite_export.flatbuffer_inspect import inspect_flatbuffer
from tflite_export.report import TrainableExportReport

WEIGHT_STORAGE = ("dense", "sparse")


def _sig_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


@dataclasses.dataclass
class WeightSpec:
    """One model variable as the device sees it.

    Attributes:
        name: signature name (`<layer>_<weight>`).
        variable: the Keras variable.
        value: its float32 value at export time.
        mask: bool array of the kept entries (trained kernels that contain
            exact zeros), else None.
        role: `"train"` (optimizer-updated variable), `"state"` (updated
            by the forward: BN moving statistics with `batchnorm="train"`)
            or `"const"` (frozen, a constant of the file).
    """

    name: str
    variable: Any
    value: np.ndarray
    mask: np.ndarray | None
    role: str


class TrainingModule(tf.Module):
    """Holds the device variables and the signature functions.

    Args:
        lowered: `_layers.LoweredModel`.
        specs: one `WeightSpec` per variable of `lowered.model`.
        loss: `LossSpec`.
        optimizer: `OptimizerSpec`.
        batch_size: fixed batch of the `train` signature.
        input_shape: per-sample input shape.
        num_classes: width of the logits.
        compact: if True, every masked trained weight with at most half of
            its entries non-zero is a `[nnz]` variable of its non-zeros plus
            a constant `[nnz, 1]` int32 tensor of flat indices (see the
            module docstring); its optimizer slots are `[nnz]` as well.
        dst: a `tflite_export._dst.DSTPlan`: masks (dense storage) or
            indices (compact storage) become variables that `train`
            updates on the plan's schedule (see `tflite_export._dst`).
    """

    def __init__(self, lowered, specs, loss, optimizer, batch_size,
                 input_shape, num_classes, compact=False, dst=None):
        super().__init__(name="sparse_trainable")
        # A plain holder: tf.Module must not track the Keras model.
        self._keras = _Holder(lowered)
        self._loss = loss
        self._opt = optimizer
        self._batch = int(batch_size)
        self._num_classes = int(num_classes)
        self._final = lowered.final_activation
        self._specs = specs
        trained = [s for s in specs if s.role == "train"]
        states = [s for s in specs if s.role == "state"]
        self.weight_names = [s.name for s in trained]
        self.state_var_names = [s.name for s in states]
        self._shapes = [tuple(s.value.shape) for s in trained]
        self._has_mask = [s.mask is not None for s in trained]
        # Per trained weight: None (dense variable) or the [nnz, 1] int32
        # constant of the flat indices of the stored non-zeros.
        self._indices = []
        self._masks = []
        initial = []
        for s in trained:
            flat = s.value.reshape(-1)
            nz = np.flatnonzero(s.mask.reshape(-1)) if s.mask is not None \
                else None
            if compact and nz is not None and 2 * len(nz) <= flat.size:
                idx = nz.astype(np.int32)[:, None]
                # Under DST the indices move: a variable (same length: the
                # count of each kernel is conserved), kept in ascending order.
                self._indices.append(
                    tf.Variable(idx, name=f"{s.name}_indices")
                    if dst is not None else tf.constant(idx))
                self._masks.append(None)  # pruned entries are not stored
                initial.append(flat[nz])
            else:
                self._indices.append(None)
                self._masks.append(None if s.mask is None
                                   else tf.constant(s.mask))
                initial.append(s.value * s.mask if s.mask is not None
                               else s.value)
        # Explicitly created, so tf.Module tracks them (a held Keras 3 model
        # would not expose its variables to tf.Module tracking).
        self.vars = [tf.Variable(v, name=n)
                     for v, n in zip(initial, self.weight_names)]
        self.slots = [[tf.Variable(tf.zeros(v.shape), name=f"{n}_slot{k}")
                       for k in range(optimizer.num_slots)]
                      for v, n in zip(self.vars, self.weight_names)]
        self.state_vars = [tf.Variable(s.value, name=s.name) for s in states]
        # Dynamic sparse training: every masked kernel is a target. A
        # dense-stored one has its mask as a float32 variable (1.0 kept); a
        # compact one has its indices as a variable (above).
        self._dst = dst
        # NeurRev also keeps its reference weights theta* (the weights after
        # the previous update; at export: the exported weights), stored like
        # the weight (`[nnz]` aligned with the indices when compact).
        self.mask_vars = []
        self.reference_vars = []
        self._dst_tables = []  # (trained index, n_drop table, n_grow table)
        mask_index = {}
        if dst is not None:
            for k, s in enumerate(trained):
                if s.mask is None:
                    continue
                mask = s.mask.astype(np.float32)
                drop, grow = _dst.counts(dst, mask)
                if self._indices[k] is None:
                    mask_index[k] = len(self.mask_vars)
                    self.mask_vars.append(
                        tf.Variable(mask, name=f"{s.name}_mask"))
                    self._masks[k] = None  # replaced by the variable
                if dst.kind == "neurrev":
                    self.reference_vars.append(tf.Variable(
                        initial[k], name=f"{s.name}_reference"))
                self._dst_tables.append((k, drop, grow))
            self.dst_regrown = tf.Variable(0.0, name="dst_regrown")
            self.dst_awakened = tf.Variable(0.0, name="dst_awakened")
            if not self._dst_tables:
                raise ValueError(
                    "export_trainable(algorithm=...) needs a sparse model: no "
                    "trained kernel has pruned entries (exact zeros or a "
                    "SparseWrapper mask). Received a dense model; sparsify "
                    "it first (`keras_sparse.sparsify(model, sparsity)`).")
            _dst.check_relaxation(dst, [s.mask for s in trained
                                        if s.mask is not None])
        # Trained weight index -> index in mask_vars (ints: not tracked).
        self._mask_index = mask_index
        # Frozen kernels that are mostly zero: non-zeros + flat indices,
        # scattered on use, like trained kernels under sparse storage.
        frozen = {}
        for s in specs:
            if compact and s.role == "const" and s.variable.name.endswith(
                    "kernel") and 2 * np.count_nonzero(s.value) <= s.value.size:
                nz = np.flatnonzero(s.value.reshape(-1))
                frozen[id(s.variable)] = (
                    tf.Variable(s.value.reshape(-1)[nz], trainable=False,
                                name=f"{s.name}_frozen"),
                    nz.astype(np.int32)[:, None])
        self.frozen_vars = [v for v, _ in frozen.values()]
        # Kept out of tf.Module tracking (a dict keyed by ids).
        self._keras.frozen = frozen
        # Trained weight index -> (n_in, n_out) of the compact Dense kernels
        # that compute with `_sparse_matmul` (`use_sparse_matmul`).
        self._sparse = {}
        self.step = tf.Variable(0.0, name="step")
        self._slot_names = [f"{n}__slot{k}" for n in self.weight_names
                            for k in range(optimizer.num_slots)]
        self._slot_shapes = [tuple(v.shape) for v in self.vars
                             for _ in range(optimizer.num_slots)]
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
            for shape, n in zip(self._weight_shapes(), self.weights_out)])
        self.get_state = tf.function(self._get_state, input_signature=[])
        self.set_state = tf.function(self._set_state, input_signature=[
            tf.TensorSpec(shape, tf.float32, name=n)
            for shape, n in zip(self._state_shapes(), self.state_names)])

    # ------------------------------------------------------------- names

    @property
    def weights_out(self) -> list[str]:
        """Names of `get_weights` / `set_weights`: the trained weights and
        the forward-updated state (BN moving statistics)."""
        return self.weight_names + self.state_var_names

    def _dst_state(self) -> list[tuple[str, tuple, Any, Any]]:
        """Checkpoint entries of on-device DST as `(name, shape, read,
        assign)`, in order: the masks (`<weight>__mask`, dense float32
        0/1 whatever the storage), NeurRev's reference weights
        (`<weight>__reference`, dense), `dst_regrown`, NeurRev's
        `dst_awakened`. `assign` of a mask must run before the weights and
        slots are written (they follow the new indices)."""
        if self._dst is None:
            return []
        out = []
        for i, (k, _, _) in enumerate(self._dst_tables):
            out.append((f"{self.weight_names[k]}__mask", self._shapes[k],
                        lambda i=i: self._target_mask(i),
                        lambda val, i=i: self._set_target_mask(
                            i, tf.where(val > 0.0, 1.0, 0.0))))
        for i, ref in enumerate(self.reference_vars):
            k = self._dst_tables[i][0]
            out.append((f"{self.weight_names[k]}__reference", self._shapes[k],
                        lambda k=k, ref=ref: self._dense(k, ref.read_value()),
                        lambda val, k=k, ref=ref: ref.assign(
                            self._compact(k, val))))
        scalars = [("dst_regrown", self.dst_regrown)]
        if self._dst.kind == "neurrev":
            scalars.append(("dst_awakened", self.dst_awakened))
        for name, var in scalars:
            out.append((name, (), var.read_value, var.assign))
        return out

    @property
    def state_names(self) -> list[str]:
        """Names of `get_state` / `set_state`."""
        dst = [e[0] for e in self._dst_state()]
        return self.weights_out + self._slot_names + dst + ["step"]

    def _weight_shapes(self):
        return self._shapes + [tuple(v.shape) for v in self.state_vars]

    def _state_shapes(self):
        dst = [tuple(e[1]) for e in self._dst_state()]
        return self._weight_shapes() + self._slot_shapes + dst + [()]

    def _target_mask(self, i):
        """Dense float32 0/1 mask of DST target `i`."""
        k = self._dst_tables[i][0]
        j = self._mask_index.get(k)
        if j is not None:
            return self.mask_vars[j].read_value()
        idx = self._idx(k)
        shape = self._shapes[k]
        return tf.reshape(tf.scatter_nd(idx, tf.ones([int(idx.shape[0])]),
                                        [int(np.prod(shape))]), shape)

    def _set_target_mask(self, i, mask):
        """Writes DST target `i`'s mask (dense 0/1); returns the new
        indices of a compact target (ascending; the mask must keep the
        kernel's count) or None."""
        k = self._dst_tables[i][0]
        j = self._mask_index.get(k)
        if j is not None:
            self.mask_vars[j].assign(mask)
            return None
        var = self._indices[k]
        # The top-nnz of a 0/1 mask are its ones, ties to the lowest index:
        # the active positions in ascending order.
        _, pos = tf.math.top_k(tf.reshape(mask, [-1]), k=int(var.shape[0]))
        idx = tf.expand_dims(pos, 1)
        var.assign(idx)
        return idx

    def _idx(self, k):
        """Flat indices `[nnz, 1]` of compact weight `k` (a constant, or the
        variable's current value under DST), or None."""
        idx = self._indices[k]
        if isinstance(idx, tf.Variable):
            return idx.read_value()
        return idx

    def _mask(self, k):
        """Bool mask of trained weight `k` (a constant, the current mask
        variable under DST, or None)."""
        i = self._mask_index.get(k)
        if i is not None:
            return self.mask_vars[i].read_value() > 0.0
        return self._masks[k]

    def sparse_matmul_candidates(self) -> list[tuple[int, str, int, int]]:
        """`(k, name, n_in, n_out)` of every trained compact kernel of a
        Dense layer: those `_sparse_matmul` can compute. None under RigL or
        NeurRev, whose growth needs the dense gradient."""
        if self._dst is not None and self._dst.kind in sm.GRADIENT_GROWTH:
            return []
        dense = self._keras.lowered.dense_kernels
        out = []
        for k, s in enumerate(s for s in self._specs if s.role == "train"):
            if self._indices[k] is not None and id(s.variable) in dense:
                n_in, n_out = self._shapes[k]
                out.append((k, s.name, int(n_in), int(n_out)))
        return out

    def use_sparse_matmul(self, ks) -> None:
        """Makes the Dense kernels `ks` (trained weight indices from
        `sparse_matmul_candidates`) compute with `_sparse_matmul`; call
        before the signatures are traced."""
        shapes = {k: (n_in, n_out) for k, _, n_in, n_out in
                  self.sparse_matmul_candidates()}
        self._sparse = {k: shapes[k] for k in ks}

    @property
    def num_compact(self) -> int:
        """Weights stored as non-zero values + indices."""
        return sum(i is not None for i in self._indices)

    def signatures(self) -> dict[str, Any]:
        return {name: getattr(self, name).get_concrete_function()
                for name in ("train", "infer", "get_weights", "set_weights",
                             "get_state", "set_state")}

    # ------------------------------------------------------------ storage

    def _dense(self, k, stored):
        idx = self._idx(k)
        if idx is None:
            return stored
        shape = self._shapes[k]
        return tf.reshape(
            tf.scatter_nd(idx, stored, [int(np.prod(shape))]), shape)

    def _gather(self, k, dense):
        """The stored form of a dense-shaped tensor (a gradient)."""
        idx = self._idx(k)
        if idx is None:
            return dense
        return tf.gather_nd(tf.reshape(dense, [-1]), idx)

    def _forward_values(self, stored):
        """What the forward takes per trained weight: the dense kernel, or
        the stored non-zeros of a sparse-matmul kernel."""
        return [s if k in self._sparse else self._dense(k, s)
                for k, s in enumerate(stored)]

    def _stored_grad(self, k, grad):
        """The gradient of `_forward_values()[k]` in the stored form."""
        return grad if k in self._sparse else self._gather(k, grad)

    def _compact(self, k, dense):
        """The stored form of a value given to `set_weights`: pruned
        entries dropped (sparse storage) or set to 0 (dense storage)."""
        mask = self._mask(k)
        if self._indices[k] is None and mask is not None:
            return tf.where(mask, dense, 0.0)
        return self._gather(k, dense)

    # ------------------------------------------------------------ forward

    def _call(self, trained, x, training_state: bool):
        """Runs the Keras forward with `trained` (`_forward_values`) in
        place of the trained variables; returns `(output, new state
        values)`."""
        lowered = self._keras.lowered
        model = lowered.model
        values = {}
        products = {}
        t = iter(enumerate(trained))
        s = iter(self.state_vars)
        for spec in self._specs:
            if spec.role == "train":
                k, value = next(t)
                if k in self._sparse:
                    n_in, n_out = self._sparse[k]
                    rows, cols = sm.row_col(self._idx(k), n_out)
                    products[id(spec.variable)] = (
                        lambda h, v=value, r=rows, c=cols, i=n_in, o=n_out:
                        sm.sparse_matmul(h, v, r, c, i, o))
                    # Never read (the layer runs the product): pruned from
                    # the file by the converter.
                    value = tf.zeros(spec.value.shape)
                values[id(spec.variable)] = value
            elif spec.role == "state":
                values[id(spec.variable)] = next(s).read_value()
            elif id(spec.variable) in self._keras.frozen:
                vals, idx = self._keras.frozen[id(spec.variable)]
                values[id(spec.variable)] = tf.reshape(tf.scatter_nd(
                    tf.constant(idx), vals.read_value(),
                    [spec.value.size]), spec.value.shape)
            else:
                values[id(spec.variable)] = tf.constant(spec.value)
        tv = [values[id(v)] for v in model.trainable_variables]
        ntv = [values[id(v)] for v in model.non_trainable_variables]
        lowered.sparse_products.update(products)
        try:
            out, new_ntv = model.stateless_call(tv, ntv, x,
                                                training=training_state)
        finally:
            lowered.sparse_products.clear()
        updates = []
        if training_state and self.state_vars:
            new = {id(v): val for v, val in
                   zip(model.non_trainable_variables, new_ntv)}
            states = [sp for sp in self._specs if sp.role == "state"]
            updates = [new[id(sp.variable)] for sp in states]
        return out, updates

    def _train(self, x, y):
        stored = [v.read_value() for v in self.vars]
        fwd = self._forward_values(stored)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fwd)
            logits, new_states = self._call(fwd, x, training_state=True)
        loss, dz = tm.cross_entropy(self._loss, logits, y, self._num_classes,
                                    self._batch)
        grads = tape.gradient(logits, fwd, output_gradients=dz)
        step = self.step.read_value()
        grads = [tf.zeros_like(fwd[k]) if g is None else g  # g is None:
                 for k, g in enumerate(grads)]  # does not reach the output
        for k, (var, w, g, slots) in enumerate(zip(self.vars, stored, grads,
                                                   self.slots)):
            slot_values = [s.read_value() for s in slots]
            tm.apply_update(self._opt, var, w, self._stored_grad(k, g), slots,
                            slot_values, step, self._mask(k))
        for var, val in zip(self.state_vars, new_states):
            var.assign(val)
        self.step.assign_add(1.0)
        if self._dst is None:
            return {"loss": loss}
        return {"loss": loss, **self._dst_update(grads)}

    def _dst_update(self, grads):
        """The mask update after the optimizer step (`tflite_export._dst`);
        `grads` as `_forward_values` (stored form for sparse-matmul kernels):
        runs (an IF) at the plan's update steps; returns `sparsity` (of the
        masked kernels) and `regrown` (new entries at the last update)."""
        plan = self._dst
        t = tf.cast(self.step.read_value(), tf.int32)
        j = tf.math.floordiv(t, plan.interval)
        is_update = tf.logical_and(
            tf.equal(t - j * plan.interval, 0),
            tf.logical_and(t > plan.start, t <= plan.stop))
        update = j - (plan.first + 1)
        def run():
            # Reads and writes happen only here: steps without an update
            # copy nothing.
            regrown, awakened = [], []
            for i, (k, drop, grow_n) in enumerate(self._dst_tables):
                if int(grow_n.max()) == 0:
                    continue
                shape = self._shapes[k]
                size = int(np.prod(shape))
                old_idx = self._idx(k)  # None: dense storage

                def to_dense(stored, old_idx=old_idx, shape=shape, size=size):
                    if old_idx is None:
                        return stored
                    return tf.reshape(tf.scatter_nd(old_idx, stored, [size]),
                                      shape)

                # Every read before any write of this target.
                m = tf.reshape(self._target_mask(i), [size])
                w = to_dense(self.vars[k].read_value())
                slot_values = [to_dense(s.read_value()) for s in self.slots[k]]
                flat_w = tf.reshape(w, [size])
                at = tf.clip_by_value(update, 0, len(drop) - 1)
                n_drop = tf.gather(tf.constant(drop), at)
                n_grow = tf.gather(tf.constant(grow_n), at)
                g = grads[k]
                flat_g = tf.reshape(to_dense(g) if k in self._sparse else g,
                                    [size])
                keep_score = tf.abs(flat_w)
                if plan.kind == "mest" and plan.gradient_weight:
                    keep_score += plan.gradient_weight * tf.abs(flat_g)
                if plan.kind in ("set", "mest"):
                    grow = _dst.set_scores(plan.seed, t, k, size,
                                            tf.minimum(t, 0))
                else:
                    grow = tf.abs(flat_g)
                new_m, fresh = _dst.prune_and_grow(
                    m, keep_score, grow, n_drop, int(drop.max()), n_grow,
                    int(grow_n.max()))
                if plan.kind == "neurrev":
                    # Search & Awake back to the kernel's count, ranked by
                    # the change since the previous update.
                    ref = self.reference_vars[i]
                    delta = tf.abs(flat_w - tf.reshape(
                        to_dense(ref.read_value()), [size]))
                    k_prune = int((grow_n - drop).max())
                    if k_prune > 0:
                        new_m, woke = _dst.search_and_awake(
                            new_m, flat_w * new_m * (1.0 - fresh), delta,
                            n_grow - n_drop, k_prune)
                        awakened.append(woke)
                    fresh = fresh * new_m
                keep = tf.reshape((1.0 - fresh) * new_m, shape)
                new_idx = self._set_target_mask(i, tf.reshape(new_m, shape))

                def to_stored(dense, new_idx=new_idx):
                    if new_idx is None:
                        return dense
                    return tf.gather_nd(tf.reshape(dense, [-1]), new_idx)

                self.vars[k].assign(to_stored(w * keep))
                if plan.kind == "neurrev":
                    ref.assign(to_stored(w * keep))
                # Slots of new and of dropped entries are zeroed: pruned
                # entries hold zero slots, as after `set_state`.
                for s, value in zip(self.slots[k], slot_values):
                    s.assign(to_stored(value * keep))
                regrown.append(tf.reduce_sum(fresh))
            total = tf.add_n(regrown) if regrown else tf.constant(0.0)
            woke = tf.add_n(awakened) if awakened else tf.constant(0.0)
            self.dst_regrown.assign(total)
            self.dst_awakened.assign(woke)
            return total, woke

        def skip():
            return (self.dst_regrown.read_value(),
                    self.dst_awakened.read_value())

        regrown, awakened = tf.cond(is_update, run, skip)
        # Compact targets keep their count by construction (nnz indices).
        compact = [int(self._indices[k].shape[0]) for k, _, _ in
                   self._dst_tables if self._indices[k] is not None]
        active = tf.add_n([tf.reduce_sum(v.read_value())
                           for v in self.mask_vars]
                          + [tf.constant(float(sum(compact)))])
        total = float(sum(int(np.prod(self._shapes[k]))
                          for k, _, _ in self._dst_tables))
        out = {"sparsity": 1.0 - active / total, "regrown": regrown}
        if plan.kind == "neurrev":
            out["awakened"] = awakened
        return out

    def _weights(self):
        return [self._dense(k, v.read_value())
                for k, v in enumerate(self.vars)]

    def _infer(self, x):
        stored = [v.read_value() for v in self.vars]
        out, _ = self._call(self._forward_values(stored), x,
                            training_state=False)
        if self._final == "softmax":
            out = tf.nn.softmax(out)
        return {"output": out}

    # ---------------------------------------------------------- weights

    def _get_weights(self):
        values = self._weights() + [v.read_value() for v in self.state_vars]
        return dict(zip(self.weights_out, values))

    def _set_weights(self, *values):
        n = len(self.vars)
        for k, (v, val) in enumerate(zip(self.vars, values[:n])):
            v.assign(self._compact(k, val))
        for v, val in zip(self.state_vars, values[n:]):
            v.assign(val)
        return {"step": self.step.read_value()}

    def _get_state(self):
        values = self._weights() + [v.read_value() for v in self.state_vars]
        values += [s.read_value() for slots in self.slots for s in slots]
        values += [e[2]() for e in self._dst_state()]
        values.append(self.step.read_value())
        return dict(zip(self.state_names, values))

    def _set_state(self, *values):
        nw = len(self.weights_out)
        slots = [s for group in self.slots for s in group]
        # Masks first: the weights and slots below are masked by them.
        dst_values = values[nw + len(slots):-1]
        for entry, val in zip(self._dst_state(), dst_values):
            entry[3](val)
        self._set_weights(*values[:nw])
        for k, (s, val) in enumerate(zip(slots, values[nw:nw + len(slots)])):
            owner = k // max(self._opt.num_slots, 1)
            mask = self._mask(owner)
            if mask is not None:
                val = tf.where(mask, val, 0.0)
            s.assign(val)
        self.step.assign(values[-1])
        return {"step": self.step.read_value()}


class _Holder:
    """Keeps the Keras model out of tf.Module's object tracking."""

    __slots__ = ("lowered", "frozen", "sparse_choices")

    def __init__(self, lowered):
        self.lowered = lowered
        self.sparse_choices = {}


def _convert_module(module: TrainingModule) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        # The custom gradients are already part of the traced `train`
        # graph; the infer signature's (unused) ones need not be saved.
        tf.saved_model.save(module, tmp, signatures=module.signatures(),
                            options=tf.saved_model.SaveOptions(
                                experimental_custom_gradients=False))
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


def weight_specs(model, lowered, batchnorm: str) -> list[WeightSpec]:
    """Classifies every variable of `lowered.model` (see `WeightSpec`)."""
    trainable = {id(v) for v in model.trainable_variables}
    bn_vars = {}
    owner = {}
    for layer in model.layers:
        for v in layer.weights:
            owner.setdefault(id(v), layer.name)
            if type(layer).__name__ == "BatchNormalization":
                bn_vars[id(v)] = layer
    specs = []
    seen = set()
    for v in lowered.model.variables:
        if id(v) in seen:
            continue
        seen.add(id(v))
        value = np.asarray(v, dtype=np.float32) \
            if "float" in str(v.dtype) else np.asarray(v)
        wrapper_mask = lowered.masks.get(id(v))
        if wrapper_mask is not None:
            value = value * wrapper_mask  # pruned entries are exact zeros
        bn = bn_vars.get(id(v))
        train_bn = batchnorm == "train" and bn is not None and bn.trainable
        if id(v) in trainable and (bn is None or train_bn):
            role = "train"
        elif train_bn and id(v) in {id(bn.moving_mean),
                                    id(bn.moving_variance)}:
            role = "state"
        else:
            role = "const"
        mask = None
        if role == "train" and wrapper_mask is not None:
            mask = wrapper_mask != 0 if np.any(wrapper_mask == 0) else None
        elif role == "train" and v.name.endswith("kernel") and \
                np.any(value == 0):
            mask = value != 0
        name = f"{owner[id(v)]}_{v.name}" if id(v) in owner else v.path
        specs.append(WeightSpec(_sig_name(name), v, value, mask, role))
    names = [s.name for s in specs if s.role != "const"]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"Weights {dup} have the same signature name; give "
                         "the layers unique names.")
    return specs


def build_module(model, optimizer, loss, batch_size: int = 32,
                 label_smoothing: float | None = None,
                 weight_storage: str = "dense",
                 batchnorm: str = "frozen", algorithm=None,
                 total_steps: int | None = None,
                 sparse_matmul: str = "off") -> TrainingModule:
    """Validates the inputs and builds the `TrainingModule` (no file I/O).

    Raises:
        TypeError / ValueError: see `export_trainable`.
    """
    check_model(model, "export_trainable", allow_sparse_wrapper=True)
    if weight_storage not in WEIGHT_STORAGE:
        raise ValueError(f"weight_storage must be one of {WEIGHT_STORAGE}; "
                         f"received {weight_storage!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or \
            batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; received "
                         f"{batch_size!r}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("export_trainable supports single-input, "
                         f"single-output models; '{model.name}' has "
                         f"{len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs.")
    if len(model.outputs[0].shape) != 2:
        raise ValueError(
            "export_trainable needs a model whose output is (batch, "
            f"classes); '{model.name}' outputs shape "
            f"{tuple(model.outputs[0].shape)}.")
    lspec = tm.loss_spec(loss, label_smoothing)
    ospec = tm.optimizer_spec(optimizer)
    dst = None
    if algorithm is not None:
        dst = _dst.plan(algorithm, total_steps)
    elif total_steps is not None:
        raise ValueError(
            "export_trainable: `total_steps` is only used with `algorithm=`. "
            f"Received: total_steps={total_steps!r}, algorithm=None.")
    sm.check_mode(sparse_matmul, weight_storage,
                  None if dst is None else dst.kind)
    lowered = _layers.lower_model(model, batchnorm)
    final_act = lowered.final_activation
    if lspec.from_logits and final_act == "softmax":
        raise ValueError("The model ends with softmax but the loss has "
                         "from_logits=True; use from_logits=False.")
    if not lspec.from_logits and final_act != "softmax":
        raise ValueError(
            "The loss has from_logits=False but the model does not end with "
            "softmax; pass from_logits=True for a model that outputs logits.")
    specs = weight_specs(model, lowered, batchnorm)
    if not any(s.role == "train" for s in specs):
        raise ValueError(
            f"Model '{model.name}' has no trainable weights (every layer has "
            "trainable=False); nothing would train on the device.")
    num_classes = int(model.outputs[0].shape[-1])
    module = TrainingModule(lowered, specs, lspec, ospec, batch_size,
                            tuple(model.inputs[0].shape[1:]), num_classes,
                            compact=(weight_storage == "sparse"), dst=dst)
    module._keras.sparse_choices = _choose_sparse_matmul(
        module, sparse_matmul, batch_size)
    return module


def _choose_sparse_matmul(module: TrainingModule, mode: str,
                          batch_size: int) -> dict[str, dict[str, Any]]:
    """Applies `sparse_matmul` to `module`; returns the report's entries."""
    if mode == "off":
        return {}
    candidates = module.sparse_matmul_candidates()
    if mode == "on" and not candidates:
        raise ValueError(
            "sparse_matmul='on' found no kernel to compute sparsely: it "
            "applies to trained Dense kernels stored compactly (at least half "
            "of their entries pruned). The model has none; use "
            "sparse_matmul='off'.")
    choices, chosen = {}, []
    for k, name, n_in, n_out in candidates:
        if mode == "on":
            choices[name] = {"form": "sparse"}
            chosen.append(k)
            continue
        idx = np.asarray(module._idx(k))
        # Decided on the reported (0.1 us) values, so the report always
        # shows why; a tie at that resolution keeps the dense matmul.
        masked_us, sparse_us = (round(t, 1) for t in sm.measure(n_in, n_out, idx, batch_size))
        faster = sparse_us < masked_us
        choices[name] = {"form": "sparse" if faster else "masked",
                         "masked_us": masked_us, "sparse_us": sparse_us}
        if faster:
            chosen.append(k)
    module.use_sparse_matmul(chosen)
    return choices


def export_trainable(model, path, optimizer, loss, *, batch_size: int = 32,
                     label_smoothing: float | None = None,
                     weight_storage: str = "dense",
                     batchnorm: str = "frozen",
                     compare_dense: bool = True, algorithm=None,
                     total_steps: int | None = None,
                     sparse_matmul: str = "off") -> TrainableExportReport:
    """Exports a sparse Keras 3 model for on-device training in TFLite.

    The file runs in ai-edge-litert and tflite-runtime (>= 2.14) with
    builtin ops only; see the module docstring for the signatures. Kernels
    that contain exact zeros keep them exactly zero through training.

    Args:
        model: a Keras 3 Sequential or functional model (any DAG of the
            layers listed in `tflite_export._layers`), single input,
            `(batch, classes)` output: a `keras_sparse.sparsify` model
            (its masks are read from the `SparseWrapper` layers) or a
            plain one such as `keras_sparse.strip(model)` (exact zeros of
            the kernels are the pruned entries). Layers with
            `trainable=False` are frozen on the device (constants, no
            backward below the lowest trainable layer).
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
            zero. `"sparse"`: trainable kernels with at least half of their
            entries pruned are stored as their non-zero values (a `[nnz]`
            variable) + int32 flat indices, scattered into the dense
            kernel by every signature. Same signatures, same results;
            nothing to run after loading.
        batchnorm: `"frozen"` (default): BatchNormalization runs in
            inference mode with its moving statistics, gamma and beta are
            constants. `"train"`: trainable BN layers use batch statistics
            in `train`, gamma/beta train and the moving statistics are
            updated (and returned by `get_weights`), like Keras'
            `train_on_batch`.
        compare_dense: also measure the dense float32 inference export.
        algorithm: None (default: masks are constants, static sparse
            training) or what `keras_sparse.algorithms.get` takes, for
            dynamic sparse training on the device: `"set"`, `"rigl"`,
            `"neurrev"`, `"mest"`, a config dict or a
            `keras_sparse.algorithms.SET`/`RigL`/`NeurRev`/`MEST` instance
            (other algorithms and structures are refused). The masks of the masked
            kernels become variables, and `train` updates them on the
            algorithm's schedule, counted by the device's own step (from 0
            at export); `train` then also returns `sparsity` (of the
            masked kernels) and `regrown` (entries grown at the last
            update; NeurRev also `awakened`), and checkpoints hold the
            masks (`<weight>__mask`), NeurRev's reference weights
            (`<weight>__reference`), `dst_regrown` and (NeurRev)
            `dst_awakened`. With `weight_storage="sparse"` the indices
            of compact kernels are variables. Design and the
            deviations from the Keras callback: `tflite_export._dst`.
        total_steps: planned number of device train steps; required when
            the algorithm's start/stop steps (or MEST's stages) are
            fractions of training
            (it resolves them and the drop-fraction decay, like the
            callback's `total_steps`).
        sparse_matmul: how compact Dense kernels (`weight_storage="sparse"`)
            compute in `train` and `infer`. `"off"` (default): scattered
            into the dense kernel, dense matmul. `"on"`: gather +
            segment-sum products over the non-zeros only
            (`tflite_export._sparse_matmul`), cost proportional to the
            non-zeros. `"auto"`: measures both forms of every such kernel
            at export, on this machine, and keeps the faster (the report's
            `sparse_matmul` has both times). Not with on-device RigL or
            NeurRev (their growth needs the dense gradient): `"on"` is
            refused, `"auto"` keeps the dense matmul.

    Dropout is the identity on the device. Keras by default trains BN with
    batch statistics and applies dropout, so the Keras model that trains
    identically to `batchnorm="frozen"` has its BN layers set
    `trainable=False` and its Dropout rates 0; the report's `notes` list
    the affected layers.

    Returns:
        A `TrainableExportReport`.

    Raises:
        TypeError: not a Keras 3 model.
        ValueError: unsupported layers, activations (non-ReLU), optimizer,
            loss or options; ops without builtin lowering. Nothing is
            written.

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
                          label_smoothing, weight_storage, batchnorm,
                          algorithm, total_steps, sparse_matmul)
    data = _convert_module(module)
    summary = inspect_flatbuffer(data)
    flex = [op for op in summary.op_counts
            if op.startswith("CUSTOM") or "FLEX" in op.upper()]
    if flex:
        raise ValueError(f"Converted training model contains non-builtin ops "
                         f"{flex}; refusing to write it.")
    data = meta.add_metadata(data, meta.trainable_metadata(
        module.weights_out, module._weight_shapes(), module.state_names,
        module._loss.kind, module._num_classes, batch_size),
        strip_tensor_names=True)
    dense_bytes = None
    if compare_dense:
        from tflite_export.convert import convert

        # The re-wired copy has no mask variables (a SparseWrapper model
        # would add one constant per masked kernel to the dense file).
        dense_bytes = len(convert(module._keras.lowered.model, "float32",
                                  sparsity=False))
    notes = []
    frozen_bn = [l.name for l in model.layers
                 if type(l).__name__ == "BatchNormalization" and l.trainable
                 and batchnorm == "frozen"]
    if frozen_bn:
        notes.append(f"BatchNormalization layers {frozen_bn} are frozen on "
                     "device (inference statistics, gamma/beta not trained).")
    drop = [l.name for l in model.layers
            if type(l).__name__ == "Dropout" and l.rate > 0]
    if drop:
        notes.append(f"Dropout layers {drop} are identity on device (no "
                     "dropout in the train signature).")
    frozen = [l.name for l in model.layers
              if not l.trainable and l.weights]
    if frozen:
        notes.append(f"Layers {frozen} have trainable=False: constants on "
                     "device, not in get_weights/set_weights.")
    if module._dst is not None:
        p = module._dst
        notes.append(
            f"On-device {p.kind.upper()}: the masks of "
            f"{len(module._dst_tables)} kernels are variables ("
            f"{len(module.mask_vars)} mask variables, the others' indices), "
            f"{len(p.fractions)} updates every {p.interval} steps in "
            f"({p.start}, {p.stop}].")
    if weight_storage == "sparse":
        notes.append(
            f"{module.num_compact} of {len(module.vars)} weights stored as "
            "non-zero values + int32 indices.")
    sparse_forms = module._keras.sparse_choices
    if sparse_forms:
        used = sorted(n for n, c in sparse_forms.items() if c["form"] == "sparse")
        notes.append(f"sparse_matmul={sparse_matmul!r}: {len(used)} of "
                     f"{len(sparse_forms)} compact Dense kernels compute with "
                     f"gather + segment-sum products {used}.")
    elif sparse_matmul == "auto":
        notes.append("sparse_matmul='auto': no compact Dense kernel to "
                     "consider (none, or on-device RigL/NeurRev).")
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
        weight_names=list(module.weights_out),
        state_names=list(module.state_names),
        frozen_layers=frozen,
        batchnorm=batchnorm,
        notes=notes,
        sparse_matmul=sparse_forms,
    )
    atomic_write_bytes(path, data)
    return report
