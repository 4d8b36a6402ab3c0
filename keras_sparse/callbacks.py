"""`model.fit` callbacks for sparse models.

`SparsityLogger` is the base: it finds the model's `SparseWrapper` layers and
writes the current sparsity into `logs`, so it shows in the progress bar, in
`History`, and (through Keras's own `keras.callbacks.TensorBoard`, listed
after it) in TensorBoard. Mask-updating algorithms subclass it: they decide
when to act from `optimizer.iterations`, change masks, call
`refresh_sparsity()` and add their own figures through `extra_logs()`.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_sparse.sparsify import sparse_wrappers

__all__ = ["SparsityLogger"]


@keras.saving.register_keras_serializable(package="keras_sparse")
class SparsityLogger(keras.callbacks.Callback):
    """Logs the sparsity of a sparse model during `model.fit`.

    Adds `sparsity` (zeros over all masked weights, from the masks) to the
    logs of every batch and epoch. With `per_layer=True` it also adds
    `sparsity/<layer>/<weight>` for every masked weight; put this callback
    before `keras.callbacks.TensorBoard` in the list and those scalars appear
    in TensorBoard.

    Args:
        per_layer: also log one scalar per masked weight.

    Raises:
        ValueError: at `on_train_begin`, if the model has no `SparseWrapper`.

    Example:

    >>> model.fit(x, y, callbacks=[
    ...     keras_sparse.callbacks.SparsityLogger(per_layer=True),
    ...     keras.callbacks.TensorBoard("logs"),
    ... ])
    """

    def __init__(self, per_layer: bool = False):
        super().__init__()
        if not isinstance(per_layer, bool):
            raise TypeError(f"`per_layer` must be a bool. Received: {per_layer!r}.")
        self.per_layer = per_layer
        self._wrappers = []
        self._sparsity_logs: dict[str, float] = {}

    @property
    def wrappers(self):
        """The model's `SparseWrapper` layers (found at `on_train_begin`)."""
        return self._wrappers

    def on_train_begin(self, logs=None):
        self._wrappers = sparse_wrappers(self.model)
        if not self._wrappers:
            raise ValueError(
                f"{type(self).__name__} needs a sparse model, but model "
                f"{self.model.name!r} has no SparseWrapper layer. Use "
                "`keras_sparse.sparsify(model, sparsity)` first."
            )
        self.refresh_sparsity()

    def refresh_sparsity(self) -> None:
        """Recomputes the logged sparsity from the masks (after a mask change)."""
        total = active = 0
        values = {}
        for wrapper in self._wrappers:
            for name, _, mask in wrapper.masked_weights:
                size = int(np.prod(mask.shape))
                ones = float(keras.ops.convert_to_numpy(keras.ops.sum(mask)))
                total += size
                active += ones
                values[f"sparsity/{wrapper.name}/{name}"] = 1.0 - ones / size
        logs = {"sparsity": 1.0 - active / total if total else 0.0}
        if self.per_layer:
            logs.update(values)
        self._sparsity_logs = logs

    def extra_logs(self) -> dict[str, float]:
        """Figures a subclass adds to every batch and epoch log."""
        return {}

    def _write(self, logs):
        if logs is not None:
            logs.update(self._sparsity_logs)
            logs.update(self.extra_logs())

    def on_train_batch_end(self, batch, logs=None):
        self._write(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._write(logs)

    def get_config(self):
        return {"per_layer": self.per_layer}
