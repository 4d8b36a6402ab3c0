"""Channel analysis and physical channel removal of Sequential/Functional models.

A *channel group* (called a root below) is one set of output channels shared
by the layers that produce them and carried, channel by channel, to the
layers that consume them:

- producers: `Dense` (last kernel axis), `Conv1D/2D/3D` (last kernel axis,
  `groups=1`, channels-last). Producers joined by a residual `Add` share one
  group, so a channel goes only together in every branch of the merge.
- carriers, which keep the channel axis: `BatchNormalization` (last axis),
  activations (`Activation`, `ReLU`, `LeakyReLU`, `ELU`), dropout/noise
  layers, `Identity`, pooling (local and global), `Cropping`, `UpSampling`,
  `ZeroPadding`, `Flatten` (which spreads channel `c` over the entries
  `p * C + c` of its output) and `DepthwiseConv1D/2D` (input channel `c`
  becomes outputs `c * multiplier + j`: removing a channel removes its
  depthwise channels).
- consumers: `Dense` and `Conv*` reading the channels on their input axis
  (kernel axis -2).

Any other layer reading a group's channels (`Concatenate`, `Reshape`,
`SeparableConv`, attention, RNNs, nested models, a softmax activation
(layer or `activation=` argument), stateless ops such as
`x + y` or `keras.ops.relu(x)` in a Functional graph, ...), a model output
and a channels-first layer *lock* the group: none of its channels is
removed.

A channel of an unlocked group is removable when every producer's output
slice of the kernel is all zero (masked out) and every consumer can absorb
it exactly. Its value is then a constant per channel (the producers' bias,
then BN's affine map, the activation, ...), computed here by running the
carrier layers on that constant. A consumer absorbs the constant into its
bias (`bias += value * sum(kernel[..., c, :])`, over the kernel's spatial
axes) when that is exact: always for `Dense`, for convolutions with
`padding="valid"` or a 1x1 kernel. With `padding="same"`/`"causal"` and a
larger kernel the zero padding makes the contribution differ at the borders,
so such a channel is removed only when its constant is 0 or the consumer's
input slice is all zero (as Chase leaves it, `keras_sparse.algorithms.Chase`);
otherwise it is kept (an exactness choice: outputs never change). The same
rule applies to a constant passing `ZeroPadding` or a depthwise convolution.
Each group keeps at least one channel, so no layer becomes empty.

Graphs are walked with public Keras API only: `keras.models.clone_model`
with `call_function` records the calls of a Functional model (on throwaway
clones of the layers), a Sequential model is a chain, and the smaller model
is built by calling new layers on new `keras.Input`s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_sparse.layers.sparse_wrapper import SparseWrapper, masked
from keras_sparse.model_utils import check_graph_model

__all__ = ["ChannelGraph", "analyze", "channel_counts", "remove_channels"]

L = keras.layers
_PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_POINTWISE = (
    L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout,
    L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
    L.GaussianDropout, L.AlphaDropout, L.Identity, L.ActivityRegularization,
)
_SPATIAL = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
    L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.Cropping1D, L.Cropping2D,
    L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)
_PADDING = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)


def _inner(layer):
    return layer.layer if isinstance(layer, SparseWrapper) else layer


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def _mixes_channels(inner) -> bool:
    """True when the layer's own activation mixes channels (softmax)."""
    activation = getattr(inner, "activation", None)
    name = getattr(activation, "__name__", activation)
    return name in _MIXING_ACTIVATIONS


def _kind(layer, n_inputs: int) -> str:
    """How a layer treats channels: producer, depthwise, pointwise, spatial, padding, flatten, add, opaque."""
    if not isinstance(layer, keras.layers.Layer):
        return "opaque"
    inner = _inner(layer)
    if n_inputs != 1 and not isinstance(inner, L.Add):
        return "opaque"
    if _mixes_channels(inner) and not isinstance(inner, _PRODUCERS + _DEPTHWISE):
        return "opaque"
    if isinstance(inner, _PRODUCERS) and not isinstance(inner, _DEPTHWISE):
        if isinstance(inner, L.Dense):
            return "producer"
        if getattr(inner, "groups", 1) == 1 and _channels_last(inner):
            return "producer"
        return "opaque"
    if isinstance(inner, _DEPTHWISE):
        return "depthwise" if _channels_last(inner) else "opaque"
    if isinstance(inner, L.BatchNormalization):
        axis = inner.axis if isinstance(inner.axis, int) else None
        return "pointwise" if axis == -1 else "bn_axis"
    if isinstance(inner, _POINTWISE):
        return "pointwise"
    if isinstance(inner, (_SPATIAL + _PADDING)):
        if not _channels_last(inner):
            return "opaque"
        return "padding" if isinstance(inner, _PADDING) else "spatial"
    if isinstance(inner, L.Flatten):
        return "flatten" if _channels_last(inner) else "opaque"
    if isinstance(inner, L.Add):
        return "add"
    return "opaque"


