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
from keras_sparse.model_utils import iter_layers, iter_leaf_layers
from keras_sparse.tost.graph import OUTPUT, Graph, Ref, as_functional, check_nested, edit_nested
from keras_sparse.tost.layers import GhostGate, GhostJump, GhostSwish, LRSIScale

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


def _prepare(model, what: str) -> keras.Model:
    """`model` as a Functional model whose nested models all have a graph."""
    functional = as_functional(model, what)
    check_nested(functional, what)
    return functional


def _edit_or_raise(model, what: str, edit, missing: str) -> keras.Model:
    """Applies `edit` (see `edit_nested`); raises if it changed nothing.

    Raises:
        ValueError: no change; the message says the model has no `missing`.
    """
    new, changed = edit_nested(_prepare(model, what), what, edit)
    if not changed:
        raise ValueError(f"Model {model.name!r} has no {missing}.")
    return new


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
    return [layer for _, layer in iter_layers(model) if isinstance(layer, cls)]


_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
PLACEMENTS = ("before_norm", "after_unit")


def _ghost_units(graph: Graph, placement: str = "before_norm") -> list[tuple[str, str]]:
    """(start layer, end layer) of every ghost-skippable unit.

    A unit starts at a single-call prunable layer whose input and output
    shapes are equal and extends through the single-consumer chain of
    shape-preserving pass-through layers (BatchNorm, activations, dropout)
    that follows it, stopping before the next prunable layer, merge or model
    output; with `placement="before_norm"` it also stops before the first
    normalization layer.
    """
    units = []
    for name in graph.order():
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
            if len(consumers) != 1 or consumers[0] == OUTPUT:
                break
            nxt = graph.layer(consumers[0])
            if (not isinstance(nxt, _PASS_THROUGH) or not graph.is_single_call(nxt.name)
                    or _shape(nxt.output.shape) != out_shape):
                break
            if placement == "before_norm" and isinstance(nxt, _NORMALIZATION):
                break
            end = nxt.name
        units.append((name, end))
    return units


VARIANTS = ("jump", "identity")


def _branch_layers(graph: Graph, ref: Ref) -> list[str]:
    """Prunable layers on the branch ending at `ref`, walking back to its split.

    Walks back from the producer of `ref` through single-call, single-input,
    single-consumer layers, and stops at a layer whose output has several
    readers (the tensor the residual block splits from), a merge, an input
    or a nested model.
    """
    found = []
    name = ref.layer
    while True:
        layer = graph.layer(name)
        if (layer is None or isinstance(layer, (keras.layers.InputLayer, keras.Model))
                or len(graph.consumers(name)) != 1 or not graph.is_single_call(name)):
            return found
        refs = graph.input_refs(name)
        if len(refs) != 1:
            return found
        if _prunable(layer):
            found.append(name)
        name = refs[0].layer


def _residual_convs(graph: Graph) -> list[str]:
    """Prunable layers of the residual branch of every `Add` block.

    For each single-call `Add` the branch with the most prunable layers is
    the residual branch (a shortcut holds none, or one 1x1 projection);
    tied branches are all taken.
    """
    names = []
    for name in graph.order():
        if not isinstance(graph.layer(name), keras.layers.Add):
            continue
        if not graph.is_single_call(name):
            continue
        branches = [_branch_layers(graph, ref) for ref in graph.input_refs(name)]
        most = max((len(b) for b in branches), default=0)
        for branch in branches:
            if most and len(branch) == most:
                names.extend(n for n in reversed(branch) if n not in names)
    return names


def _inner(layer):
    return layer.layer if isinstance(layer, SparseWrapper) else layer


def _jump_strides(layer) -> tuple[int, ...] | None:
    """Strides of the 1x1 jump for `layer` (None: not a Dense/Conv layer)."""
    inner = _inner(layer)
    if isinstance(inner, keras.layers.Dense):
        return (1,)
    strides = getattr(inner, "strides", None)
    return None if strides is None else tuple(strides)


