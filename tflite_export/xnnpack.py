"""Would XNNPACK run this model on its sparse (NCHW) path? A layout check.

XNNPACK, the default CPU delegate of TensorFlow Lite / LiteRT, has a sparse
inference mode for MobileNet-style CNNs (Elsen et al., "Fast Sparse
ConvNets"). It is switched on automatically, with no option to set, when
all of the following hold; otherwise the same file runs dense.

1. The delegated part of the `.tflite` file reads at least one weight
   stored sparse (a `DENSIFY` output). `export_inference` writes sparse
   kernels that way (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
2. The CPU takes the NCHW path: every ARM / ARM64 build; on x86 only
   processors without AVX (XNNPACK's sparse microkernels target SSE there,
   and with AVX dense inference is expected to be faster). It therefore
   never runs on this project's x86 machines (they have AVX), and this
   module claims no speed.
3. A subgraph of float32/float16 operators that:
   - starts with a 3x3 stride-2 `CONV_2D` with padding 1 on each side, no
     dilation and 3 input channels (the stem),
   - ends with a `MEAN` over the spatial axes (`GlobalAveragePooling2D`),
   - contains only 1x1 `CONV_2D` (stride 1, no padding), 3x3 / 5x5
     `DEPTHWISE_CONV_2D` (stride 1 or 2, depth multiplier 1, padding 1 / 2
     on each side), 4-D `ADD` / `MUL`, bilinear `RESIZE_BILINEAR` and
     elementwise activations, and every tensor inside it is read only by
     operators inside it;
   - has more than 2/3 zeros in the filters of its 1x1 convolutions,
     pooled over all of them (`zeros * 3 > params * 2`).

`check_xnnpack_sparse(model)` checks condition 3 on the Keras model, layer
by layer, and says which layer breaks it and why. The TFLite operators are
those the converter emits for each Keras layer: `ZeroPadding2D` becomes a
`PAD` that XNNPACK folds into the following convolution; a
`BatchNormalization` right after a convolution is folded into it; a
`padding="same"` convolution with stride 1 gets explicit symmetric
padding, but with stride 2 it stays TensorFlow SAME padding (0 before and
1 after on even sizes), which XNNPACK's sparse path rejects: write stride-2
layers as `ZeroPadding2D(1)` + `padding="valid"` (as
`tfmot.sparsity.keras.PruneForLatencyOnXNNPack` requires too).

Decisions where the sources differ or are silent (conservative: a "yes"
should hold; docs/xnnpack.md has the user-facing version):
- `GlobalAveragePooling2D(keepdims=False)` is accepted: the current
  delegate maps `MEAN` with `keep_dims=false` to XNNPACK's global average
  pooling (older delegates rejected it, hence TF-MOT's `keepdims=True`).
- A pooling whose output feeds other subgraph layers (squeeze-and-excite,
  a 1x1 convolution classifier) stays inside, as in XNNPACK; TF-MOT stops
  at the first pooling. Past a pooling (1x1 maps, where NCHW and NHWC are
  the same bytes) the subgraph may end at any layer.
- A `BatchNormalization` that is not right after a linear convolution is
  rejected: the converter leaves it as `MUL`/`ADD` with 1-D constants
  (checked in tests/tflite_export/test_xnnpack.py), and XNNPACK's sparse
  path needs 4-D inputs for both.
- Activations: linear, ReLU, ReLU6, sigmoid, ELU (alpha 1) and leaky ReLU,
  the ones with a TFLite operator in XNNPACK's list; `silu`/`hard_silu`
  and others are rejected.
- The whole model is one subgraph: any blocking layer fails the verdict
  (XNNPACK decides per connected cluster).
- Nested models are not descended into; a nested model inside the
  subgraph blocks it.

Reference:
    - XNNPACK delegate README, "Sparse Inference": google-ai-edge/LiteRT
      `tflite/delegates/xnnpack/README.md` (also tensorflow/tensorflow
      `tensorflow/lite/delegates/xnnpack/README.md`).
    - google/XNNPACK `src/subgraph.c`: `xnn_check_nchw_compatibility`,
      `xnn_subgraph_rewrite_for_nchw` (the 2/3 rule), the constant-pad
      fusion in `xnn_subgraph_fusion`; `src/xnnpack/hardware-config.h`:
      `xnn_is_chw_compatible_config` (no NCHW path on x86 with AVX).
    - tensorflow/model-optimization
      `tensorflow_model_optimization/python/core/sparsity/keras/pruning_policy.py`:
      `PruneForLatencyOnXNNPack` (the Keras-level check this module
      follows, re-derived for Keras 3).
    - Elsen, Dukhan, Gale, Simonyan, "Fast Sparse ConvNets", CVPR 2020.
      https://arxiv.org/abs/1911.09723
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import keras
import numpy as np

from keras_sparse.tracing import trace
from tflite_export._validate import check_model, is_sparse_wrapper

__all__ = ["XnnpackLayerCheck", "XnnpackSparseReport", "check_xnnpack_sparse",
           "MIN_ZERO_FRACTION", "SPARSE_PRECISIONS"]

# XNNPACK enables sparse inference when zeros * 3 > params * 2 (strictly).
MIN_ZERO_FRACTION = 2.0 / 3.0
# Export precisions whose files can take the sparse path (float operators).
SPARSE_PRECISIONS = ("float32", "float16")
_ALL_PRECISIONS = ("float32", "float16", "int8_dynamic", "int8_full")

_ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "elu", "leaky_relu")
_PRUNABLE_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel",
                   "embeddings")

@dataclasses.dataclass(frozen=True)
class XnnpackLayerCheck:
    """One layer call of the model, seen from XNNPACK's sparse path.

    Attributes:
        name: the layer's name (a `SparseWrapper` has its inner layer's).
        class_name: the class of the layer that runs (inside a wrapper).
        role: `"stem"` (the 3x3 stride-2 entry convolution),
            `"sparse_conv"` (a 1x1 convolution whose zeros count),
            `"inside"` (another operator of the sparse subgraph),
            `"head"` (the `GlobalAveragePooling2D` that ends it),
            `"outside"` (before the stem or after the head: runs dense) or
            `"blocking"` (prevents the sparse path; see `reason`).
        ok: False for a blocking layer, and for a 1x1 convolution whose own
            zero fraction is at most 2/3 when the pooled one is too.
        reason: why, in words (empty for plain cases).
        prunable_params: entries of the layer's prunable kernels.
        conv1x1_params: entries of its 1x1 kernel (`kernel` of a 1x1
            Conv2D, `pointwise_kernel` of a SeparableConv2D), else 0.
        conv1x1_zeros: exact zeros among them (weight times mask for a
            `SparseWrapper`: what the exported file stores).
    """

    name: str
    class_name: str
    role: str
    ok: bool
    reason: str
    prunable_params: int
    conv1x1_params: int = 0
    conv1x1_zeros: int = 0

    @property
    def conv1x1_sparsity(self) -> float | None:
        if not self.conv1x1_params:
            return None
        return self.conv1x1_zeros / self.conv1x1_params


@dataclasses.dataclass(frozen=True)
class XnnpackSparseReport:
    """The verdict of `check_xnnpack_sparse`, per layer and for the model.

    Attributes:
        qualifies: True when the model's layout and sparsity meet XNNPACK's
            sparse-inference conditions, so that a sparse export of it runs
            sparse on an ARM build of XNNPACK. Not a speed claim.
        reasons: model-level reasons when it does not (each failing layer
            is also in `layers` with `ok=False`).
        precision: the export precision the verdict is for.
        layers: one `XnnpackLayerCheck` per layer call, in graph order.
        conv1x1_params: 1x1 filter entries inside the subgraph.
        conv1x1_zeros: zeros among them.
        prunable_params: prunable kernel entries of the whole model.
        eligible_params: prunable entries in the subgraph's 1x1
            convolutions (the weights XNNPACK's sparse kernels read, if
            `qualifies`).
    """

    qualifies: bool
    reasons: tuple[str, ...]
    precision: str
    layers: tuple[XnnpackLayerCheck, ...]
    conv1x1_params: int
    conv1x1_zeros: int
    prunable_params: int
    eligible_params: int

    @property
    def conv1x1_sparsity(self) -> float | None:
        """Pooled zero fraction of the subgraph's 1x1 filters."""
        if not self.conv1x1_params:
            return None
        return self.conv1x1_zeros / self.conv1x1_params

    @property
    def eligible_share(self) -> float:
        """Share of the model's prunable entries in eligible layers."""
        if not self.prunable_params:
            return 0.0
        return self.eligible_params / self.prunable_params

    @property
    def failing_layers(self) -> tuple[XnnpackLayerCheck, ...]:
        return tuple(layer for layer in self.layers if not layer.ok)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conv1x1_sparsity"] = self.conv1x1_sparsity
        d["eligible_share"] = self.eligible_share
        return d

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self) -> str:
        pooled = self.conv1x1_sparsity
        lines = [
            f"XNNPACK sparse inference: "
            f"{'qualifies' if self.qualifies else 'does not qualify'} "
            f"(precision {self.precision})",
            "",
            f"- 1x1 filters in the subgraph: {self.conv1x1_params} entries, "
            + (f"{pooled:.1%} zeros (needs > 2/3)" if pooled is not None
               else "none"),
            f"- prunable entries in eligible layers: {self.eligible_params} "
            f"of {self.prunable_params} ({self.eligible_share:.1%})",
        ]
        lines += [f"- {r}" for r in self.reasons]
        lines += ["", "| layer | class | role | ok | reason |",
                  "|---|---|---|---|---|"]
        for layer in self.layers:
            lines.append(f"| {layer.name} | {layer.class_name} | {layer.role} "
                         f"| {'yes' if layer.ok else 'no'} | {layer.reason} |")
        return "\n".join(lines)


