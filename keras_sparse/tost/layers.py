"""The temporary layers of ToST: ghost gates, ghost Swish, LRSI scales."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["GhostGate", "GhostSwish", "LRSIScale"]


@keras.saving.register_keras_serializable(package="keras_sparse")
class GhostGate(keras.layers.Layer):
    """Adds a gated "ghost" skip connection: `main + alpha * ghost`.

    `alpha` is a non-trainable scalar variable (so a callback can anneal it
    without retracing the compiled train step). At `alpha == 0` the layer is
    the identity on `main` and `keras_sparse.tost.remove_ghost_skips` deletes
    it without changing the outputs.

    Args:
        alpha: initial gate value (ToST starts the ghost phase at 1).
        **kwargs: base layer arguments.

    Example:

    >>> y = keras_sparse.tost.GhostGate(alpha=1.0)([block_out, block_in])

    Reference:
        Jaiswal et al., "Training Your Sparse Neural Network Better with Any
        Mask", ICML 2022 (ghost skip connections, Figure 4).
    """

    def __init__(self, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha_init = float(alpha)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"GhostGate takes [main, ghost]. Received shapes: {input_shape}.")
        main, ghost = (tuple(s) for s in input_shape)
        if main[1:] != ghost[1:]:
            raise ValueError(
                f"GhostGate inputs must have equal shapes. Received: {main} and {ghost}."
            )
        self.alpha = self.add_weight(
            name="alpha", shape=(), initializer=keras.initializers.Constant(self.alpha_init),
            trainable=False, aggregation="only_first_replica")  # same gate on every replica

    def call(self, inputs):
        main, ghost = inputs
        return main + ops.cast(self.alpha, main.dtype) * ghost

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config["alpha"] = self.alpha_init
        return config


@keras.saving.register_keras_serializable(package="keras_sparse")
class GhostSwish(keras.layers.Layer):
    """Parametric Swish `x * sigmoid(beta * x)`, a "ghost" stand-in for ReLU.

    As `beta` grows the function approaches ReLU uniformly:
    `|x * sigmoid(beta * x) - relu(x)| <= 0.2785 / beta` for every x. `beta`
    is a non-trainable variable annealed upward by `ToSTCallback`; at the end
    `keras_sparse.tost.swap_to_relu` replaces the layer with exact ReLU.

    Args:
        beta: initial beta (1: plain Swish/SiLU).
        relu_layer: what `swap_to_relu` turns it into: `"relu"` (a
            `keras.layers.ReLU`) or `"activation"` (`Activation("relu")`),
            so the swapped model has the layer classes it had before.
        **kwargs: base layer arguments.

    Reference:
        Jaiswal et al., ICML 2022 (ghost soft neurons, Figure 5);
        Ramachandran et al., "Searching for Activation Functions", 2017.
    """

    def __init__(self, beta: float = 1.0, relu_layer: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if not float(beta) > 0:
            raise ValueError(f"`beta` must be > 0. Received: {beta!r}.")
        if relu_layer not in ("relu", "activation"):
            raise ValueError(
                f"`relu_layer` must be 'relu' or 'activation'. Received: {relu_layer!r}.")
        self.beta_init = float(beta)
        self.relu_layer = relu_layer

    def build(self, input_shape):
        self.beta = self.add_weight(
            name="beta", shape=(), initializer=keras.initializers.Constant(self.beta_init),
            trainable=False)

    def call(self, inputs):
        beta = ops.cast(self.beta, inputs.dtype)
        return inputs * ops.sigmoid(beta * inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["beta"] = self.beta_init
        config["relu_layer"] = self.relu_layer
        return config


@keras.saving.register_keras_serializable(package="keras_sparse")
class LRSIScale(keras.layers.Layer):
    """One learned scalar multiplying the output of a linear layer (LRSI).

    Placed right after a Dense/Conv layer (before its activation), so
    `scale * (W x + b) == (scale * W) x + scale * b`:
    `keras_sparse.tost.fold_lrsi` folds it into the kernel and bias and
    removes it, leaving no extra op. The mask's initial weights are kept
    untouched; only their per-layer scale is learned.

    Args:
        initial_scale: starting value of the scalar (1: the dense init).
        **kwargs: base layer arguments.

    Reference:
        Jaiswal et al., ICML 2022 (layer-wise re-scaled initialization).
    """

    def __init__(self, initial_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = float(initial_scale)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(),
            initializer=keras.initializers.Constant(self.initial_scale), trainable=True)

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["initial_scale"] = self.initial_scale
        return config