def _jump_fits(layer, strides, data_format) -> bool:
    """True when a 1x1 jump with `strides` maps the input shape to the output shape."""
    try:
        probe = GhostJump(strides=strides, data_format=data_format)
        probe.build([tuple(layer.output.shape), tuple(layer.input.shape)])
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _jump_edit(graph: Graph, alpha: float) -> int:
    changed = 0
    for name in _residual_convs(graph):
        layer = graph.layer(name)
        strides = _jump_strides(layer)
        refs = graph.input_refs(name)
        if strides is None or len(refs) != 1 or not graph.is_single_call(name):
            continue
        data_format = getattr(_inner(layer), "data_format", None) or "channels_last"
        if not _jump_fits(layer, strides, data_format):
            continue
        jump = GhostJump(alpha=alpha, strides=strides, data_format=data_format,
                         name=f"{name}_ghost_jump")
        # The reference adds the jump to the conv's BN output, before the
        # activation: find that point (skipping an LRSIScale) and split a
        # fused activation out of the conv when there is no BN.
        anchor = name
        consumers = graph.consumers(anchor)
        if len(consumers) == 1 and isinstance(graph.layer(consumers[0]), LRSIScale):
            anchor = consumers[0]
            consumers = graph.consumers(anchor)
        if (len(consumers) == 1 and isinstance(graph.layer(consumers[0]), _NORMALIZATION)
                and graph.is_single_call(consumers[0])):
            anchor = consumers[0]
        elif anchor == name:
            activation = graph.activation(name)
            if activation not in (None, "linear"):
                graph.set_activation(name, "linear")
                graph.insert_after(name, keras.layers.Activation(
                    keras.activations.deserialize(activation) if isinstance(activation, dict)
                    else activation, name=f"{name}_act"))
        graph.insert_after(anchor, jump, extra_inputs=[refs[0]])
        changed += 1
    return changed