# --------------------------------------------------------------------------
# The graph: one record per layer call, read with `keras_sparse.tracing.trace`
# (a replay through the public `keras.models.clone_model(clone_function,
# call_function)` that changes nothing in the model and creates no weights).


@dataclasses.dataclass
class _Call:
    op: Any                    # the model's operation (maybe a SparseWrapper)
    layer: Any                 # the operation that runs (wrapper's .layer)
    inputs: list[int]
    outputs: list[int]


@dataclasses.dataclass
class _Graph:
    calls: list[_Call]
    model_inputs: set[int]
    model_outputs: set[int]
    producer: dict[int, int]
    consumers: dict[int, list[int]]
    shapes: dict[int, tuple]


def _read_graph(model) -> _Graph:
    traced = trace(model)
    calls = [_Call(c.operation, c.operation.layer if is_sparse_wrapper(c.operation)
                   else c.operation, c.inputs, c.outputs) for c in traced.calls]
    return _Graph(calls, set(traced.inputs), set(keras.tree.flatten(traced.outputs)),
                  traced.producers(), traced.consumers(), traced.shapes)


# --------------------------------------------------------------------------
# Weights.


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _prunable(op) -> dict[str, np.ndarray]:
    """Prunable kernels of an operation as stored on export (masked)."""
    if is_sparse_wrapper(op):
        return {name: _np(w) * _np(m) for name, w, m in op.masked_weights}
    out = {}
    for name in _PRUNABLE_NAMES:
        w = getattr(op, name, None)
        if isinstance(w, keras.Variable):
            out[name] = _np(w)
    return out


