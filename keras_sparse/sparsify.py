"""`sparsify` and `strip`: from a dense Keras model to a sparse one and back."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence


import keras
import numpy as np

from keras_sparse import allocation, channels
from keras_sparse import masks as mask_math
from keras_sparse.layers.prunable import get_prunable_weights, is_prunable
from keras_sparse.layers.sparse_wrapper import SparseWrapper, masked
from keras_sparse.model_utils import check_graph_model, clone_with, iter_leaf_layers
from keras_sparse.model_view import masked_weights, sparse_wrappers

__all__ = ["sparse_wrappers", "sparsify", "strip"]


# keep_dense="auto" leaves the first layer dense under "uniform" only while it
# holds at most this share of the prunable parameters (RigL's reason for the
# convention is a tiny first conv: 0.04% of ResNet-50's weights).
AUTO_DENSE_MAX_SHARE = 0.05
# A layer left dense that holds more than this share of all parameters gets a
# warning with the model-wide sparsity that results.
LARGE_DENSE_SHARE = 0.2


def _params(layer: keras.layers.Layer) -> int:
    return sum(int(np.prod(w.shape, dtype=np.int64)) for _, w in get_prunable_weights(layer))


def _warn_large_dense_layers(model: keras.Model, plan: dict[int, dict[str, float]]) -> None:
    """Warns when layers left dense hold much of the model's parameters."""
    total = int(model.count_params())
    if not total:
        return
    pruned = 0.0
    dense: list[tuple[str, str, int]] = []
    for layer in iter_leaf_layers(model):
        if not isinstance(layer, keras.layers.Layer) or not layer.built:
            continue  # ops in the graph (x + y) hold no weights
        if id(layer) in plan:
            sizes = {n: int(np.prod(w.shape, dtype=np.int64)) for n, w in get_prunable_weights(layer)}
            pruned += sum(sizes[n] * s for n, s in plan[id(layer)].items())
            continue
        size = int(layer.count_params())
        if size > LARGE_DENSE_SHARE * total:
            why = "kept dense" if is_prunable(layer) else (
                f"its type {type(layer).__name__} is not prunable")
            dense.append((layer.name, why, size))
    for name, why, size in dense:
        warnings.warn(
            f"Layer {name!r} stays dense ({why}) and holds {size / total:.1%} of "
            f"the model's {total:,} parameters: the model will be about "
            f"{pruned / total:.1%} sparse overall, not the requested sparsity of "
            "the masked weights. Name it in `distribution`, take it out of "
            "`keep_dense`, or register its weights with "
            "`keras_sparse.layers.register_prunable_weights`.",
            UserWarning,
            stacklevel=3,
        )


def _prunable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = []
    for layer in iter_leaf_layers(model):
        if isinstance(layer, SparseWrapper):
            raise ValueError(
                f"Model {model.name!r} is already sparsified (layer "
                f"{layer.name!r} is a SparseWrapper). Call "
                "`keras_sparse.strip(model)` first to re-sparsify it, or keep "
                "training the sparse model."
            )
        if is_prunable(layer) and layer.built:
            layers.append(layer)
    return layers