def add_ghost_skips(model: keras.Model, alpha: float = 1.0, placement: str | None = None,
                    variant: str = "jump") -> keras.Model:
    """Adds gated ghost skip connections: learned 1x1 jumps (default) or identities.

    `variant="jump"` (default, as the reference code): every convolution of
    the residual branch of every residual block (the branch of an `Add` with
    the most prunable layers; the shortcut holds none or one projection),
    including the stride-2 convolutions that open a stage, gets a
    `GhostJump`: `BN(conv(x)) + alpha * BN_j(conv_1x1(x))`, where `x` is the
    conv's input, the 1x1 conv has the conv's strides and all weights 1e-4,
    and the jump is added after the conv's BatchNorm, before its activation
    (in the reference the second jump is added after the block's `Add`; the
    sum is the same). A conv with no BatchNorm after it gets the jump on its
    output; a fused activation (`activation="relu"`) is split out first
    (`<conv>_act`) and fused back by `remove_ghost_skips`. The stem, the
    projection shortcuts and the classifier get none. Convolutions whose
    output shape no 1x1 jump can reach (`padding="valid"` with a kernel
    larger than 1) are skipped. The jumps are dense (never masked).

    Deviations from the reference, VITA-Group/ToST
    `skip_connection/models/resnet_modified2.py` (`BasicBlock.conv_jump1/2`):
        - Gate and removal: the reference multiplies the jumps by
          `forward(x, alpha=1)`, but nothing ever passes `alpha`, so the
          jumps stay at full strength for all of training and are never
          removed (its training scripts, `skip_connection/skip_lottery_ticket.py`
          and `skip_cifar_prune.py`, import `models/resnet_modified.py`,
          which has no `alpha` at all). The paper describes GSk as gated by
          `alpha` "for the initial stage of sparse training" (Figure 4) and
          compares "ghostliness" with prolonged injection (Figure 6). The
          library follows the paper: `ToSTCallback` anneals `alpha` to 0
          over the ghost phase and `remove_ghost_skips` then deletes the
          jumps, exactly (`alpha == 0`). Folding them into the 3x3 conv
          instead (RepVGG-style) would make every centre tap of the sparse
          kernel non-zero, i.e. break the mask, so they are removed.
        - Where: the reference adds jumps to its ResNet `BasicBlock` only;
          here any Functional/Sequential graph with `Add` residual blocks
          (nested sub-models included) is handled, and a model with no
          residual block raises `ValueError` (use `variant="identity"`).
        - Jump BN: PyTorch defaults (`epsilon=1e-5`, `momentum=0.9` in Keras
          terms), see `GhostJump`.
        - Pruning: the reference's `skip_cifar_prune.py` skips `conv_jump`
          layers when pruning and its ticket scripts derive masks from
          non-zero weights, so the jumps stay dense; here they are plain
          (unwrapped) layers, dense too.

    `variant="identity"` (the library's earlier variant, kept as an
    option): an identity skip, no parameters, around every single-call
    prunable layer whose input and output have the same shape, so only the
    non-downsampling convs. The unit "L followed by its chain of activation /
    dropout layers" gets `unit_out + alpha * L_in` through a `GhostGate`.
    With `placement="before_norm"` (its default) the unit stops before a
    normalization layer, so Conv -> BN -> ReLU becomes
    `ReLU(BN(conv(x) + alpha * x))`; `placement="after_unit"` adds the skip
    after the whole Conv -> BN -> ReLU chain instead; in a CIFAR ResNet that
    stacks with the block's own shortcut and multiplies the identity path
    about 3x per block (see benchmarks/results/tost_ablation.md). It works
    on plain chains too (e.g. a Sequential MLP of equal-width layers).

    Args:
        model: a Functional or Sequential model (sparse or dense).
        alpha: initial gate value.
        placement: `variant="identity"` only: `"before_norm"` (default) or
            `"after_unit"`.
        variant: `"jump"` (default) or `"identity"`.

    Returns:
        A new model with `GhostJump` layers named `<conv>_ghost_jump`
        (`variant="jump"`) or `GhostGate` layers named `<L>_ghost_gate`.

    Raises:
        TypeError: subclassed model or not a model.
        ValueError: unknown `variant` or `placement`, `placement` given with
            `variant="jump"`, no place for a ghost skip (no residual block
            for `"jump"`; no shape-preserving layer for `"identity"`), the
            model already has ghost skips, or a nested sub-model is
            subclassed (named in the message).

    Reference:
        Jaiswal et al., "Training Your Sparse Neural Network Better with Any
        Mask", ICML 2022 (Figure 4).
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: {variant!r}.")
    if variant == "jump" and placement is not None:
        raise ValueError(
            "`placement` applies to variant='identity' only: the jump is added "
            "after the conv's normalization, as in the reference. "
            f"Received: placement={placement!r} with variant='jump'.")
    placement = "before_norm" if placement is None else placement
    if placement not in PLACEMENTS:
        raise ValueError(f"`placement` must be one of {PLACEMENTS}. Received: {placement!r}.")
    functional = _prepare(model, "add_ghost_skips")
    if ghost_layers(functional, GhostGate):
        raise ValueError(f"Model {model.name!r} already has ghost skips (GhostGate layers).")

    def edit_identity(graph):
        units = _ghost_units(graph, placement)
        for start, end in units:
            # The skip reads what `start` reads now, i.e. after the gates
            # already inserted upstream.
            gate = GhostGate(alpha=alpha, name=f"{start}_ghost_gate")
            graph.insert_after(end, gate, extra_inputs=graph.input_refs(start)[:1])
        return len(units)

    if variant == "jump":
        new, changes = edit_nested(functional, "add_ghost_skips",
                                   lambda graph: _jump_edit(graph, alpha))
        if not changes:
            raise ValueError(
                f"Model {model.name!r} has no place for a ghost jump: jumps go on "
                "the convolutions of residual blocks (the branch of an `Add` "
                "merge holding the most prunable layers), and this model has "
                "none that a 1x1 jump can match. Use variant='identity' for "
                "plain chains of shape-preserving layers, or switch ghost "
                "skips off.")
        return new
    new, changes = edit_nested(functional, "add_ghost_skips", edit_identity)
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
    """Removes every `GhostGate` and `GhostJump`, restoring the original graph.

    Each gate is deleted and its readers read the main path again; a jump
    goes with its 1x1 conv and BN (they live inside the `GhostJump`). An
    activation that `add_ghost_skips` split out of a conv is fused back.
    Nothing is folded into the remaining weights (see `add_ghost_skips`).

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
    functional = _prepare(model, "remove_ghost_skips")
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
        jumps = graph.names(GhostJump)
        for name in names:
            graph.remove(name)
        for name in jumps:  # fuse back an activation split out by the jump
            conv = name[: -len("_ghost_jump")]
            act = graph.layer(f"{conv}_act")
            if isinstance(act, keras.layers.Activation) and graph.contains(f"{conv}_act"):
                _refuse(graph, act.name, keras.activations.serialize(act.activation))
        return len(names)

    return edit_nested(functional, "remove_ghost_skips", edit)[0]