# --------------------------------------------------------------------------
# Layer rules.


def _cls(layer) -> str:
    return type(layer).__name__


def _is(layer, *names) -> bool:
    return isinstance(layer, keras.layers.Layer) and any(
        c.__name__ in names and c.__module__.startswith("keras")
        for c in type(layer).__mro__)


def _act_problem(fn, what: str) -> str | None:
    name = getattr(fn, "__name__", repr(fn))
    if name in _ACTIVATIONS:
        return None
    return (f"{what} activation '{name}' has no operator on XNNPACK's sparse "
            f"path (accepted: {', '.join(_ACTIVATIONS)})")


def _conv_kind(layer) -> str | None:
    if _is(layer, "SeparableConv2D"):
        return "separable"
    if _is(layer, "DepthwiseConv2D"):
        return "depthwise"
    if _is(layer, "Conv2D") and not _is(layer, "Conv2DTranspose"):
        return "conv"
    return None


def _own_padding(layer):
    """The convolution's own padding as XNNPACK defines it: explicit
    ((top, bottom), (left, right)), or None for TensorFlow SAME padding at
    stride > 1, which XNNPACK keeps implicit (a flag)."""
    kernel = tuple(layer.kernel_size)
    if layer.padding == "valid":
        return ((0, 0), (0, 0))
    if tuple(layer.strides) == (1, 1):  # XNNPACK makes stride-1 SAME explicit
        return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)
    return None