def _plan(
    layers: Sequence[keras.layers.Layer],
    sparsity: float,
    distribution: str | Mapping[str, float],
    erk_power_scale: float,
    keep_dense: str | Sequence[str] | None,
) -> dict[int, dict[str, float]]:
    """Maps id(layer) -> {weight_name: sparsity} for the layers to wrap."""
    seen: dict[str, keras.layers.Layer] = {}
    for layer in layers:
        if seen.setdefault(layer.name, layer) is not layer:
            raise ValueError(
                f"Two different prunable layers are named {layer.name!r} (in nested "
                "sub-models). sparsify plans, reports and `distribution`/`keep_dense` "
                "keys use layer names, so they must be unique across the whole model. "
                "Rename one of them (e.g. `name=` when building the sub-model)."
            )
    weights = {
        layer.name: {name: tuple(v.shape) for name, v in get_prunable_weights(layer)}
        for layer in layers
    }
    by_name = {layer.name: layer for layer in layers}
    accepted = sorted(by_name) + sorted(
        f"{layer}/{w}" for layer, ws in weights.items() for w in ws
    )

    if isinstance(distribution, Mapping):
        plan: dict[int, dict[str, float]] = {}
        for key, value in distribution.items():
            layer_name, _, weight_name = str(key).partition("/")
            if layer_name not in by_name or (weight_name and weight_name not in weights[layer_name]):
                raise ValueError(
                    f"`distribution` names {key!r}, which is not a prunable "
                    f"weight of model. Accepted names: {accepted}."
                )
            value = mask_math.validate_sparsity(value, f"distribution[{key!r}]")
            entry = plan.setdefault(id(by_name[layer_name]), {})
            for w in [weight_name] if weight_name else weights[layer_name]:
                entry[w] = value
        return plan

    if keep_dense == "auto":
        dense_names = []
        if distribution == "uniform" and len(layers) > 1:
            first = layers[0]
            share = _params(first) / sum(_params(layer) for layer in layers)
            if share <= AUTO_DENSE_MAX_SHARE:
                dense_names = [first.name]
    elif keep_dense is None:
        dense_names = []
    elif isinstance(keep_dense, str) or not all(isinstance(n, str) for n in keep_dense):
        raise TypeError(
            "`keep_dense` must be 'auto', None or a list of layer names. "
            f"Received: {keep_dense!r}."
        )
    else:
        dense_names = list(keep_dense)
    missing = sorted(set(dense_names) - set(by_name))
    if missing:
        raise ValueError(
            f"`keep_dense` names {missing}, which are not prunable layers of "
            f"the model. Accepted names: {sorted(by_name)}."
        )
    shapes = {
        f"{layer}/{w}": shape
        for layer, ws in weights.items()
        if layer not in dense_names
        for w, shape in ws.items()
    }
    if not shapes:
        raise ValueError(
            "Nothing to sparsify: every prunable layer is in `keep_dense` "
            f"({dense_names})."
        )
    per_weight = allocation.allocate(shapes, sparsity, distribution, erk_power_scale)
    plan = {}
    for key, value in per_weight.items():
        layer_name, _, weight_name = key.partition("/")
        plan.setdefault(id(by_name[layer_name]), {})[weight_name] = value
    return plan


