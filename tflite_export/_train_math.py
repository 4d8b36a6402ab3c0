"""Loss and optimizer specs read from Keras 3 objects, and their builtin-only
TensorFlow implementations (formulas follow Keras 3's own updates)."""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

_LOSS_NAMES = {
    "sparse_categorical_crossentropy": "sparse",
    "categorical_crossentropy": "categorical",
}


@dataclasses.dataclass
class LossSpec:
    """Softmax cross-entropy: `kind` is `sparse` (int labels) or
    `categorical` (one-hot / soft labels)."""

    kind: str
    from_logits: bool
    label_smoothing: float


@dataclasses.dataclass
class OptimizerSpec:
    """`name` is `sgd` or `adam`; the other fields are Keras' values."""

    name: str
    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    @property
    def num_slots(self) -> int:
        if self.name == "adam":
            return 2
        return 1 if self.momentum else 0


def loss_spec(loss, label_smoothing: float | None = None) -> LossSpec:
    """Reads a Keras 3 cross-entropy loss (object or name).

    Raises:
        ValueError: any other loss, or a non-default reduction.
    """
    if isinstance(loss, str):
        if loss not in _LOSS_NAMES:
            raise ValueError(
                f"Unsupported loss {loss!r}; on-device training accepts "
                "'sparse_categorical_crossentropy', 'categorical_crossentropy'"
                " or the keras.losses objects of the same names.")
        cfg = {"from_logits": False, "label_smoothing": 0.0,
               "reduction": "sum_over_batch_size"}
        kind = _LOSS_NAMES[loss]
    elif isinstance(loss, (keras.losses.SparseCategoricalCrossentropy,
                           keras.losses.CategoricalCrossentropy)):
        cfg = loss.get_config()
        kind = ("sparse" if isinstance(
            loss, keras.losses.SparseCategoricalCrossentropy) else "categorical")
        if cfg.get("ignore_class") is not None:
            raise ValueError("SparseCategoricalCrossentropy(ignore_class=...) is "
                             "not supported for on-device training.")
        if cfg.get("axis", -1) != -1:
            raise ValueError("Only axis=-1 cross-entropy is supported.")
    else:
        raise ValueError(
            f"Unsupported loss {type(loss).__name__}; on-device training "
            "accepts keras.losses.SparseCategoricalCrossentropy, "
            "keras.losses.CategoricalCrossentropy or their string names.")
    if cfg.get("reduction") != "sum_over_batch_size":
        raise ValueError(
            f"Loss reduction {cfg.get('reduction')!r} is not supported; "
            "accepted: 'sum_over_batch_size' (the Keras default).")
    ls = cfg.get("label_smoothing", 0.0) or 0.0
    if label_smoothing is not None:
        ls = float(label_smoothing)
    if not 0.0 <= ls < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); received {ls}.")
    return LossSpec(kind, bool(cfg.get("from_logits", False)), float(ls))


def optimizer_spec(optimizer) -> OptimizerSpec:
    """Reads a Keras 3 SGD or Adam optimizer (object or name).

    Raises:
        ValueError: other optimizers, schedules, weight decay, clipping,
            EMA, gradient accumulation, AMSGrad.
    """
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, (keras.optimizers.SGD, keras.optimizers.Adam)):
        raise ValueError(
            f"Unsupported optimizer {type(optimizer).__name__}; on-device "
            "training accepts keras.optimizers.SGD (with or without momentum/"
            "nesterov) and keras.optimizers.Adam.")
    cfg = optimizer.get_config()
    if not isinstance(cfg["learning_rate"], (int, float)):
        raise ValueError("Learning-rate schedules are not supported for "
                         "on-device training; pass a constant learning rate.")
    for key in ("weight_decay", "clipnorm", "global_clipnorm", "clipvalue",
                "loss_scale_factor", "gradient_accumulation_steps"):
        if cfg.get(key):
            raise ValueError(f"Optimizer option {key}={cfg[key]!r} is not "
                             "supported for on-device training.")
    if cfg.get("use_ema") or cfg.get("amsgrad"):
        raise ValueError("use_ema and amsgrad are not supported for "
                         "on-device training.")
    if isinstance(optimizer, keras.optimizers.SGD):
        return OptimizerSpec("sgd", float(cfg["learning_rate"]),
                             momentum=float(cfg["momentum"]),
                             nesterov=bool(cfg["nesterov"]))
    return OptimizerSpec("adam", float(cfg["learning_rate"]),
                         beta_1=float(cfg["beta_1"]),
                         beta_2=float(cfg["beta_2"]),
                         epsilon=float(cfg["epsilon"]))


def cross_entropy(spec: LossSpec, logits: tf.Tensor, labels: tf.Tensor,
                  num_classes: int, batch: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean softmax cross-entropy and its gradient w.r.t. the logits.

    `dL/dz = (softmax(z) - y_smoothed) / batch`.
    """
    if spec.kind == "sparse":
        y = tf.one_hot(tf.cast(tf.reshape(labels, [batch]), tf.int32),
                       num_classes, dtype=tf.float32)
    else:
        y = tf.cast(labels, tf.float32)
    if spec.label_smoothing:
        y = y * (1.0 - spec.label_smoothing) + spec.label_smoothing / num_classes
    z = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    e = tf.exp(z)
    s = tf.reduce_sum(e, axis=-1, keepdims=True)
    log_p = z - tf.math.log(s)
    loss = -tf.reduce_sum(y * log_p) / float(batch)
    dz = (e / s - y) / float(batch)
    return loss, dz


def apply_update(spec: OptimizerSpec, var: tf.Variable, value: tf.Tensor,
                 grad: tf.Tensor, slots: list[tf.Variable],
                 slot_values: list[tf.Tensor], step: tf.Tensor,
                 mask: tf.Tensor | None) -> list:
    """One Keras-3-equivalent optimizer update of `var`.

    `value` and `slot_values` are the current contents of `var` and `slots`
    (read by the caller, which knows their static shapes). `mask` (bool,
    same shape) keeps pruned entries at exact zero: the gradient and the
    update are both selected by it.
    """
    if mask is not None:
        # A scalar 0.0 (broadcast by SELECT_V2), not zeros_like: the
        # converter folds zeros_like of a static shape into a dense constant
        # of the weight's size.
        grad = tf.where(mask, grad, 0.0)
    lr = spec.learning_rate
    ops = []
    if spec.name == "sgd":
        if spec.momentum:
            m_new = slot_values[0] * spec.momentum - grad * lr
            ops.append(slots[0].assign(m_new))
            upd = (m_new * spec.momentum - grad * lr) if spec.nesterov else m_new
        else:
            upd = -grad * lr
        new = value + _masked(upd, mask)
    else:
        m, v = slot_values
        t = step + 1.0
        b1p = tf.pow(spec.beta_1, t)
        b2p = tf.pow(spec.beta_2, t)
        alpha = lr * tf.sqrt(1.0 - b2p) / (1.0 - b1p)
        m_new = m + (grad - m) * (1.0 - spec.beta_1)
        v_new = v + (tf.square(grad) - v) * (1.0 - spec.beta_2)
        ops += [slots[0].assign(m_new), slots[1].assign(v_new)]
        new = value - _masked((m_new * alpha) / (tf.sqrt(v_new) + spec.epsilon),
                              mask)
    ops.append(var.assign(new))
    return ops


def _masked(upd, mask):
    if mask is None:
        return upd
    return tf.where(mask, upd, 0.0)