def _fused_pad(graph: _Graph, i: int):
    """The ZeroPadding2D call XNNPACK folds into conv call `i`, or None
    (XNNPACK folds a zero PAD read only by a convolution without implicit
    SAME padding)."""
    c = graph.calls[i]
    if _own_padding(c.layer) is None or not c.inputs:
        return None
    p = graph.producer.get(c.inputs[0])
    if p is None or not _is(graph.calls[p].layer, "ZeroPadding2D"):
        return None
    if graph.consumers.get(graph.calls[p].outputs[0], []) != [i]:
        return None
    return p


def _padding(graph: _Graph, i: int):
    """Padding ((top, bottom), (left, right)) of conv call `i` after
    XNNPACK's folding, or None for implicit TensorFlow SAME padding."""
    own = _own_padding(graph.calls[i].layer)
    p = _fused_pad(graph, i)
    if own is None or p is None:
        return own
    pad = graph.calls[p].layer.padding
    return tuple((int(a) + o[0], int(b) + o[1])
                 for (a, b), o in zip(pad, own))


_SAME_STRIDE2 = ("padding='same' with stride 2 stays TensorFlow SAME padding "
                 "(0 before, 1 after on even sizes), which XNNPACK's sparse "
                 "path rejects: use ZeroPadding2D({p}) then padding='valid'")


def _common_conv_problem(layer) -> str | None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "data_format='channels_first' (XNNPACK needs NHWC)"
    if tuple(layer.dilation_rate) != (1, 1):
        return f"dilation_rate {tuple(layer.dilation_rate)} (needs 1)"
    if getattr(layer, "groups", 1) != 1:
        return f"groups={layer.groups} (needs 1)"
    return None


def _stem_problem(graph: _Graph, i: int) -> str | None:
    """None if conv call `i` is a valid stem, else why not."""
    layer = graph.calls[i].layer
    if _conv_kind(layer) != "conv":
        return (f"{_cls(layer)} cannot start the sparse subgraph: XNNPACK "
                "needs a 3x3 stride-2 Conv2D on 3 input channels first")
    problem = _common_conv_problem(layer)
    if problem:
        return f"not a stem: {problem}"
    kernel = tuple(layer.kernel_size)
    strides = tuple(layer.strides)
    channels = graph.calls[i].layer.kernel.shape[2]
    if kernel != (3, 3):
        return f"not a stem: kernel {kernel[0]}x{kernel[1]} (needs 3x3 stride 2)"
    if strides != (2, 2):
        return f"not a stem: strides {strides} (needs 2)"
    if channels != 3:
        return f"not a stem: {channels} input channels (needs 3)"
    pad = _padding(graph, i)
    if pad is None:
        return "not a stem: " + _SAME_STRIDE2.format(p=1)
    if pad != ((1, 1), (1, 1)):
        return f"not a stem: padding {pad} (needs 1 on each side)"
    return _act_problem(layer.activation, "stem")


def _conv_problem(graph: _Graph, i: int) -> str | None:
    """Why conv/depthwise/separable call `i` cannot be inside, or None."""
    layer = graph.calls[i].layer
    kind = _conv_kind(layer)
    problem = _common_conv_problem(layer)
    if problem:
        return problem
    kernel = tuple(layer.kernel_size)
    strides = tuple(layer.strides)
    if kind == "conv":
        if kernel != (1, 1):
            return (f"Conv2D {kernel[0]}x{kernel[1]} inside the sparse "
                    "subgraph: only 1x1 Conv2D (stride 1, no padding) and "
                    "the 3x3 stride-2 stem on 3 channels may be there")
        if strides != (1, 1):
            return f"1x1 Conv2D with strides {strides} (needs 1)"
        pad = _padding(graph, i)
        if pad != ((0, 0), (0, 0)):
            return f"1x1 Conv2D with padding {pad} (needs none)"
        return _act_problem(layer.activation, "Conv2D")
    # depthwise part of DepthwiseConv2D / SeparableConv2D
    if layer.depth_multiplier != 1:
        return f"depth_multiplier={layer.depth_multiplier} (needs 1)"
    if kernel not in ((3, 3), (5, 5)):
        return f"depthwise kernel {kernel} (needs 3x3 or 5x5)"
    if strides not in ((1, 1), (2, 2)):
        return f"depthwise strides {strides} (needs 1 or 2)"
    half = (kernel[0] - 1) // 2
    pad = _padding(graph, i)
    if pad is None:
        return _SAME_STRIDE2.format(p=half)
    if pad != ((half, half), (half, half)):
        return f"depthwise padding {pad} (needs {half} on each side)"
    return _act_problem(layer.activation, _cls(layer))


