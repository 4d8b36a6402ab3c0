"""Model transforms of ToST: add / remove each temporary tweak.

Every function returns a new model (weights copied by layer name) and leaves
its input untouched; Sequential models are accepted and come back Functional.
Nested Functional / Sequential sub-models are edited too, each on its own
graph (they come back as Functional sub-models with the same name); a nested
subclassed model raises a `ValueError` naming it before anything is changed.
Compile the returned model before training.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from keras_sparse.layers.prunable import get_prunable_weights, is_prunable
from keras_sparse.layers.sparse_wrapper import SparseWrapper
from keras_sparse.model_utils import iter_leaf_layers
from keras_sparse.tost.graph import Graph, as_functional, check_nested, edit_nested, inner_config
from keras_sparse.tost.layers import GhostGate, GhostSwish, LRSIScale

__all__ = [
    "add_ghost_skips",
    "add_ghost_swish",
    "add_lrsi",
    "fold_lrsi",
    "ghost_layers",
    "remove_ghost_skips",
    "swap_to_relu",
]

# Single-input layers that keep the shape and may sit inside a ghost-skipped unit.
_PASS_THROUGH = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    GhostSwish,
    LRSIScale,
)


def _prunable(layer) -> bool:
    return isinstance(layer, SparseWrapper) or (layer is not None and is_prunable(layer))


def _shape(tensor_shape):
    return tuple(tensor_shape)[1:]


def _has_io_shape(layer) -> bool:
    try:
        layer.input.shape, layer.output.shape  # noqa: B018 (single-call layers only)
    except (AttributeError, ValueError):
        return False
    return True


def ghost_layers(model: keras.Model, cls: type) -> list[keras.layers.Layer]:
    """Every layer of type `cls` in `model` (nested models included)."""
    found = []

    def walk(container):
        for layer in container.layers:
            if isinstance(layer, cls):
                found.append(layer)
            elif hasattr(layer, "layers") and isinstance(layer, keras.Model):
                walk(layer)

    walk(model)
    return found


_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
PLACEMENTS = ("before_norm", "after_unit")


def _ghost_units(graph: Graph, placement: str = "before_norm") -> list[tuple[str, str, dict]]:
    """(start layer, end layer, start input ref) of every ghost-skippable unit.

    A unit starts at a single-call prunable layer whose input and output
    shapes are equal and extends through the single-consumer chain of
    shape-preserving pass-through layers (BatchNorm, activations, dropout)
    that follows it, stopping before the next prunable layer, merge or model
    output; with `placement="before_norm"` it also stops before the first
    normalization layer.
    """
    units = []
    for entry in graph.entries:
        name = entry["name"]
        layer = graph.layer(name)
        if not _prunable(layer) or not graph.is_single_call(name):
            continue
        refs = graph.input_refs(name)
        if len(refs) != 1:
            continue
        try:
            in_shape, out_shape = _shape(layer.input.shape), _shape(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if in_shape != out_shape:
            continue
        end = name
        while True:
            consumers = graph.consumers(end)
            if len(consumers) != 1 or consumers[0] == "<output>":
                break
            nxt = graph.layer(consumers[0])
            if (not isinstance(nxt, _PASS_THROUGH) or not graph.is_single_call(nxt.name)
                    or _shape(nxt.output.shape) != out_shape):
                break
            if placement == "before_norm" and isinstance(nxt, _NORMALIZATION):
                break
            end = nxt.name
        units.append((name, end, refs[0]))
    return units


def add_ghost_skips(model: keras.Model, alpha: float = 1.0,
                    placement: str = "before_norm") -> keras.Model:
    """Adds gated ghost skip connections around every shape-preserving unit.

    For each single-call prunable layer L (Dense/Conv, wrapped or not) whose
    input and output have the same shape, the unit "L followed by its chain
    of activation / dropout layers" gets an identity skip from L's input to
    the unit's output through a `GhostGate`: `unit_out + alpha * L_in`. With
    the default `placement="before_norm"` the unit stops before a
    normalization layer, so Conv -> BN -> ReLU becomes
    `ReLU(BN(conv(x) + alpha * x))`: the normalization rescales the sum and
    activations keep their scale. `placement="after_unit"` adds the skip after
    the whole Conv -> BN -> ReLU chain instead; in a CIFAR ResNet that stacks
    with the block's own shortcut and multiplies the identity path about 3x
    per block (ResNet-20 at 95% SNIP: initial loss 9.2 instead of 2.3, and
    training at lr 0.1 stayed near chance, 14.2%; see
    benchmarks/results/tost_ablation.md). In a CIFAR ResNet this puts one
    ghost skip around each 3x3 conv of every non-downsampling block (no
    projection is ever added: shape-changing layers get no ghost). Works on any Functional
    ResNet built from `Add` layers, on Sequential models, and inside nested
    Functional / Sequential sub-models (a unit never crosses a sub-model
    boundary; the gates live in the sub-model).

    Args:
        model: a Functional or Sequential model (sparse or dense).
        alpha: initial gate value.
        placement: `"before_norm"` (default) or `"after_unit"` (see above).

    Returns:
        A new model with `GhostGate` layers named `<L>_ghost_gate`.

    Raises:
        TypeError: subclassed model or not a model.
        ValueError: no layer has equal input and output shapes (nothing to
            ghost-skip), the model already has ghost skips, or a nested
            sub-model is subclassed (named in the message).

    Reference:
        Jaiswal et al., "Training Your Sparse Neural Network Better with Any
        Mask", ICML 2022 (Figure 4).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"`placement` must be one of {PLACEMENTS}. Received: {placement!r}.")
    functional = as_functional(model, "add_ghost_skips")
    check_nested(functional, "add_ghost_skips")
    if ghost_layers(functional, GhostGate):
        raise ValueError(f"Model {model.name!r} already has ghost skips (GhostGate layers).")

    def edit(graph):
        units = _ghost_units(graph, placement)
        for start, end, ref in units:
            gate = GhostGate(alpha=alpha, name=f"{start}_ghost_gate")
            graph.insert_after(end, gate, extra_inputs=[ref])
        return len(units), None

    new, changes = edit_nested(functional, "add_ghost_skips", edit)
    if not changes:
        raise ValueError(
            f"Model {model.name!r} has no place for a ghost skip: ghost skips "
            "need a single-call Dense/Conv layer whose input and output "
            "shapes are equal (e.g. the 3x3 convs of a ResNet block). "
            "Received layers with shapes: "
            + ", ".join(
                f"{l.name} {_shape(l.input.shape)}->{_shape(l.output.shape)}"
                for l in iter_leaf_layers(functional) if _prunable(l) and _has_io_shape(l)
            )
        )
    return new