def _warn_nearly_empty(layers, plan, structure: str, block_size: int) -> None:
    """Warns about weights the plan leaves with at most one entry (or block) active."""
    nearly_empty = []
    units = set()
    for layer in layers:
        for name, weight in get_prunable_weights(layer):
            value = plan.get(id(layer), {}).get(name)
            unit = mask_math.weight_structure(structure, weight.shape, block_size).unit
            size = int(np.prod(weight.shape, dtype=np.int64))
            if value is None or size // unit <= 1:
                continue
            kept = mask_math.num_active(size // unit, value) * unit
            if kept <= unit:
                units.add(unit)
                nearly_empty.append(f"{layer.name}/{name} keeps {kept} of {size} (sparsity {value:.7g})")
    if nearly_empty:
        shown = "; ".join(nearly_empty[:10]) + ("; ..." if len(nearly_empty) > 10 else "")
        warnings.warn(
            f"sparsify: {len(nearly_empty)} weight(s) keep at most one "
            f"{' or '.join(f'1x{u} block' if u > 1 else 'entry' for u in sorted(units))}: {shown}. Such a layer is all "
            "but disconnected; use a lower sparsity or keep the layer dense "
            "(`keep_dense=`).", UserWarning, stacklevel=3)


def sparsify(
    model: keras.Model,
    sparsity: float,
    distribution: str | Mapping[str, float] = "erk",
    erk_power_scale: float = 1.0,
    keep_dense: str | Sequence[str] | None = "auto",
    seed: int | None = None,
    structure: str = "unstructured",
    block_size: int | None = None,
) -> keras.Model:
    """Returns a copy of `model` with its prunable layers wrapped and masked.

    Every prunable layer (see `keras_sparse.layers.SparseWrapper`) is wrapped
    in a `SparseWrapper` with a seeded random mask; the sparsity of each weight
    comes from `distribution`. The new model has the original weights (pruned
    entries set to 0.0), the same graph and layer names, and trains with plain
    `model.fit`: pruned weights stay exactly zero after every step. The input
    model is not modified. Compile the returned model before training.

    Args:
        model: a built Sequential or Functional model (nested models and
            shared layers are supported). Subclassed models cannot be cloned:
            wrap their layers with `SparseWrapper` directly.
        sparsity: global fraction of zeros over the sparsified weights, in
            [0, 1). Ignored when `distribution` is a dict.
        distribution: `"uniform"`, `"er"`, `"erk"` (default, as in RigL), or a
            dict `{layer_name or "layer/weight": sparsity}`; with a dict, the
            layers not named stay dense and unwrapped.
        erk_power_scale: exponent of the ERK score (RigL's `erk_power_scale`).
        keep_dense: layer names to leave dense and unwrapped. `"auto"`
            follows RigL's conventions: with `"uniform"` the first prunable
            layer stays dense while it is small (at most
            `AUTO_DENSE_MAX_SHARE` = 5% of the prunable parameters, e.g. a
            first conv; an MLP's large first layer is sparsified); with
            `"er"`/`"erk"` every prunable layer is sparsified (ER/ERK gives
            small layers high density by itself). `None` keeps nothing
            dense. Any layer left dense that holds over 20% of the model's
            parameters gets a `UserWarning` with the resulting model-wide
            sparsity.
        seed: seed of the random masks, a non-negative int (`None`:
            random). The same seed gives the same masks.
        structure: pattern of the initial masks, `"unstructured"`,
            `"block"` (1 x `block_size` along the input dimension) or
            `"n:m"` (2:4); see `keras_sparse.masks.STRUCTURES`. A weight
            whose input dimension does not split into the pattern's groups
            (e.g. a 3-channel stem conv) falls back to unstructured, with a
            warning; every sparse-training algorithm keeps each weight's
            pattern.
        block_size: for `structure="block"`: 4 (default; TFLite's float32
            sparse FULLY_CONNECTED kernel) or 16 (its int8 kernel).

    Returns:
        A new `keras.Model` whose global sparsity over the wrapped weights is
        `sparsity` (within rounding of one weight per layer).

    Raises:
        TypeError: not a model, a subclassed model, bad `keep_dense`, a
            `seed` that is not an int.
        ValueError: sparsity outside [0, 1), unknown distribution, an empty
            dict, a dict or `keep_dense` naming layers the model lacks, a
            model with no prunable layer, an unbuilt or already sparsified
            model, a negative `seed`, a `block_size` other than 4 or 16 (or
            given without `structure="block"`), `"n:m"` below sparsity 0.5.

    Warns:
        UserWarning: a weight falls back to unstructured (see `structure`).
        UserWarning: a weight keeps at most one entry (or one block):
            `sparsity` so close to 1 that the layer is all but disconnected
            (`num_active` never keeps fewer than one unit). A warning, not
            an error: the request is well-formed, and a one-entry layer is
            what it asks for.

    Example:

    >>> model = keras_sparse.models.small_cnn()
    >>> sparse = keras_sparse.sparsify(model, 0.9, distribution="erk", seed=0)
    >>> sparse.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    >>> sparse.fit(x, y, epochs=1)

    Reference:
        Evci et al., "Rigging the Lottery: Making All Tickets Winners",
        ICML 2020 (ERK and the dense-first-layer convention).
    """
    check_graph_model(model, "sparsify")
    seed = mask_math.validate_seed(seed, allow_none=True)
    if not isinstance(distribution, Mapping):
        sparsity = mask_math.validate_sparsity(sparsity)
    elif not distribution:
        raise ValueError(
            "`distribution` is an empty dict, which would sparsify no layer. "
            "Accepted: 'uniform', 'er', 'erk', or a non-empty dict "
            "{layer_name or 'layer/weight': sparsity}."
        )
    layers = _prunable_layers(model)
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no prunable layer. Prunable types: "
            "Dense, EinsumDense, Conv*, DepthwiseConv*, SeparableConv*, "
            "Embedding, or layers registered with "
            "`keras_sparse.layers.register_prunable_weights`."
        )
    plan = _plan(layers, sparsity, distribution, erk_power_scale, keep_dense)
    _warn_large_dense_layers(model, plan)
    mask_math.validate_structure(structure)
    block_size = mask_math.validate_block_size(block_size, structure)
    if structure != "unstructured":
        for layer in layers:
            for name, weight in get_prunable_weights(layer):
                value = plan.get(id(layer), {}).get(name, 0.0)
                if id(layer) in plan and value > 0.0:
                    mask_math.validate_structure(
                        mask_math.weight_structure(structure, weight.shape, block_size),
                        None, value, f"weight {layer.name}/{name}",
                    )
    _warn_nearly_empty(layers, plan, structure, block_size)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    order = {id(layer): i for i, layer in enumerate(layers)}

    def replace(layer):
        if id(layer) not in plan:
            return None
        weight_sparsity = plan[id(layer)]
        clone = layer.__class__.from_config(layer.get_config())
        build_config = layer.get_build_config()
        if build_config is not None:  # e.g. MultiHeadAttention: several input shapes
            clone.build_from_config(build_config)
        layer_seed = int(mask_math.seed_for(seed, order[id(layer)]).integers(2**31))
        return SparseWrapper(
            clone, sparsity=weight_sparsity, seed=layer_seed, structure=structure,
            block_size=block_size if structure == "block" else None,
        )

    def copy_weights(old, wrapper):
        wrapper.layer.set_weights(old.get_weights())
        wrapper.apply_masks()

    return clone_with(model, replace, copy_weights)