def _bn_problem(graph: _Graph, i: int) -> str | None:
    layer = graph.calls[i].layer
    axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
    if axis not in (-1, 3, (-1,), (3,)):
        return f"BatchNormalization over axis {layer.axis} (needs the channels)"
    p = graph.producer.get(graph.calls[i].inputs[0])
    prev = graph.calls[p].layer if p is not None else None
    if (prev is None or _conv_kind(prev) is None
            or getattr(prev.activation, "__name__", "") != "linear"
            or graph.consumers.get(graph.calls[p].outputs[0], []) != [i]):
        return ("BatchNormalization not right after a linear convolution: "
                "the converter cannot fold it, and the MUL/ADD it becomes "
                "(1-D constants) are not on XNNPACK's sparse path")
    return None


def _inside_problem(graph: _Graph, i: int) -> str | None:
    """Why call `i` cannot be an operator of the sparse subgraph, or None.
    (GlobalAveragePooling2D is handled by the walk.)"""
    c = graph.calls[i]
    layer = c.layer
    if isinstance(layer, keras.Model):
        return ("nested model: this check does not look inside nested "
                "models; build the network as one functional model")
    if not isinstance(layer, keras.layers.Layer):  # a keras.ops operation
        if _cls(layer) in ("Add", "Multiply"):
            return _binary_problem(graph, i)
        return f"keras.ops operation '{_cls(layer)}' is not on the sparse path"
    if _conv_kind(layer):
        return _conv_problem(graph, i)
    if _is(layer, "ZeroPadding2D"):
        consumer = graph.consumers.get(c.outputs[0], [])
        if len(consumer) == 1 and _fused_pad(graph, consumer[0]) == i:
            return None
        return ("ZeroPadding2D not read by exactly one convolution with "
                "explicit padding, so XNNPACK cannot fold it (PAD is not on "
                "the sparse path)")
    if _is(layer, "BatchNormalization"):
        return _bn_problem(graph, i)
    if _is(layer, "Add", "Multiply"):
        return _binary_problem(graph, i)
    if _is(layer, "ReLU"):
        if (layer.negative_slope or layer.threshold
                or layer.max_value not in (None, 6.0)):
            return ("ReLU with negative_slope/threshold or max_value other "
                    "than 6 has no single XNNPACK operator")
        return None
    if _is(layer, "LeakyReLU"):
        return None
    if _is(layer, "ELU"):
        return None if float(layer.alpha) == 1.0 else (
            f"ELU alpha={layer.alpha} (TFLite's ELU has alpha 1)")
    if _is(layer, "Activation"):
        return _act_problem(layer.activation, "Activation")
    if _is(layer, "Dropout", "Identity", "SpatialDropout2D"):
        return None  # removed by the converter
    if _is(layer, "UpSampling2D"):
        return None if layer.interpolation == "bilinear" else (
            f"UpSampling2D interpolation '{layer.interpolation}' (only "
            "bilinear is on the sparse path)")
    return (f"{_cls(layer)} is not on XNNPACK's sparse path (its operator "
            "is not in the NCHW-compatible list)")


def _binary_problem(graph: _Graph, i: int) -> str | None:
    c = graph.calls[i]
    if len(c.inputs) != 2:
        return f"{_cls(c.layer)} of {len(c.inputs)} inputs (needs 2)"
    ranks = [len(graph.shapes[t]) for t in c.inputs]
    if ranks != [4, 4]:
        return f"{_cls(c.layer)} of inputs of rank {ranks} (needs 4-D)"
    return None


# --------------------------------------------------------------------------
# The walk.


def _check_precision(precision) -> str:
    if not isinstance(precision, str):
        raise TypeError(f"`precision` must be a str, one of {_ALL_PRECISIONS}; "
                        f"received {type(precision).__name__}.")
    if precision not in _ALL_PRECISIONS:
        raise ValueError(f"`precision` must be one of {_ALL_PRECISIONS}; "
                         f"received {precision!r}.")
    return precision