def remove_ghost_skips(model: keras.Model, force: bool = False) -> keras.Model:
    """Removes every `GhostGate`, restoring the original graph.

    Args:
        model: a model from `add_ghost_skips` (after the ghost phase).
        force: remove the gates even if some `alpha != 0` (outputs change).

    Returns:
        A new model whose graph is the one before `add_ghost_skips`; with all
        gates at 0 its outputs are identical.

    Raises:
        ValueError: a gate still has `alpha != 0` and `force` is False, or
            there is no GhostGate.
    """
    functional = as_functional(model, "remove_ghost_skips")
    check_nested(functional, "remove_ghost_skips")
    gates = ghost_layers(functional, GhostGate)
    if not gates:
        raise ValueError(f"Model {model.name!r} has no GhostGate layer to remove.")
    open_gates = {g.name: float(g.alpha.numpy()) for g in gates if float(g.alpha.numpy()) != 0.0}
    if open_gates and not force:
        raise ValueError(
            f"Ghost gates still open (alpha != 0): {open_gates}. Removing them "
            "would change the outputs; finish the ghost phase (ToSTCallback "
            "anneals alpha to 0) or pass `force=True`."
        )

    def edit(graph):
        names = graph.names(GhostGate)
        for name in names:
            graph.remove(name)
        return len(names), None

    return edit_nested(functional, "remove_ghost_skips", edit)[0]


