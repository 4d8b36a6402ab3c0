"""`SparseWrapper`: one Keras layer wrapper that holds and enforces weight masks."""

from __future__ import annotations

import secrets
import warnings
from typing import NamedTuple
from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from keras_sparse import masks as mask_math
from keras_sparse.layers.prunable import get_prunable_weights, is_prunable
from keras_sparse.version import __version__

__all__ = ["MaskConstraint", "MaskedWeight", "SparseWrapper", "masked"]

_STATE_SEP = ":"  # "<weight>:<slot>" keys of the training state in weight files


class MaskedWeight(NamedTuple):
    """A prunable weight of a wrapped layer and the mask that governs it."""

    name: str
    weight: keras.Variable
    mask: keras.Variable


def masked(weight, mask):
    """`weight` with entries where `mask == 0` set to exactly 0.0.

    Pruned entries are 0.0 even when the weight holds NaN or Inf there (a
    plain product would give NaN), and kept entries are returned unchanged
    (the mask is exactly 0 or 1). On the TensorFlow backend this is one fused
    `tf.math.multiply_no_nan`, which reads the float mask directly: one
    pass over the weight instead of a cast to bool followed by a select
    (`benchmarks/step_time.py` measures the training-step cost).
    """
    if mask.dtype != weight.dtype:
        mask = ops.cast(mask, weight.dtype)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.math.multiply_no_nan(_value(weight), _value(mask))
    return ops.where(ops.cast(mask, "bool"), weight, ops.zeros((), weight.dtype))


def _value(x):
    """The tensor behind a Keras variable (TensorFlow ops take tensors)."""
    return x.value if isinstance(x, keras.Variable) else x