@dataclasses.dataclass
class _Call:
    layer: Any  # the model's own layer (maybe a SparseWrapper)
    kind: str
    args: Any  # call arguments with tensors replaced by integer keys
    kwargs: Any
    inputs: list  # flat input keys
    outputs: list  # flat output keys
    out_struct: Any


@dataclasses.dataclass
class Use:
    """A layer reading a group's channels on its kernel's input axis (-2).

    Attributes:
        call_index: index of the call in `ChannelGraph.calls`.
        layer: the model's layer.
        channel_map: root channel of each of the layer's input channels.
        kind: `"consumer"` (Dense/Conv) or `"depthwise"` (pass-through).
    """

    call_index: int
    layer: Any
    channel_map: np.ndarray
    kind: str


@dataclasses.dataclass
class Group:
    """One channel group: producers, consumers and whether it is locked.

    Attributes:
        size: number of channels.
        producers: the producing layers (output channel `c` is `kernel[..., c]`).
        uses: consumers and depthwise pass-throughs (`Use`).
        locked: why no channel can go (None when it can).
    """

    size: int
    producers: list
    uses: list
    locked: str | None = None


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)
        return min(a, b)


class ChannelGraph:
    """The calls of a model and its channel groups (see the module docstring).

    Built by `analyze`. Attributes: `calls` (topological order), `shapes`
    (tensor key -> shape), `space` (tensor key -> `(group id, channel_map)`
    or None when its channels belong to no group), `groups` (group id ->
    `Group`), `input_keys`, `output_keys` (structure of the model outputs).
    """

    def __init__(self, model, calls, shapes, input_keys, output_keys, input_tensors):
        self.model = model
        self.calls: list[_Call] = calls
        self.shapes: dict[int, tuple] = shapes
        self.input_keys = input_keys
        self.output_keys = output_keys
        self.input_tensors = input_tensors
        self.space: dict[int, tuple[int, np.ndarray] | None] = {}
        self.groups: dict[int, Group] = {}
        self._build_groups()

    # ------------------------------------------------------------ groups
    def _build_groups(self):
        uf = _UnionFind()
        sizes: dict[int, int] = {}
        producers: dict[int, list] = {}
        uses: list[tuple[int, Use]] = []
        locks: list[tuple[int, str]] = []
        space = self.space
        for key in self.input_keys:
            space[key] = None

        def lock(key, why):
            s = space.get(key)
            if s is not None:
                locks.append((s[0], why))

        for i, call in enumerate(self.calls):
            name = call.layer.name
            ins = [space.get(k) for k in call.inputs]
            if call.kind == "producer":
                if ins[0] is not None:
                    uses.append((ins[0][0], Use(i, call.layer, ins[0][1], "consumer")))
                root = uf.new()
                size = int(self.shapes[call.outputs[0]][-1])
                sizes[root] = size
                producers[root] = [call.layer]
                space[call.outputs[0]] = (root, np.arange(size))
                if _mixes_channels(_inner(call.layer)):
                    locks.append((root, f"the softmax activation of {name!r}"))
            elif call.kind == "depthwise":
                if ins[0] is None:
                    space[call.outputs[0]] = None
                    continue
                if _mixes_channels(_inner(call.layer)):
                    lock(call.inputs[0], f"the softmax activation of {name!r}")
                    space[call.outputs[0]] = None
                    continue
                uses.append((ins[0][0], Use(i, call.layer, ins[0][1], "depthwise")))
                mult = int(_inner(call.layer).depth_multiplier)
                space[call.outputs[0]] = (ins[0][0], np.repeat(ins[0][1], mult))
            elif call.kind in ("pointwise", "spatial", "padding"):
                space[call.outputs[0]] = ins[0]
            elif call.kind == "flatten":
                if ins[0] is None:
                    space[call.outputs[0]] = None
                    continue
                positions = int(np.prod(self.shapes[call.inputs[0]][1:-1], dtype=np.int64))
                space[call.outputs[0]] = (ins[0][0], np.tile(ins[0][1], positions))
            elif call.kind == "add":
                first = ins[0]
                ok = all(s is not None for s in ins) and all(
                    len(s[1]) == len(first[1]) for s in ins)
                if ok:
                    identity = all(np.array_equal(s[1], np.arange(len(s[1]))) for s in ins)
                    same = all(uf.find(s[0]) == uf.find(first[0]) and np.array_equal(s[1], first[1])
                               for s in ins)
                    if identity:
                        root = first[0]
                        for s in ins[1:]:
                            root = uf.union(root, s[0])
                        space[call.outputs[0]] = (root, first[1])
                        continue
                    if same:
                        space[call.outputs[0]] = first
                        continue
                for k in call.inputs:
                    lock(k, f"merged by {name!r} with tensors of other channel layouts")
                for k in call.outputs:
                    space[k] = None
            else:  # opaque, bn on another axis
                for k in call.inputs:
                    lock(k, f"read by {name!r} ({type(_inner(call.layer)).__name__})")
                for k in call.outputs:
                    space[k] = None
        for key in keras.tree.flatten(self.output_keys):
            lock(key, "a model output")

        # Resolve to final roots.
        for key, s in list(space.items()):
            if s is not None:
                space[key] = (uf.find(s[0]), s[1])
        groups: dict[int, Group] = {}
        for root, size in sizes.items():
            r = uf.find(root)
            g = groups.setdefault(r, Group(size=size, producers=[], uses=[]))
            g.producers.extend(producers[root])
        for root, use in uses:
            groups[uf.find(root)].uses.append(use)
        for root, why in locks:
            g = groups[uf.find(root)]
            if g.locked is None:
                g.locked = why
        self.groups = groups

    def group_of(self, layer) -> int | None:
        """The group whose channels `layer` produces (None if it produces none)."""
        for gid, g in self.groups.items():
            if any(p is layer for p in g.producers):
                return gid
        return None

    # -------------------------------------------------------- removable
    def removable(self) -> dict[int, np.ndarray]:
        """`{group id: bool array}`: the channels that can be removed exactly."""
        consts = self._constants()
        out = {}
        for gid, g in self.groups.items():
            cand = np.zeros(g.size, bool)
            if g.locked is None and g.size > 1:
                cand[:] = True
                for p in g.producers:
                    k = _kernel(p)
                    cand &= ~np.any(k.reshape(-1, k.shape[-1]) != 0, axis=0)
                for use in g.uses:
                    if use.kind != "consumer" or not cand.any():
                        continue
                    call = self.calls[use.call_index]
                    const, value = consts[call.inputs[0]]
                    k = _kernel(use.layer)
                    zero_in = ~np.any(np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1) != 0, axis=1)
                    exact = _exact_fold(_inner(use.layer))
                    ok = zero_in | (const & (exact | (value == 0)))
                    bad = np.unique(use.channel_map[~ok])
                    cand[bad] = False
                if cand.all():
                    cand[0] = False  # keep one channel: no empty layer
            out[gid] = cand
        return out

    def _constants(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Tensor key -> `(is_constant, value)` per channel, assuming zero kernels stay zero."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def none(key):
            c = int(self.shapes[key][-1]) if self.shapes[key] else 1
            return np.zeros(c, bool), np.zeros(c)

        for key in self.input_keys:
            out[key] = none(key)
        for call in self.calls:
            inner = _inner(call.layer)
            ins = [out.get(k) or none(k) for k in call.inputs]
            if call.kind == "producer":
                k = _kernel(call.layer)
                const = ~np.any(k.reshape(-1, k.shape[-1]) != 0, axis=0)
                value = _activate(inner, _bias(inner, k.shape[-1]))
                out[call.outputs[0]] = (const, value)
            elif call.kind == "depthwise":
                k = _kernel(call.layer)  # (*spatial, in, mult)
                c_in, mult = k.shape[-2], k.shape[-1]
                flat = np.moveaxis(k, (-2, -1), (0, 1)).reshape(c_in, mult, -1)
                zero = ~np.any(flat != 0, axis=-1)
                total = flat.sum(axis=-1)
                cin, vin = ins[0]
                uniform = cin[:, None] & (_exact_fold(inner) | (vin == 0)[:, None])
                const = zero | uniform
                bias = _bias(inner, c_in * mult).reshape(c_in, mult)
                value = np.where(zero, 0.0, vin[:, None] * total) + bias
                out[call.outputs[0]] = (const.reshape(-1), _activate(inner, value.reshape(-1)))
            elif call.kind == "pointwise":
                const, value = ins[0]
                rank = len(self.shapes[call.inputs[0]])
                x = value.astype(np.float32).reshape((1,) * (rank - 1) + (-1,))
                y = keras.ops.convert_to_numpy(inner(x, training=False)).reshape(-1)
                out[call.outputs[0]] = (const, y.astype(np.float64))
            elif call.kind == "spatial":
                out[call.outputs[0]] = ins[0]
            elif call.kind == "padding":
                const, value = ins[0]
                out[call.outputs[0]] = (const & (value == 0), value)
            elif call.kind == "flatten":
                positions = int(np.prod(self.shapes[call.inputs[0]][1:-1], dtype=np.int64))
                out[call.outputs[0]] = (np.tile(ins[0][0], positions), np.tile(ins[0][1], positions))
            elif call.kind == "add" and len({len(c) for c, _ in ins}) == 1:
                out[call.outputs[0]] = (np.logical_and.reduce([c for c, _ in ins]),
                                        np.sum([v for _, v in ins], axis=0))
            else:
                for k in call.outputs:
                    out[k] = none(k)
        return out


def _kernel(layer) -> np.ndarray:
    """The layer's kernel as NumPy, masked when the layer is a `SparseWrapper`."""
    if isinstance(layer, SparseWrapper):
        for name, weight, mask in layer.masked_weights:
            if name == "kernel":
                return keras.ops.convert_to_numpy(masked(weight, mask))  # NaN-safe, as `strip`
    return keras.ops.convert_to_numpy(_inner(layer).kernel)


def _bias(inner, n: int) -> np.ndarray:
    if getattr(inner, "use_bias", False) and getattr(inner, "bias", None) is not None:
        return keras.ops.convert_to_numpy(inner.bias).astype(np.float64).reshape(-1)
    return np.zeros(n)


def _activate(inner, value: np.ndarray) -> np.ndarray:
    """The layer's own (element-wise) activation applied to per-channel constants."""
    activation = getattr(inner, "activation", None)
    if activation is None:
        return value
    y = activation(keras.ops.convert_to_tensor(value.astype(np.float32)[None]))
    return keras.ops.convert_to_numpy(y).reshape(-1).astype(np.float64)


def _exact_fold(inner) -> bool:
    """Whether a constant input channel adds the same amount at every output position."""
    if isinstance(inner, L.Dense):
        return True
    spatial = tuple(inner.kernel.shape[:-2])
    return inner.padding == "valid" or all(int(d) == 1 for d in spatial)


# --------------------------------------------------------------- tracing
def _fresh(layer):
    """A throwaway unbuilt clone of `layer` (its inner layer for a SparseWrapper)."""
    inner = _inner(layer)
    return inner.__class__.from_config(inner.get_config())


def analyze(model: keras.Model) -> ChannelGraph:
    """Traces a Sequential or Functional model and finds its channel groups.

    Args:
        model: a built Sequential or Functional model (plain or sparse).

    Returns:
        A `ChannelGraph`.

    Raises:
        TypeError: not a Sequential/Functional model.
        ValueError: an unbuilt model, or a layer called more than once
            (shared layers are not supported).
    """
    check_graph_model(model, "analyze")
    keys: dict[int, int] = {}
    keep: list = []  # keeps traced tensors alive so ids stay unique
    shapes: dict[int, tuple] = {}

    def key_of(t):
        if id(t) not in keys:
            keys[id(t)] = len(keys)
            keep.append(t)
            shapes[keys[id(t)]] = tuple(t.shape)
        return keys[id(t)]

    def as_keys(struct):
        return keras.tree.map_structure(
            lambda t: ("__tensor__", key_of(t)) if isinstance(t, keras.KerasTensor) else t, struct)

    calls: list[_Call] = []
    seen: set[int] = set()

    def record(layer, args, kwargs, outputs):
        if id(layer) in seen:
            raise ValueError(
                f"Layer {layer.name!r} is called more than once (a shared layer); "
                "channel analysis needs each layer called once."
            )
        seen.add(id(layer))
        a, kw = as_keys(args), as_keys(kwargs)
        flat_in = [k for _, k in _tensor_refs((a, kw))]
        out_struct = as_keys(outputs)
        flat_out = [k for _, k in _tensor_refs(out_struct)]
        calls.append(_Call(layer, _kind(layer, len(flat_in)), a, kw, flat_in, flat_out, out_struct))

    if isinstance(model, keras.Sequential):
        inputs = list(model.inputs)
        x = keras.Input(batch_shape=inputs[0].shape, dtype=inputs[0].dtype)
        input_tensors = [x]
        input_keys = [key_of(x)]
        for layer in model.layers:
            y = _fresh(layer)(x)
            record(layer, (x,), {}, y)
            x = y
        output_keys = [key_of(x)]
    else:
        originals: dict[int, Any] = {}

        def clone_function(layer):
            if not isinstance(layer, keras.layers.Layer):  # a stateless op (`x + y`)
                return layer
            new = _fresh(layer)
            originals[id(new)] = layer
            return new

        def call_function(layer, *args, **kwargs):
            outputs = layer(*args, **kwargs)
            record(originals.get(id(layer), layer), args, kwargs, outputs)
            return outputs

        clone = keras.models.clone_model(model, clone_function=clone_function,
                                         call_function=call_function)
        input_tensors = list(clone.inputs)
        input_keys = [key_of(t) for t in input_tensors]
        output_keys = [k for _, k in _tensor_refs(as_keys(clone.outputs))]
    return ChannelGraph(model, calls, shapes, input_keys, output_keys, input_tensors)


def _tensor_refs(struct) -> list:
    """The `("__tensor__", key)` references in a call structure, in order."""
    out = []

    def walk(s):
        if isinstance(s, tuple) and len(s) == 2 and s[0] == "__tensor__":
            out.append(s)
        elif isinstance(s, (list, tuple)):
            for v in s:
                walk(v)
        elif isinstance(s, dict):
            for v in s.values():
                walk(v)

    walk(struct)
    return out


def _substitute(struct, tensors: dict):
    """`struct` with every `("__tensor__", key)` replaced by `tensors[key]`."""
    if isinstance(struct, tuple) and len(struct) == 2 and struct[0] == "__tensor__":
        return tensors[struct[1]]
    if isinstance(struct, list):
        return [_substitute(v, tensors) for v in struct]
    if isinstance(struct, tuple):
        return tuple(_substitute(v, tensors) for v in struct)
    if isinstance(struct, dict):
        return {k: _substitute(v, tensors) for k, v in struct.items()}
    return struct


def channel_counts(model: keras.Model) -> dict[str, tuple[int, int]]:
    """Output channels of each producer and depthwise layer, before and after removal.

    "After" is what `keras_sparse.strip(model, remove_channels=True)` keeps.

    Args:
        model: a built Sequential or Functional model (plain or sparse).

    Returns:
        `{layer name: (channels before, channels after)}`.

    Raises:
        TypeError, ValueError: as `analyze`.
    """
    graph = analyze(model)
    removable = graph.removable()
    out = {}
    for call in graph.calls:
        if call.kind not in ("producer", "depthwise"):
            continue
        s = graph.space.get(call.outputs[0])
        before = int(graph.shapes[call.outputs[0]][-1])
        after = before if s is None else int(np.count_nonzero(~removable[s[0]][s[1]]))
        out[call.layer.name] = (before, after)
    return out


def remove_channels(model: keras.Model) -> keras.Model:
    """A physically smaller plain model with the removable channels taken out.

    See the module docstring for which channels go and how their constant
    output is folded into the next layers' biases; the new model's outputs
    equal `model`'s up to float rounding. Usually called through
    `keras_sparse.strip(model, remove_channels=True)`.

    Args:
        model: a built plain (stripped) Sequential or Functional model.

    Returns:
        A new Functional model with the same layer names (the input's class
        when nothing is removable: then a copy of `model`).

    Raises:
        TypeError: not a Sequential/Functional model, or a model that still
            holds `SparseWrapper` layers (strip it first).
        ValueError: an unbuilt model or a shared layer.
    """
    check_graph_model(model, "remove_channels")
    graph = analyze(model)
    for call in graph.calls:
        if isinstance(call.layer, SparseWrapper):
            raise TypeError(
                f"`remove_channels` expects a plain model, but layer {call.layer.name!r} "
                "is a SparseWrapper. Use `keras_sparse.strip(model, remove_channels=True)`."
            )
    removable = graph.removable()
    if not any(r.any() for r in removable.values()):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    consts = graph._constants()

    def kept(key) -> np.ndarray:
        n = int(graph.shapes[key][-1])
        s = graph.space.get(key)
        if s is None:
            return np.arange(n)
        return np.flatnonzero(~removable[s[0]][s[1]])

    tensors: dict[int, Any] = {}
    new_inputs = []
    names = [getattr(t, "name", None) for t in model.inputs]
    for key, t, name in zip(graph.input_keys, graph.input_tensors, names):
        x = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=name)
        tensors[key] = x
        new_inputs.append(x)
    assignments = []
    for call in graph.calls:
        layer = call.layer
        if not isinstance(layer, keras.layers.Layer):  # a stateless op: call it again
            outputs = layer(*_substitute(call.args, tensors), **_substitute(call.kwargs, tensors))
            for (_, key), t in zip(_tensor_refs(call.out_struct), keras.tree.flatten(outputs)):
                tensors[key] = t
            continue
        config = layer.get_config()
        weights = [keras.ops.convert_to_numpy(w) for w in layer.weights]
        if call.kind == "producer":
            k_in, k_out = kept(call.inputs[0]), kept(call.outputs[0])
            kernel = weights[0]
            bias = _bias(layer, kernel.shape[-1])
            removed_in = np.setdiff1d(np.arange(kernel.shape[-2]), k_in)
            if removed_in.size:
                const, value = consts[call.inputs[0]]
                # A removed channel is a constant (`removable` checked that its
                # fold is exact) or meets an all-zero slice (contributes 0).
                slab = np.moveaxis(kernel, -2, 0)[removed_in].reshape(len(removed_in), -1, kernel.shape[-1])
                v = np.where(const[removed_in], value[removed_in], 0.0)
                bias = bias + np.einsum("r,rso->o", v, slab.astype(np.float64))
            kernel = np.take(np.take(kernel, k_in, axis=-2), k_out, axis=-1)
            bias = bias[k_out]
            config["units" if "units" in config else "filters"] = int(len(k_out))
            needs_bias = bool(np.any(bias != 0))
            if not config.get("use_bias", True) and needs_bias:
                config["use_bias"] = True
            new_weights = [kernel, bias.astype(kernel.dtype)] if config.get("use_bias", True) else [kernel]
        elif call.kind == "depthwise":
            k_in = kept(call.inputs[0])
            kernel = np.take(weights[0], k_in, axis=-2)
            new_weights = [kernel]
            if config.get("use_bias", True):
                mult = weights[0].shape[-1]
                new_weights.append(weights[1].reshape(-1, mult)[k_in].reshape(-1))
        elif call.kind == "pointwise" and weights:
            k_in = kept(call.inputs[0])
            new_weights = [w[k_in] if w.ndim == 1 and w.shape[0] == graph.shapes[call.inputs[0]][-1] else w
                           for w in weights]
        else:
            new_weights = weights
        new = layer.__class__.from_config(config)
        outputs = new(*_substitute(call.args, tensors), **_substitute(call.kwargs, tensors))
        for (_, key), t in zip(_tensor_refs(call.out_struct), keras.tree.flatten(outputs)):
            tensors[key] = t
        assignments.append((new, new_weights))
    for new, new_weights in assignments:
        if new_weights:
            new.set_weights(new_weights)
    outputs = [tensors[k] for k in graph.output_keys]
    return keras.Model(new_inputs[0] if len(new_inputs) == 1 else new_inputs,
                       outputs[0] if len(outputs) == 1 else outputs, name=model.name)