def _refuse(graph: Graph, act_name: str, activation) -> bool:
    """Folds a split-out activation back into its layer (undoing a ToST split).

    Only for activations named `<layer>_act` / `<layer>_ghost_swish` that read
    directly from single-consumer `<layer>`, i.e. the ones ToST split out.
    """
    refs = graph.input_refs(act_name)
    if len(refs) != 1:
        return False
    source = refs[0]["config"]["keras_history"][0]
    if act_name not in (f"{source}_act", f"{source}_ghost_swish"):
        return False
    if graph.consumers(source) != [act_name] or not graph.is_single_call(source):
        return False
    cfg = inner_config(graph.entry(source))
    if cfg.get("activation") not in (None, "linear"):
        return False
    cfg["activation"] = activation
    graph.remove(act_name)
    return True


def _is_relu_activation(value) -> bool:
    return value == "relu" or (isinstance(value, dict) and value.get("config") == "relu")


def add_ghost_swish(model: keras.Model, beta: float = 1.0) -> keras.Model:
    """Replaces every ReLU with a `GhostSwish(beta)` layer.

    Covers `Activation("relu")`, plain `ReLU()` layers (no `max_value`,
    slope or threshold) and `activation="relu"` inside single-call layers
    (the activation is split out into a `GhostSwish` named
    `<layer>_ghost_swish`).

    Args:
        model: a Functional or Sequential model.
        beta: initial beta (1: Swish).

    Returns:
        A new model.

    Raises:
        ValueError: the model has no ReLU.
    """
    functional = as_functional(model, "add_ghost_swish")
    check_nested(functional, "add_ghost_swish")
    new, changed = edit_nested(functional, "add_ghost_swish",
                               lambda graph: (_swish_edit(graph, beta), None))
    if not changed:
        raise ValueError(f"Model {model.name!r} has no ReLU to replace with GhostSwish.")
    return new


def _swish_edit(graph: Graph, beta: float) -> int:
    changed = 0
    for entry in list(graph.entries):
        name = entry["name"]
        layer = graph.layer(name)
        if isinstance(layer, keras.layers.ReLU):
            cfg = layer.get_config()
            if cfg.get("max_value") is None and not cfg.get("negative_slope") and not cfg.get("threshold"):
                graph.replace(name, GhostSwish(beta, name=name))
                changed += 1
        elif isinstance(layer, keras.layers.Activation) and _is_relu_activation(
                entry["config"].get("activation")):
            graph.replace(name, GhostSwish(beta, relu_layer="activation", name=name))
            changed += 1
        elif graph.is_single_call(name) and _is_relu_activation(
                inner_config(entry).get("activation")) and not isinstance(layer, keras.layers.Activation):
            inner_config(entry)["activation"] = "linear"
            graph.insert_after(name, GhostSwish(beta, name=f"{name}_ghost_swish"))
            changed += 1
    return changed


def swap_to_relu(model: keras.Model) -> keras.Model:
    """Replaces every `GhostSwish` by an exact `keras.layers.ReLU` (same name).

    A `GhostSwish` that `add_ghost_swish` split out of a layer's fused
    `activation="relu"` is fused back (`activation="relu"` again), so the
    graph is the original one.

    Returns:
        A new model with plain ReLU layers.

    Raises:
        ValueError: the model has no GhostSwish.
    """
    functional = as_functional(model, "swap_to_relu")
    check_nested(functional, "swap_to_relu")
    if not ghost_layers(functional, GhostSwish):
        raise ValueError(f"Model {model.name!r} has no GhostSwish layer to swap.")

    def edit(graph):
        names = graph.names(GhostSwish)
        for name in names:
            layer = graph.layer(name)
            if not _refuse(graph, name, "relu"):
                relu = (keras.layers.Activation("relu", name=name)
                        if layer.relu_layer == "activation" else keras.layers.ReLU(name=name))
                graph.replace(name, relu)
        return len(names), None

    return edit_nested(functional, "swap_to_relu", edit)[0]


def add_lrsi(model: keras.Model, initial_scale: float = 1.0) -> keras.Model:
    """Adds one learned `LRSIScale` after every single-call prunable layer.

    A fused activation (e.g. `Conv2D(activation="relu")`) is moved into an
    `Activation` layer after the scale, so the scale multiplies `W x + b`
    and can be folded exactly.

    Args:
        model: a Functional or Sequential model.
        initial_scale: starting scalar.

    Returns:
        A new model with `LRSIScale` layers named `<layer>_lrsi`.

    Raises:
        ValueError: no prunable layer.

    Reference:
        Jaiswal et al., ICML 2022 (LRSI).
    """
    functional = as_functional(model, "add_lrsi")
    check_nested(functional, "add_lrsi")
    new, changed = edit_nested(functional, "add_lrsi",
                               lambda graph: (_lrsi_edit(graph, initial_scale), None))
    if not changed:
        raise ValueError(f"Model {model.name!r} has no prunable layer to re-scale.")
    return new