def _check_input(model) -> None:
    if isinstance(model, keras.Model) and not (
            isinstance(model, keras.Sequential)
            or isinstance(model, keras.Function)):
        raise TypeError(
            "check_xnnpack_sparse reads the layer graph of Sequential and "
            f"functional models; received subclassed model {model.name!r} "
            f"of type {type(model).__name__}. Build the network with the "
            "functional API.")
    check_model(model, "check_xnnpack_sparse", allow_sparse_wrapper=True)
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; build it on "
                         "keras.Input(...) first.")


def check_xnnpack_sparse(model, *, precision: str = "float32",
                         strict: bool = False) -> XnnpackSparseReport:
    """Checks whether XNNPACK would run the model's sparse export sparse.

    Walks the model's layer graph from its 3x3 stride-2 stem to its
    `GlobalAveragePooling2D` head and checks every layer in between against
    the conditions of XNNPACK's sparse (NCHW) inference path, then the
    pooled sparsity of the 1x1 convolutions (more than 2/3 zeros). The
    check is static: it neither converts nor runs the model, and it cannot
    tell speed (XNNPACK takes the sparse path only on ARM builds and on x86
    without AVX, never on this project's machines). See the module
    docstring for the rules and where each comes from.

    Args:
        model: a built Sequential or functional Keras 3 model, as it comes
            from `keras_sparse.sparsify` (masks read from its
            `SparseWrapper` layers) or after `keras_sparse.strip` (zeros
            read from the kernels).
        precision: the `export_inference` precision the file will have:
            `"float32"` or `"float16"` can qualify; `"int8_dynamic"` and
            `"int8_full"` never do (XNNPACK's sparse path is float only).
        strict: raise `ValueError` listing the failing layers instead of
            returning a report that does not qualify (like
            `tfmot.sparsity.keras.PruneForLatencyOnXNNPack`).

    Returns:
        An `XnnpackSparseReport`: `qualifies`, model-level `reasons`, one
        `XnnpackLayerCheck` per layer call (role, ok, reason), the pooled
        1x1 sparsity and the share of prunable entries in eligible layers.

    Raises:
        TypeError: `model` is not a Keras 3 model, is a subclassed model,
            `precision` is not a str or `strict` is not a bool.
        ValueError: the model is not built or has no inputs, `precision`
            is unknown, or `strict=True` and the model does not qualify.

    Example:

    ```python
    report = tflite_export.check_xnnpack_sparse(model)
    print(report.to_markdown())
    for layer in report.failing_layers:
        print(layer.name, layer.reason)
    ```

    Reference:
        Elsen et al., "Fast Sparse ConvNets", CVPR 2020
        (https://arxiv.org/abs/1911.09723); XNNPACK delegate README,
        "Sparse Inference" (google-ai-edge/LiteRT
        `tflite/delegates/xnnpack/README.md`); google/XNNPACK
        `src/subgraph.c`; TF-MOT `PruneForLatencyOnXNNPack`
        (tensorflow/model-optimization `.../sparsity/keras/pruning_policy.py`).
    """
    precision = _check_precision(precision)
    if not isinstance(strict, bool):
        raise TypeError(f"`strict` must be a bool; received {strict!r}.")
    _check_input(model)
    graph = _read_graph(model)
    walk = _Walk(graph)
    weights = [_prunable(c.op) for c in graph.calls]
    one = _conv1x1_counts(graph, walk, weights)
    params = sum(p for p, _ in one.values())
    zeros = sum(z for _, z in one.values())
    reasons = list(walk.reasons)
    low: set[int] = set()
    if walk.stems and not params:
        reasons.append("no 1x1 convolution in the sparse subgraph (XNNPACK "
                       "skips subgraphs without one)")
    elif walk.stems and zeros * 3 <= params * 2:
        reasons.append(
            f"1x1 filters of the subgraph have {zeros}/{params} "
            f"({zeros / params:.1%}) zeros; XNNPACK needs more than 2/3")
        low = {i for i, (p, z) in one.items() if z * 3 <= p * 2}
    if precision not in SPARSE_PRECISIONS:
        reasons.append(f"precision '{precision}': XNNPACK's sparse path runs "
                       f"float operators only ({', '.join(SPARSE_PRECISIONS)})")
    blocking = walk.blocking()
    if blocking:
        reasons.append("layers block the sparse subgraph: "
                       + ", ".join(graph.calls[i].op.name for i in blocking))
    checks = _layer_checks(graph, walk, weights, one, low)
    report = XnnpackSparseReport(
        qualifies=not reasons, reasons=tuple(reasons), precision=precision,
        layers=tuple(checks), conv1x1_params=params, conv1x1_zeros=zeros,
        prunable_params=sum(ch.prunable_params
                            for ch in _distinct(graph, checks)),
        eligible_params=params)
    if strict and not report.qualifies:
        failing = [f"{ch.name}: {ch.reason}" for ch in report.failing_layers]
        raise ValueError(
            f"Model {model.name!r} does not qualify for XNNPACK sparse "
            f"inference: {'; '.join(report.reasons)}."
            + (" Failing layers: " + "; ".join(failing) if failing else ""))
    return report