def _read(x):
    """The current value of a variable as a tensor (a tensor unchanged)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(x)
    return ops.convert_to_tensor(x)


def masked_forward(weight, mask):
    """`masked(weight, mask)` whose gradient passes to `weight` unmasked.

    The forward value has exact zeros at pruned entries whatever the weight
    holds there (`set_weights`, `assign`, a loaded file), so the model always
    computes what its masks say. The gradient is the identity (a
    straight-through mask): the gradient w.r.t. a pruned entry is the dense
    gradient `dL/dW_ij` that RigL-style grow criteria rank, as when pruned
    entries are exact zeros in the weight itself. The optimizer step then
    writes into pruned entries and `MaskConstraint` re-zeroes them.

    Reference:
        Evci et al., "Rigging the Lottery", ICML 2020 (grow by the dense
        gradient of the zero-valued connections).
    """
    # Read both into tensors outside the custom gradient: a variable read
    # inside it (eager mode, or a MirroredVariable) would need a
    # `variables` argument in the gradient function.
    mask = _read(mask)

    @ops.custom_gradient
    def forward(w):
        def grad(*args, upstream=None):
            return args[0] if upstream is None else upstream

        return masked(w, mask), grad

    return forward(_read(weight))


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a weight by its mask after the user's own constraint.

    Keras 3 optimizers call `variable.constraint` after every update
    (`BaseOptimizer.apply`), so attaching this to a masked variable keeps its
    pruned entries exactly 0.0 in the variable itself (what `get_weights`,
    checkpoints and gradient-based grow criteria see). The forward pass
    masks as well (`masked_forward`), so values written by other paths
    (`set_weights`, `assign`, a loaded file) never reach the outputs.

    Args:
        mask: the mask variable (same shape as the weight).
        inner: the constraint the variable had before, or None.
    """

    def __init__(self, mask: keras.Variable, inner: keras.constraints.Constraint | None = None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return masked(w, self.mask)

    def get_config(self):
        # Attached to variables at build time only; never part of a layer config.
        return {}


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check_saved_version(saved: str | None) -> None:
    """Refuses a file written by a newer keras_sparse release.

    Files record the writing release in each wrapper's config
    (`keras_sparse_version`; absent before 0.2.0, which loads fine). A newer
    major.minor release may store state this one cannot read, so it fails
    here with the fix, instead of deep in Keras's variable loading.

    Raises:
        ValueError: `saved` is not a version string, or is newer than this
            release.
    """
    if saved is None:
        return
    try:
        saved_release = _release(saved)
    except (AttributeError, ValueError):
        raise ValueError(
            f"SparseWrapper config has keras_sparse_version={saved!r}; expected a "
            "version string like '0.2.0'. The file may have been edited."
        ) from None
    if saved_release > _release(__version__):
        raise ValueError(
            f"This model was saved by keras_sparse {saved}, newer than the installed "
            f"keras_sparse {__version__}, and may hold state this release cannot "
            "read. Upgrade: pip install -U keras_sparse."
        )


@keras.saving.register_keras_serializable(package="keras_sparse")
class SparseWrapper(keras.layers.Wrapper):
    """Wraps any prunable Keras layer and keeps a binary mask per weight.

    On `build`, the wrapper creates one non-trainable mask variable per
    prunable weight (`kernel_mask`, `depthwise_kernel_mask`, ...), draws a
    random mask with exactly `round((1 - sparsity) * size)` ones (seeded),
    zeroes the pruned entries and attaches a `MaskConstraint` to the weight.
    The optimizer applies that constraint after every step, so pruned weights
    stay exactly 0.0 during `model.fit` without any callback: training with a
    fixed mask is static sparse training. The forward pass reads each masked
    weight as `weight * mask` too (with an identity gradient, see
    `masked_forward`), so whatever writes the weights (`set_weights`,
    `assign`, loading a file) the model computes exactly what
    `keras_sparse.strip` returns. Any constraint the user gave the
    layer (e.g. `kernel_constraint`) is still applied, before the mask.

    Loading a saved model restores masks from the file; they are never drawn
    again. Sparse-training algorithms change masks through
    `masked_weights` and `apply_masks()`, and keep whatever else must survive
    a save/load or a kill-and-resume (NeurRev's reference weights, the ITOP
    set, DSR's threshold, ...) in `training_state(weight_name)`: the wrapper
    writes it next to its masks in `.keras` files and `save_weights`
    checkpoints (so `BackupAndRestore` and `ModelCheckpoint` carry it) and
    reads it back on load. A model that never ran such an algorithm has no
    training state, and files written by keras_sparse 0.1.0 (which had no
    training state) load as before, with empty state.

    Args:
        layer: the layer to wrap. Must be prunable: Dense, EinsumDense,
            Conv1D/2D/3D and their Transpose variants, DepthwiseConv1D/2D,
            SeparableConv1D/2D (both kernels), Embedding, subclasses of these,
            or a custom layer that opts in (see
            `keras_sparse.layers.register_prunable_weights`).
        sparsity: fraction of zeros in [0, 1) for every prunable weight, or a
            dict `{weight_name: sparsity}` (e.g. `{"depthwise_kernel": 0.5,
            "pointwise_kernel": 0.9}`); weights not named are dense.
        seed: integer seed of the initial random masks. `None` draws one and
            stores it in the config, so clones draw the same masks.
        structure: sparsity pattern of the initial masks, one of
            `keras_sparse.masks.STRUCTURES`: `"unstructured"` (default),
            `"block"` (1 x `block_size` along the input dimension) or
            `"n:m"` (2:4). A weight whose input dimension does not split
            into the pattern's groups (a 3-channel stem conv) gets an
            unstructured mask, with a warning (`structure_of`).
        block_size: for `structure="block"`: 4 (default; TFLite's float32
            sparse kernel) or 16 (its int8 kernel), see
            `keras_sparse.masks.BLOCK_SIZES`.
        **kwargs: base layer arguments (`name` defaults to the wrapped
            layer's name).

    Example:

    >>> layer = keras_sparse.layers.SparseWrapper(
    ...     keras.layers.Dense(64), sparsity=0.9, seed=0)
    >>> y = layer(np.ones((2, 32)))
    >>> float(np.mean(layer.kernel_mask.numpy()))  # density
    0.1

    Reference:
        Zhu and Gupta, "To prune, or not to prune", 2017 (mask-variable design
        popularized by tensorflow-model-optimization).
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        sparsity: float | Mapping[str, float] = 0.0,
        seed: int | None = None,
        structure: str = "unstructured",
        block_size: int | None = None,
        keras_sparse_version: str | None = None,
        **kwargs,
    ):
        check_saved_version(keras_sparse_version)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`layer` must be a keras.layers.Layer instance. "
                f"Received: {layer!r} of type {type(layer).__name__}."
            )
        if isinstance(layer, SparseWrapper):
            raise TypeError(
                f"Layer {layer.name!r} is already a SparseWrapper; wrapping it "
                "twice is not supported. Pass the wrapper itself, or its "
                "`.layer`."
            )
        if not is_prunable(layer):
            # get_prunable_weights raises the explanatory TypeError.
            get_prunable_weights(layer)
        if isinstance(sparsity, Mapping):
            sparsity = {
                str(k): mask_math.validate_sparsity(v, f"sparsity[{k!r}]")
                for k, v in sparsity.items()
            }
        else:
            sparsity = mask_math.validate_sparsity(sparsity)
        if seed is None:
            seed = secrets.randbelow(2**31)
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise TypeError(f"`seed` must be a non-negative int or None. Received: {seed!r}.")
        mask_math.validate_structure(structure)
        block_size = mask_math.validate_block_size(block_size, structure)
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.sparsity = sparsity
        self.seed = int(seed)
        self.structure = structure
        self.block_size = block_size
        self._masked_weights: list[MaskedWeight] = []
        self._training_state: dict[str, dict[str, np.ndarray]] = {}

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        pairs = get_prunable_weights(self.layer)
        names = [name for name, _ in pairs]
        if isinstance(self.sparsity, dict):
            unknown = sorted(set(self.sparsity) - set(names))
            if unknown:
                raise ValueError(
                    f"`sparsity` names weights {unknown} that layer "
                    f"{self.layer.name!r} does not have. Accepted names: {names}."
                )
        self._masked_weights = []
        for index, (name, weight) in enumerate(pairs):
            mask = self.add_weight(
                name=f"{name}_mask",
                shape=tuple(weight.shape),
                dtype="float32",
                initializer="ones",
                trainable=False,
                # Under tf.distribute a replica-context assign with the
                # default aggregation ("none") lets replicas' masks diverge
                # silently; "only_first_replica" broadcasts replica 0's mask.
                aggregation="only_first_replica",
            )
            structure = self._structure_of_shape(name, weight.shape)
            if structure.kind == "unstructured" or self.sparsity_of(name) == 0.0:
                initial = mask_math.random_mask(
                    weight.shape, self.sparsity_of(name), mask_math.seed_for(self.seed, index)
                )
            else:
                initial = mask_math.structured_random_mask(
                    weight.shape,
                    self.sparsity_of(name),
                    mask_math.seed_for(self.seed, index),
                    structure,
                )
            mask.assign(initial)
            inner = weight.constraint
            if isinstance(inner, MaskConstraint):  # re-built: keep user's one.
                inner = inner.inner
            weight.constraint = MaskConstraint(mask, inner)
            setattr(self, f"{name}_mask", mask)  # e.g. wrapper.kernel_mask
            self._masked_weights.append(MaskedWeight(name, weight, mask))
        self.apply_masks()
        self.built = True

    def sparsity_of(self, weight_name: str) -> float:
        """Target sparsity of the named weight as configured (not measured)."""
        if isinstance(self.sparsity, dict):
            return self.sparsity.get(weight_name, 0.0)
        return self.sparsity

    def structure_of(self, weight_name: str) -> mask_math.Structure:
        """The mask pattern of the named weight (`keras_sparse.masks.Structure`).

        The wrapper's `structure` and `block_size`, or unstructured for a
        weight whose input dimension does not split into the pattern's
        groups (`keras_sparse.masks.weight_structure`).

        Raises:
            ValueError: the wrapper is not built, or has no such weight.
        """
        for mw in self.masked_weights:
            if mw.name == weight_name:
                return self._structure_of_shape(mw.name, mw.weight.shape, warn=False)
        raise ValueError(
            f"Layer {self.name!r} has no masked weight {weight_name!r}. "
            f"Accepted names: {[mw.name for mw in self.masked_weights]}."
        )

    def _structure_of_shape(self, weight_name: str, shape, warn: bool = True) -> mask_math.Structure:
        """`structure_of` a weight of `shape`; warns when it falls back to unstructured."""
        structure = mask_math.weight_structure(self.structure, shape, self.block_size)
        if warn and structure.kind != self.structure and self.sparsity_of(weight_name) > 0.0:
            asked = mask_math.Structure(self.structure, self.block_size)
            warnings.warn(
                f"Layer {self.name!r}: weight {weight_name!r} of shape {tuple(shape)} "
                f"cannot be made of {asked.describe()} (its input dimension, axis -2, "
                f"is not a multiple of {asked.group}); its mask is unstructured.",
                UserWarning, stacklevel=3,
            )
        return structure

    @property
    def masked_weights(self) -> list[MaskedWeight]:
        """The `(name, weight, mask)` triples of this wrapper, in build order."""
        if not self.built:
            raise ValueError(
                f"SparseWrapper {self.name!r} is not built yet: call the model "
                "on data or `model.build(input_shape)` first."
            )
        return list(self._masked_weights)

    def training_state(self, weight_name: str) -> dict[str, np.ndarray]:
        """Persistent sparse-training state of one masked weight (a live dict).

        Sparse-training algorithms store here, as NumPy arrays keyed by slot
        name (e.g. `"reference"`, `"ever_active"`), the state that is not
        derivable from the weights, masks and `optimizer.iterations`. The
        dict is saved with the layer (`model.save`, `model.save_weights`,
        hence `BackupAndRestore` and `ModelCheckpoint`) and replaced by the
        file's content on load. It is empty for a fresh or static model.

        Args:
            weight_name: a masked weight of this wrapper, e.g. `"kernel"`.

        Returns:
            The mutable `{slot: array}` dict of that weight.

        Raises:
            ValueError: unbuilt wrapper, or a name that is not a masked
                weight of this wrapper.
        """
        names = [name for name, _, _ in self.masked_weights]
        if weight_name not in names:
            raise ValueError(
                f"SparseWrapper {self.name!r} has no masked weight "
                f"{weight_name!r}. Accepted names: {names}."
            )
        return self._training_state.setdefault(weight_name, {})

    def save_own_variables(self, store):
        # Masks as Keras does (keys "0", "1", ...), then the training state
        # under "<weight>:<slot>" keys, which no Keras variable key contains.
        super().save_own_variables(store)
        for name, _, _ in self._masked_weights:
            slots = self._training_state.get(name, {})
            for slot in sorted(slots):
                store[f"{name}{_STATE_SEP}{slot}"] = np.asarray(slots[slot])

    def load_own_variables(self, store):
        keys = list(store.keys())
        state_keys = [k for k in keys if _STATE_SEP in k]
        variables = {k: store[k] for k in keys if _STATE_SEP not in k}
        names = [name for name, _, _ in self._masked_weights]
        state: dict[str, dict[str, np.ndarray]] = {}
        for key in state_keys:
            name, slot = key.split(_STATE_SEP, 1)
            if name not in names or not slot:
                raise ValueError(
                    f"The file holds sparse-training state {key!r} for layer "
                    f"{self.name!r}, which has no masked weight {name!r} "
                    f"(masked weights: {names}). The file does not match "
                    "this model."
                )
            state.setdefault(name, {})[slot] = np.array(store[key])
        # Keras assigns this layer's variables one by one; on a bad file
        # (wrong shapes, non-binary masks) put them all back before raising.
        before = [(v, v.numpy()) for v in self.weights]
        try:
            super().load_own_variables(variables)  # checks count and shapes
            self._check_loaded_masks()
        except ValueError as error:
            for variable, value in before:
                variable.assign(value)
            if "values other than 0 and 1" in str(error):
                raise
            raise ValueError(
                f"The file's variables for layer {self.name!r} do not match this "
                f"model (masks: {[f'{n}_mask {tuple(m.shape)}' for n, _, m in self._masked_weights]}): "
                f"{error}"
            ) from error
        # In place: callbacks hold these dicts (`training_state` is live).
        for name in names:
            slots = self._training_state.setdefault(name, {})
            slots.clear()
            slots.update(state.get(name, {}))

    def _check_loaded_masks(self) -> None:
        """Raises if a mask just loaded holds values other than 0 and 1."""
        for name, _, mask in self._masked_weights:
            value = mask.numpy()
            bad = ~np.isin(value, (0.0, 1.0))
            if bad.any():
                examples = sorted(set(value[bad].ravel().tolist()))[:5]
                raise ValueError(
                    f"The file's mask {name}_mask of layer {self.name!r} holds "
                    f"{int(bad.sum())} values other than 0 and 1 (e.g. {examples}). "
                    "Masks must be binary; the file is corrupt or was edited."
                )

    def apply_masks(self) -> None:
        """Sets every pruned weight entry to exactly 0.0."""
        for _, weight, mask in self._masked_weights:
            weight.assign(masked(weight, mask))

    def call(self, inputs, *args, **kwargs):
        # The wrapped layer reads its masked weights through a stateless
        # scope that maps each to `weight * mask`, so pruned entries are zero
        # in every forward pass whatever wrote the weight. Losses the wrapped
        # layer adds (activity regularizers) are collected and re-added here.
        mapping = [(weight, masked_forward(weight, mask)) for _, weight, mask in self._masked_weights]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, *args, **kwargs)
        if scope.losses:
            self.add_loss(scope.losses)
        return outputs

    def get_build_config(self):
        config = super().get_build_config() or {}
        inner = self.layer.get_build_config()
        if inner is not None:
            config["layer_build_config"] = inner
        return config or None

    def build_from_config(self, config):
        # Layers built from several shapes (MultiHeadAttention) cannot be
        # built from the wrapper's single input shape: build them first.
        inner = (config or {}).get("layer_build_config")
        if inner is not None and not self.layer.built:
            self.layer.build_from_config(inner)
        super().build_from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update({"sparsity": self.sparsity, "seed": self.seed,
                       "keras_sparse_version": __version__})
        if self.structure != "unstructured":
            config["structure"] = self.structure
        if self.structure == "block":
            config["block_size"] = self.block_size
        return config