def strip(model: keras.Model, remove_channels: bool = False) -> keras.Model:
    """Returns a plain Keras model with every `SparseWrapper` removed.

    The stripped model has the same graph, layer names and outputs; masked
    entries are exact 0.0 in its weights. It needs nothing from keras_sparse
    to load, run or convert (e.g. to TFLite).

    With `remove_channels=True` the channels whose whole output slice of the
    kernel is masked out are also taken out physically (fewer filters and
    units, the next layers' input slices dropped, their constant output
    folded into the next layers' biases; see `keras_sparse.channels`), so
    the model is smaller and faster with dense kernels and its outputs
    equal the sparse model's up to float rounding.

    Args:
        model: a Sequential or Functional model, usually from `sparsify`.
        remove_channels: also remove masked-out channels (returns a
            Functional model; default False).

    Returns:
        A new `keras.Model`; the input is untouched.

    Raises:
        TypeError: not a model, a subclassed model, `remove_channels` not a bool.
        ValueError: with `remove_channels`, a shared layer.

    Example:

    >>> plain = keras_sparse.strip(sparse_model)
    >>> plain.save("model.keras")
    """
    check_graph_model(model, "strip")
    if not isinstance(remove_channels, bool):
        raise TypeError(f"`remove_channels` must be a bool. Received: {remove_channels!r}.")

    def replace(layer):
        if isinstance(layer, SparseWrapper):
            inner = layer.layer
            return inner.__class__.from_config(inner.get_config())
        return None

    def copy_weights(wrapper, plain):
        masks = {id(r.weight): r.mask for r in masked_weights(wrapper)}
        plain.set_weights(
            [
                keras.ops.convert_to_numpy(masked(v, masks[id(v)])) if id(v) in masks else v.numpy()
                for v in wrapper.layer.weights
            ]
        )

    plain = clone_with(model, replace, copy_weights)
    return channels.remove_channels(plain) if remove_channels else plain