class _Walk:
    """Finds the stems, walks forward to the pooling head and marks every
    layer call: `role`/`reason` per call index, `inside` (the subgraph),
    `heads` (GlobalAveragePooling2D calls inside), `reasons` (model level).
    """

    def __init__(self, graph: _Graph):
        self.graph = graph
        self.role: dict[int, str] = {}
        self.reason: dict[int, str] = {}
        self.reasons: list[str] = []
        self.heads: set[int] = set()
        self.exits: set[int] = set()  # calls whose outputs leave the subgraph
        self.stems = [i for i, c in enumerate(graph.calls)
                      if _conv_kind(c.layer) == "conv"
                      and _stem_problem(graph, i) is None]
        self.inside: set[int] = set(self.stems)
        if not self.stems:
            self.reasons.append(
                "no stem: XNNPACK's sparse subgraph must start with a 3x3 "
                "stride-2 Conv2D on 3 input channels with padding 1 on each "
                "side")
            for i in _first_convs(graph):
                self.block(i, _stem_problem(graph, i))
            return
        for i in self.stems:
            self.role[i] = "stem"
            self.reason[i] = ("3x3 stride-2 Conv2D on 3 channels: starts the "
                              "subgraph")
            p = _fused_pad(graph, i)
            if p is not None:
                self.role[p] = "outside"
                self.reason[p] = f"folded into {graph.calls[i].op.name}"
        self._forward()
        for i in self.heads:
            self.role[i] = "head"
            self.reason[i] = ("ends the sparse subgraph" if i in self.exits
                              else "pools inside the sparse subgraph")
        self._inputs_from_inside()
        if not self.heads and not self.blocking():
            self.reasons.append(
                "no GlobalAveragePooling2D ends the sparse subgraph")

    def block(self, i: int, why: str) -> None:
        if self.role.get(i) != "blocking":
            self.role[i] = "blocking"
            self.reason[i] = why
        self.inside.discard(i)

    def blocking(self) -> list[int]:
        return sorted(i for i, r in self.role.items() if r == "blocking")

    def _forward(self) -> None:
        graph = self.graph
        queue = list(self.stems)
        while queue:
            i = queue.pop()
            c = graph.calls[i]
            nxt = [j for t in c.outputs for j in graph.consumers.get(t, [])]
            is_gap = (_is(c.layer, "GlobalAveragePooling2D")
                      and i not in self.stems)
            if is_gap:
                self.heads.add(i)
            if is_gap or _pixel(graph, c):
                # Past the pooling, NCHW and NHWC are the same bytes: the
                # subgraph may end here (XNNPACK's NCHW->NHWC exit), but only
                # if no reader of the tensor stays inside.
                fits = [j for j in nxt if _walk_problem(graph, j) is None]
                if any(t in graph.model_outputs for t in c.outputs):
                    fits = []  # also a model output: the subgraph ends here
                if not fits:
                    self.exits.add(i)
                    continue
                for j in nxt:
                    if j not in fits:
                        self.block(j, f"reads {c.op.name}, whose output also "
                                      "feeds the sparse subgraph; a tensor "
                                      "inside it may only be read by "
                                      "operators on the sparse path")
                nxt = fits
            elif any(t in graph.model_outputs for t in c.outputs):
                self.block(i, "its output is a model output inside the sparse "
                              "subgraph; the subgraph must end with "
                              "GlobalAveragePooling2D")
                continue
            for j in nxt:
                if j in self.inside or self.role.get(j) == "blocking":
                    continue
                why = _walk_problem(graph, j)
                if why is not None:
                    self.block(j, why)
                    continue
                self.inside.add(j)
                queue.append(j)

    def _inputs_from_inside(self) -> None:
        """Every operator inside must read tensors produced inside (one
        behind a blocking layer is explained by that layer already)."""
        graph = self.graph
        behind = _downstream(graph, self.blocking())
        members = set(self.inside)
        for i in sorted(members - set(self.stems)):
            for t in graph.calls[i].inputs:
                p = graph.producer.get(t)
                if p is None or (p not in members and p not in behind):
                    src = ("the model input" if p is None
                           else graph.calls[p].op.name)
                    self.block(i, f"reads {src}, which is outside the sparse "
                                  "subgraph")
                    break