def _refuse(graph: Graph, act_name: str, activation) -> bool:
    """Folds a split-out activation back into its layer (undoing a ToST split).

    Only for activations named `<layer>_act` / `<layer>_ghost_swish` that read
    directly from single-consumer `<layer>`, i.e. the ones ToST split out.
    """
    refs = graph.input_refs(act_name)
    if len(refs) != 1:
        return False
    source = refs[0].layer
    if act_name not in (f"{source}_act", f"{source}_ghost_swish"):
        return False
    if graph.consumers(source) != [act_name] or not graph.is_single_call(source):
        return False
    if graph.activation(source) not in (None, "linear"):
        return False
    graph.set_activation(source, activation)
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
    return _edit_or_raise(model, "add_ghost_swish", lambda graph: _swish_edit(graph, beta),
                          missing="ReLU to replace with GhostSwish")


def _swish_edit(graph: Graph, beta: float) -> int:
    changed = 0
    for name in graph.order():
        layer = graph.layer(name)
        if isinstance(layer, keras.layers.ReLU):
            cfg = layer.get_config()
            if cfg.get("max_value") is None and not cfg.get("negative_slope") and not cfg.get("threshold"):
                graph.replace(name, GhostSwish(beta, name=name))
                changed += 1
        elif isinstance(layer, keras.layers.Activation) and _is_relu_activation(
                graph.activation(name)):
            graph.replace(name, GhostSwish(beta, relu_layer="activation", name=name))
            changed += 1
        elif graph.is_single_call(name) and _is_relu_activation(
                graph.activation(name)) and not isinstance(layer, keras.layers.Activation):
            graph.set_activation(name, "linear")
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
    functional = _prepare(model, "swap_to_relu")
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
        return len(names)

    return edit_nested(functional, "swap_to_relu", edit)[0]


def add_lrsi(model: keras.Model, initial_scale: float = 1.0) -> keras.Model:
    """Adds one learned `LRSIScale` after every single-call prunable layer (joint LRSI).

    The `lrsi="joint"` variant of `keras_sparse.tost.ToST`: the scales are
    trained with the weights. The reference searches them before training
    instead (`keras_sparse.tost.search_lrsi_scales`, the default).

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
    return _edit_or_raise(model, "add_lrsi", lambda graph: _lrsi_edit(graph, initial_scale),
                          missing="prunable layer to re-scale")


def _lrsi_edit(graph: Graph, initial_scale: float) -> int:
    changed = 0
    for name in graph.order():
        if not _prunable(graph.layer(name)) or not graph.is_single_call(name):
            continue
        activation = graph.activation(name)
        graph.insert_after(name, LRSIScale(initial_scale, name=f"{name}_lrsi"))
        if activation not in (None, "linear"):
            graph.set_activation(name, "linear")
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
    functional = _prepare(model, "fold_lrsi")
    if not ghost_layers(functional, LRSIScale):
        raise ValueError(f"Model {model.name!r} has no LRSIScale layer to fold.")
    _check_lrsi_placement(functional)
    return edit_nested(functional, "fold_lrsi", _fold_edit)[0]


def _lrsi_source(graph: Graph, name: str):
    refs = graph.input_refs(name)
    return graph.layer(refs[0].layer) if refs else None


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


def _fold_edit(graph: Graph) -> int:
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

    graph.after_build(finish)
    return len(folds)