def _lrsi_edit(graph: Graph, initial_scale: float) -> int:
    changed = 0
    for entry in list(graph.entries):
        name = entry["name"]
        if not _prunable(graph.layer(name)) or not graph.is_single_call(name):
            continue
        cfg = inner_config(entry)
        activation = cfg.get("activation")
        graph.insert_after(name, LRSIScale(initial_scale, name=f"{name}_lrsi"))
        if activation not in (None, "linear"):
            cfg["activation"] = "linear"
            graph.insert_after(f"{name}_lrsi", keras.layers.Activation(
                keras.activations.deserialize(activation) if isinstance(activation, dict)
                else activation, name=f"{name}_act"))
        changed += 1
    return changed


def fold_lrsi(model: keras.Model) -> keras.Model:
    """Folds every `LRSIScale` into the preceding layer and removes it.

    An activation that `add_lrsi` split out of the layer is fused back.
    The last prunable weight of the layer (the kernel; the pointwise kernel
    of separable convs) and its bias are multiplied by the scalar, so the
    result has no extra op and masked entries stay exactly zero.

    Returns:
        A new model; its outputs equal the input model's (to float rounding).

    Raises:
        ValueError: no LRSIScale layer, or one not right after a prunable layer.
    """
    functional = as_functional(model, "fold_lrsi")
    check_nested(functional, "fold_lrsi")
    if not ghost_layers(functional, LRSIScale):
        raise ValueError(f"Model {model.name!r} has no LRSIScale layer to fold.")
    _check_lrsi_placement(functional)
    return edit_nested(functional, "fold_lrsi", _fold_edit)[0]


def _lrsi_source(graph: Graph, name: str):
    refs = graph.input_refs(name)
    return graph.layer(refs[0]["config"]["keras_history"][0]) if refs else None


def _check_lrsi_placement(model: keras.Model) -> None:
    """Every LRSIScale must directly follow a prunable layer (checked before editing)."""
    graph = Graph(as_functional(model, "fold_lrsi"))
    for name in graph.names(LRSIScale):
        source = _lrsi_source(graph, name)
        if not _prunable(source):
            raise ValueError(
                f"LRSIScale {name!r} must directly follow a prunable layer; "
                f"it follows {getattr(source, 'name', None)!r}."
            )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_lrsi_placement(layer)


def _fold_edit(graph: Graph):
    folds = {}
    for name in graph.names(LRSIScale):
        source = _lrsi_source(graph, name)
        folds[source.name] = float(graph.layer(name).scale.numpy())
        graph.remove(name)
        act = graph.layer(f"{source.name}_act")
        if isinstance(act, keras.layers.Activation):
            _refuse(graph, act.name, keras.activations.serialize(act.activation))

    bad = {name: value for name, value in folds.items() if not np.isfinite(value)}
    if bad:
        warnings.warn(
            f"fold_lrsi: the LRSI scale of {sorted(bad)} is not finite "
            f"({', '.join(f'{k}={v}' for k, v in sorted(bad.items()))}): training "
            "diverged. Folding keeps pruned entries exactly zero, but the model's "
            "outputs will not be finite.", RuntimeWarning, stacklevel=3)

    def finish(new):
        for name, value in folds.items():
            layer = new.get_layer(name)
            inner = layer.layer if isinstance(layer, SparseWrapper) else layer
            kernel = get_prunable_weights(inner)[-1][1]
            w = np.asarray(kernel.numpy())
            # Zeros stay exactly zero even for a non-finite scale (0 * inf is NaN).
            kernel.assign(np.where(w == 0, np.float32(0), w * np.float32(value)))
            if getattr(inner, "bias", None) is not None:
                inner.bias.assign(np.asarray(inner.bias.numpy()) * np.float32(value))

    return len(folds), finish