def _conv1x1_counts(graph: _Graph, walk: _Walk, weights) -> dict[int, tuple]:
    """`{call: (entries, zeros)}` of the 1x1 filters inside the subgraph."""
    one = {}
    for i in sorted(walk.inside - set(walk.stems)):
        kind = _conv_kind(graph.calls[i].layer)
        key = {"conv": "kernel", "separable": "pointwise_kernel"}.get(kind)
        if key and key in weights[i]:
            w = weights[i][key]
            one[i] = (int(w.size), int(np.count_nonzero(w == 0)))
    return one


def _layer_checks(graph: _Graph, walk: _Walk, weights, one,
                  low) -> list[XnnpackLayerCheck]:
    behind = _downstream(graph, walk.blocking())
    checks = []
    for i, c in enumerate(graph.calls):
        role = walk.role.get(i)
        why = walk.reason.get(i, "")
        if role is None:
            role = ("sparse_conv" if i in one
                    else "inside" if i in walk.inside else "outside")
            if role == "outside" and i in behind:
                why = "not checked: behind a blocking layer"
        if role == "inside" and _is(c.layer, "ZeroPadding2D"):
            consumer = graph.consumers[c.outputs[0]][0]
            why = f"folded into {graph.calls[consumer].op.name}"
        if i in one:
            p, z = one[i]
            why = f"1x1 filter: {z}/{p} zeros ({z / p:.1%})"
            if i in low:
                why += ("; at most 2/3, pulling the pooled share below "
                        "XNNPACK's threshold")
        checks.append(XnnpackLayerCheck(
            name=c.op.name, class_name=_cls(c.layer), role=role,
            ok=role != "blocking" and i not in low, reason=why,
            prunable_params=int(sum(w.size for w in weights[i].values())),
            conv1x1_params=one.get(i, (0, 0))[0],
            conv1x1_zeros=one.get(i, (0, 0))[1]))
    return checks


def _walk_problem(graph: _Graph, j: int) -> str | None:
    """Why call `j`, reached from inside, cannot join the subgraph."""
    layer = graph.calls[j].layer
    if _is(layer, "GlobalAveragePooling2D"):
        if layer.data_format != "channels_last":
            return "GlobalAveragePooling2D with channels_first (needs NHWC)"
        return None
    return _inside_problem(graph, j)


def _pixel(graph: _Graph, call: _Call) -> bool:
    """True if every output of `call` is 4-D with a 1x1 spatial size."""
    shapes = [graph.shapes[t] for t in call.outputs]
    return bool(shapes) and all(len(s) == 4 and tuple(s[1:3]) == (1, 1)
                                for s in shapes)


def _downstream(graph: _Graph, starts: list[int]) -> set[int]:
    """Calls that read, directly or not, an output of `starts`."""
    found: set[int] = set()
    queue = list(starts)
    while queue:
        i = queue.pop()
        for t in graph.calls[i].outputs:
            for j in graph.consumers.get(t, []):
                if j not in found:
                    found.add(j)
                    queue.append(j)
    return found


def _first_convs(graph: _Graph) -> list[int]:
    """The first convolution on each path from the model inputs."""
    found, seen = [], set()
    queue = [j for t in graph.model_inputs for j in graph.consumers.get(t, [])]
    while queue:
        i = queue.pop(0)
        if i in seen:
            continue
        seen.add(i)
        if _conv_kind(graph.calls[i].layer):
            found.append(i)
            continue
        queue += [j for t in graph.calls[i].outputs
                  for j in graph.consumers.get(t, [])]
    return sorted(found)


def _distinct(graph: _Graph, checks):
    """One check per distinct operation (shared layers count once)."""
    seen = set()
    for c, ch in zip(graph.calls, checks):
        if id(c.op) not in seen:
            seen.add(id(c.op))
            yield ch
