"""Sparse compute for compact Dense kernels in the on-device train step.

With `weight_storage="sparse"` a pruned Dense kernel is stored as its
non-zero values `v` (`[nnz]`) and their flat indices. By default every use
scatters `v` into the dense kernel and runs a dense matmul, so the train
step does the dense work however sparse the kernel is. With
`export_trainable(..., sparse_matmul="on")` the Dense layer instead runs

    rows, cols = idx // n_out, idx % n_out
    y^T = UNSORTED_SEGMENT_SUM(GATHER(x^T, rows) * v, cols, n_out)

whose cost grows with `nnz * batch` instead of `n_in * n_out * batch`.
The gradient (a `tf.custom_gradient`, builtin ops only) is the same
pattern the other way round:

    dg    = GATHER(dy^T, cols)                        # [nnz, batch]
    dv    = SUM(GATHER(x^T, rows) * dg, axis=1)       # only the kept entries
    dx^T  = UNSORTED_SEGMENT_SUM(dg * v, rows, n_in)

One gather of an input row and one scatter-add into an output column per
non-zero, with the ops of TFLITE_BUILTINS only (GATHER, MUL,
UNSORTED_SEGMENT_SUM, SUM, TRANSPOSE, FLOOR_DIV, FLOOR_MOD).

Whether it is faster than the masked dense matmul depends on the layer
shape, the density, the batch and the CPU: the dense matmul runs in an
optimized GEMM (XNNPACK), the gathers and segment sums in reference
kernels. `sparse_matmul="auto"` therefore measures both for every eligible
layer at export time (`measure`, on the exporting machine) and keeps the
faster. Measured figures: `benchmarks/sparse_train_step.py`.

Not used for the gradient-based growth of RigL and NeurRev, which need the
dense gradient `x^T dy` at the pruned positions too.
"""

from __future__ import annotations

import tensorflow as tf

MODES = ("off", "on", "auto")
GRADIENT_GROWTH = ("rigl", "neurrev")
"""On-device DST kinds that grow by the dense gradient (not computed here)."""


def check_mode(mode, weight_storage: str, dst_kind: str | None) -> None:
    """Raises before anything is built when `mode` cannot be honoured.

    Args:
        mode: the `sparse_matmul` argument.
        weight_storage: the `weight_storage` argument.
        dst_kind: the on-device DST algorithm (`DSTPlan.kind`) or None.

    Raises:
        ValueError: an unknown mode; `"on"`/`"auto"` with dense storage;
            `"on"` with RigL or NeurRev.
    """
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"sparse_matmul must be one of {MODES}; received "
                         f"{mode!r}.")
    if mode != "off" and weight_storage != "sparse":
        raise ValueError(
            f"sparse_matmul={mode!r} computes with the stored non-zeros of "
            "compact kernels, so it needs weight_storage='sparse'; received "
            f"weight_storage={weight_storage!r}.")
    if mode == "on" and dst_kind in GRADIENT_GROWTH:
        raise ValueError(
            f"sparse_matmul='on' cannot run with on-device {dst_kind!r}: it "
            "grows by the dense gradient, which the sparse product does not "
            "compute. Use sparse_matmul='off', or an algorithm with random "
            "growth ('set', 'mest').")


def row_col(indices: tf.Tensor, n_out: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`(rows, cols)` (`[nnz]` int32) of `[nnz, 1]` flat kernel indices."""
    flat = tf.reshape(indices, [-1])
    return tf.math.floordiv(flat, n_out), tf.math.floormod(flat, n_out)


def sparse_matmul(x: tf.Tensor, values: tf.Tensor, rows: tf.Tensor,
                  cols: tf.Tensor, n_in: int, n_out: int) -> tf.Tensor:
    """`x @ W` for the `[n_in, n_out]` kernel `W` whose only non-zeros are
    `W[rows[i], cols[i]] = values[i]` (see the module docstring).

    Args:
        x: `[batch, n_in]` float32.
        values: `[nnz]` float32.
        rows, cols: `[nnz]` int32 (constants or tensors).
        n_in, n_out: the kernel's shape.

    Returns:
        `[batch, n_out]`; differentiable in `x` and `values` with builtin
        ops only.
    """

    @tf.custom_gradient
    def product(x_t, v):
        taken = tf.gather(x_t, rows)  # [nnz, batch]
        y_t = tf.math.unsorted_segment_sum(taken * v[:, None], cols, n_out)

        def grad(dy_t):
            dg = tf.gather(dy_t, cols)
            dv = tf.reduce_sum(taken * dg, axis=1)
            dx_t = tf.math.unsorted_segment_sum(dg * v[:, None], rows, n_in)
            return dx_t, dv

        return y_t, grad

    return tf.transpose(product(tf.transpose(x), values))


def _probe_bytes(n_in: int, n_out: int, indices, batch: int, sparse: bool) -> bytes:
    """A `.tflite` of one Dense layer's share of a train step (forward,
    input and weight gradients, SGD update of the stored non-zeros) in the
    masked-dense (`sparse=False`: scatter, matmul, gather) or the sparse form."""
    idx = tf.constant(indices)
    rows, cols = row_col(idx, n_out)
    nnz = int(indices.shape[0])

    @tf.function(input_signature=[tf.TensorSpec([batch, n_in], tf.float32),
                                  tf.TensorSpec([batch, n_out], tf.float32),
                                  tf.TensorSpec([nnz], tf.float32)])
    def step(x, dy, v):
        with tf.GradientTape() as tape:
            tape.watch([x, v])
            if sparse:
                y = sparse_matmul(x, v, rows, cols, n_in, n_out)
            else:
                w = tf.reshape(tf.scatter_nd(idx, v, [n_in * n_out]), [n_in, n_out])
                y = tf.matmul(x, w)
        dx, dv = tape.gradient(y, [x, v], output_gradients=dy)
        return y, dx, v - 0.01 * dv

    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [step.get_concrete_function()])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv.convert()


def measure(n_in: int, n_out: int, indices, batch: int,
            num_invokes: int = 60) -> tuple[float, float]:
    """Median step time (microseconds, LiteRT, one thread, side by side) of
    one Dense layer's train-step share: `(masked dense, sparse)`.

    Args:
        n_in, n_out: the kernel's shape.
        indices: `[nnz, 1]` int32 flat indices of its non-zeros.
        batch: the `train` signature's batch size.
        num_invokes: timed invokes per form.
    """
    from tflite_export.verify import compare_latency

    files = [(_probe_bytes(n_in, n_out, indices, batch, sparse), "default")
             for sparse in (False, True)]
    masked_us, sparse_us = compare_latency(files, num_invokes=num_invokes,
                                           warmup=5, rounds=6)
    return masked_us, sparse_us
