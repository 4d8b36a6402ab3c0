"""Label smoothing as in Keras and as in the ToST code.

Keras's `CategoricalCrossentropy(label_smoothing=a)` uses the paper's
formula `y_ls = y * (1 - a) + a / C`: the true class gets `1 - a + a / C`,
every other class `a / C`. The ToST code spreads `alpha` over the *other*
`C - 1` classes: true class `1 - alpha`, others `alpha / (C - 1)`. The two are
the same family: ToST's `alpha` equals Keras's `a = alpha * C / (C - 1)`
(for C = 10 and alpha = 0.1, a = 0.111). The difference is small but changes
the target entropy, so `LabelSmoothingCrossentropy(variant="tost")` offers
the ToST spreading exactly (and accepts integer labels, which Keras's
`SparseCategoricalCrossentropy` cannot smooth).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["LabelSmoothingCrossentropy", "keras_smoothing_for_tost"]

_VARIANTS = ("keras", "tost")


def keras_smoothing_for_tost(alpha: float, num_classes: int) -> float:
    """Keras `label_smoothing` that reproduces ToST's `alpha / (C - 1)` targets.

    Args:
        alpha: ToST smoothing (mass moved off the true class).
        num_classes: number of classes C >= 2.

    Returns:
        `alpha * C / (C - 1)`.
    """
    if int(num_classes) < 2:
        raise ValueError(f"`num_classes` must be >= 2. Received: {num_classes!r}.")
    return float(alpha) * num_classes / (num_classes - 1)


@keras.saving.register_keras_serializable(package="keras_sparse")
class LabelSmoothingCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing, for integer or one-hot labels.

    Args:
        alpha: smoothing in [0, 1).
        variant: `"keras"` (true class `1 - alpha + alpha / C`, others
            `alpha / C`, as Keras and the ToST paper's formula) or `"tost"`
            (true class `1 - alpha`, others `alpha / (C - 1)`, as the ToST
            code).
        from_logits: whether predictions are logits.
        sparse_labels: True for integer labels, False for one-hot.
        name, reduction: as `keras.losses.Loss`.

    Example:

    >>> model.compile("sgd", keras_sparse.tost.LabelSmoothingCrossentropy(
    ...     0.1, variant="tost", from_logits=True))

    Reference:
        Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016;
        Jaiswal et al., ICML 2022 (label smoothing in ToST).
    """

    def __init__(self, alpha: float = 0.1, variant: str = "keras", from_logits: bool = False,
                 sparse_labels: bool = True, name: str = "label_smoothing_crossentropy",
                 reduction: str = "sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        if not 0.0 <= float(alpha) < 1.0:
            raise ValueError(f"`alpha` must be in [0, 1). Received: {alpha!r}.")
        if variant not in _VARIANTS:
            raise ValueError(f"Unknown `variant`: {variant!r}. Accepted: {_VARIANTS}.")
        self.alpha = float(alpha)
        self.variant = variant
        self.from_logits = bool(from_logits)
        self.sparse_labels = bool(sparse_labels)

    def call(self, y_true, y_pred):
        num_classes = y_pred.shape[-1]
        if self.sparse_labels:
            y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), num_classes)
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.variant == "tost":
            smooth = y_true * (1.0 - self.alpha) + (1.0 - y_true) * (self.alpha / (num_classes - 1))
        else:
            smooth = y_true * (1.0 - self.alpha) + self.alpha / num_classes
        return keras.losses.categorical_crossentropy(smooth, y_pred, from_logits=self.from_logits)

    def get_config(self):
        return {"alpha": self.alpha, "variant": self.variant, "from_logits": self.from_logits,
                "sparse_labels": self.sparse_labels, "name": self.name,
                "reduction": self.reduction}
