"""The temporary layers of ToST: ghost gates and jumps, ghost Swish, LRSI scales."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["GhostGate", "GhostJump", "GhostSwish", "LRSIScale"]


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
class GhostJump(GhostGate):
    """A gated learned "jump": `main + alpha * BN(conv_1x1(x))`.

    The ghost skip of the ToST reference code: a dense 1x1 convolution (no
    bias, every weight initialised to `initial_weight = 1e-4`) followed by its
    own BatchNormalization, from the input `x` of a block convolution to that
    convolution's normalized output `main`. `strides` are the main
    convolution's, so the jump also spans the stride-2 convolutions that
    start a stage. Inputs of rank 2 (`(batch, features)`) get a `Dense` jump
    instead. Like `GhostGate`, `alpha` is a non-trainable scalar annealed by
    `keras_sparse.tost.ToSTCallback`; at `alpha == 0` the layer returns
    `main` exactly and `keras_sparse.tost.remove_ghost_skips` deletes it
    (with its conv and BN) without changing the outputs.

    What is 1e-4: the 1x1 conv *weights* (`conv_jump*.weight.data.fill_(0.0001)`
    in the reference); the jump's BN starts at its defaults (gamma 1, beta 0)
    and there is no extra scalar gate in the reference beyond `alpha`.
    Behind a BN in training mode the 1e-4 mostly cancels (the BN divides
    by the batch std of the tiny conv output, down to `sqrt(epsilon)`), so
    the jump BN uses PyTorch's defaults, `epsilon=1e-5` and `momentum=0.9`
    (PyTorch `momentum=0.1`), not Keras's 1e-3 / 0.99, to keep the
    reference's initial jump magnitude.

    Args:
        alpha: initial gate value.
        strides: strides of the 1x1 convolution (the main conv's strides).
        data_format: `"channels_last"` or `"channels_first"` (the main
            conv's), which fixes the channel axis of the conv and the BN.
        initial_weight: value of every 1x1 conv weight at initialisation.
        epsilon: jump BN epsilon.
        momentum: jump BN moving-average momentum.
        **kwargs: base layer arguments.

    Example:

    >>> y = keras_sparse.tost.GhostJump(strides=2)([bn_out, block_in])

    Reference:
        Jaiswal et al., "Training Your Sparse Neural Network Better with Any
        Mask", ICML 2022 (ghost skip connections, Figure 4); code:
        VITA-Group/ToST `skip_connection/models/resnet_modified2.py`
        (`BasicBlock.conv_jump1/2`, `conv_jump1_bn/2_bn`, `forward(x, alpha)`).
    """

    def __init__(self, alpha: float = 1.0, strides=1, data_format: str = "channels_last",
                 initial_weight: float = 1e-4, epsilon: float = 1e-5, momentum: float = 0.9,
                 **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError("`data_format` must be 'channels_last' or 'channels_first'. "
                             f"Received: {data_format!r}.")
        strides = (strides,) if isinstance(strides, int) else tuple(strides)
        if not strides or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                              for s in strides):
            raise ValueError(f"`strides` must be positive ints. Received: {strides!r}.")
        self.strides = strides
        self.data_format = data_format
        self.initial_weight = float(initial_weight)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"GhostJump takes [main, x]. Received shapes: {input_shape}.")
        main, x = (tuple(s) for s in input_shape)
        rank = len(x) - 2
        axis = -1 if self.data_format == "channels_last" or rank == 0 else 1
        filters = main[axis]
        if rank not in (0, 1, 2, 3) or len(main) != len(x) or filters is None:
            raise ValueError(
                "GhostJump needs main and x of equal rank 2 to 5 with a known "
                f"channel count. Received shapes: {main} and {x}.")
        init = keras.initializers.Constant(self.initial_weight)
        if rank == 0:
            self.conv = keras.layers.Dense(filters, use_bias=False, kernel_initializer=init,
                                           name="jump_dense")
        else:
            strides = self.strides * rank if len(self.strides) == 1 else self.strides
            conv_class = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)[rank - 1]
            self.conv = conv_class(filters, 1, strides=strides, padding="same", use_bias=False,
                                   data_format=self.data_format, kernel_initializer=init,
                                   name="jump_conv")
        self.bn = keras.layers.BatchNormalization(axis=axis, epsilon=self.epsilon,
                                                  momentum=self.momentum, name="jump_bn")
        self.conv.build(x)
        jump_shape = tuple(self.conv.compute_output_shape(x))
        if jump_shape[1:] != main[1:]:
            raise ValueError(
                f"GhostJump: a 1x1 jump with strides {self.strides} maps {x} to "
                f"{jump_shape}, which does not match the main output {main}.")
        self.bn.build(jump_shape)
        self.alpha = self.add_weight(
            name="alpha", shape=(), initializer=keras.initializers.Constant(self.alpha_init),
            trainable=False, aggregation="only_first_replica")

    def call(self, inputs, training=None):
        main, x = inputs
        jump = self.bn(self.conv(x), training=training)
        return main + ops.cast(self.alpha, main.dtype) * jump

    def get_config(self):
        config = super().get_config()
        config.update(strides=list(self.strides), data_format=self.data_format,
                      initial_weight=self.initial_weight, epsilon=self.epsilon,
                      momentum=self.momentum)
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
    """One learned scalar multiplying the output of a linear layer (joint LRSI).

    The library's `lrsi="joint"` variant: the scalar is trained together
    with the weights. Behind BatchNorm it barely moves (the BN cancels it in
    the forward pass; only its effect on the effective learning rate
    remains), which is why the default LRSI of `keras_sparse.tost.ToST` is
    the reference's search before training
    (`keras_sparse.tost.search_lrsi_scales`, VITA-Group/ToST
    `LRsI/train_ticket.py`).

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
