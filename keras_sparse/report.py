"""Sparsity report: per-weight parameters, non-zeros, sparsity and FLOPs."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_sparse.channels import channel_counts
from keras_sparse.layers.sparse_wrapper import masked
from keras_sparse.model_view import SparsityCounts, masked_weights, sparse_wrappers, sparsity_counts

__all__ = [
    "SparsityReport",
    "WeightReport",
    "model_parameter_count",
    "sparsity_report",
    "summary",
]


@dataclasses.dataclass(frozen=True)
class WeightReport:
    """One masked weight.

    Attributes:
        layer: layer name.
        weight: weight name (`kernel`, `depthwise_kernel`, ...).
        shape: weight shape.
        params: number of entries.
        nonzeros: entries that are active in the mask and non-zero.
        flops_dense: multiply-add FLOPs (2 per MAC) of this weight for one
            example with every entry active; 0 for lookups (Embedding).
        flops_sparse: the same counting only non-zero entries.
        channels_before: output channels of the layer (for the kernel of a
            Dense, Conv or DepthwiseConv layer; None otherwise).
        channels_after: those left by
            `keras_sparse.strip(model, remove_channels=True)` (None as above).
        structure: the mask pattern in plain words (`"unstructured"`,
            `"1x16 blocks"`, `"2:4 sparse"`; `SparseWrapper.structure_of`).
    """

    layer: str
    weight: str
    shape: tuple[int, ...]
    params: int
    nonzeros: int
    flops_dense: int
    flops_sparse: int
    channels_before: int | None = None
    channels_after: int | None = None
    structure: str = "unstructured"

    @property
    def sparsity(self) -> float:
        return SparsityCounts(self.params - self.nonzeros, self.params).sparsity


def _row_total(field: str, doc: str) -> property:
    """A read-only property summing `field` over a report's rows."""
    return property(lambda self: sum(getattr(r, field) for r in self.rows), doc=doc)


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-weight rows and totals; `print(report)` renders a table.

    Attributes:
        rows: one `WeightReport` per masked weight.
        model_params: all parameters of the model (masked or not).
    """

    rows: tuple[WeightReport, ...]
    model_params: int

    total_params = _row_total("params", "Entries of all masked weights.")
    total_nonzeros = _row_total("nonzeros", "Non-zero entries of all masked weights.")
    flops_dense = _row_total("flops_dense", "Multiply-add FLOPs with every entry active.")
    flops_sparse = _row_total("flops_sparse", "Multiply-add FLOPs of the non-zero entries.")

    @property
    def total_sparsity(self) -> float:
        """Sparsity over the masked weights."""
        return SparsityCounts(self.total_params - self.total_nonzeros, self.total_params).sparsity

    @property
    def model_sparsity(self) -> float:
        """Zeros of the masked weights over all model parameters."""
        return SparsityCounts(self.total_params - self.total_nonzeros, self.model_params).sparsity

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data: rows and totals."""
        return {
            "rows": [
                {**dataclasses.asdict(r), "shape": list(r.shape), "sparsity": r.sparsity}
                for r in self.rows
            ],
            "total_params": self.total_params,
            "total_nonzeros": self.total_nonzeros,
            "total_sparsity": self.total_sparsity,
            "model_params": self.model_params,
            "model_sparsity": self.model_sparsity,
            "flops_dense": self.flops_dense,
            "flops_sparse": self.flops_sparse,
        }

    def __str__(self) -> str:
        header = ("layer/weight", "shape", "params", "non-zeros", "sparsity", "FLOPs dense",
                  "FLOPs sparse", "channels", "pattern")
        lines = [
            (
                f"{r.layer}/{r.weight}",
                "x".join(map(str, r.shape)),
                f"{r.params:,}",
                f"{r.nonzeros:,}",
                f"{r.sparsity:.2%}",
                f"{r.flops_dense:,}",
                f"{r.flops_sparse:,}",
                "" if r.channels_before is None else f"{r.channels_before}->{r.channels_after}",
                r.structure,
            )
            for r in self.rows
        ]
        speedup = self.flops_dense / self.flops_sparse if self.flops_sparse else float("nan")
        lines.append(
            (
                "total (masked weights)",
                "",
                f"{self.total_params:,}",
                f"{self.total_nonzeros:,}",
                f"{self.total_sparsity:.2%}",
                f"{self.flops_dense:,}",
                f"{self.flops_sparse:,}",
                "",
                "",
            )
        )
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

        def fmt(row):
            return "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            )

        rule = "-" * len(fmt(header))
        out = [fmt(header), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])]
        out.append(
            f"model parameters: {self.model_params:,}; sparsity over all parameters: "
            f"{self.model_sparsity:.2%}; FLOP reduction of masked layers: {speedup:.2f}x"
        )
        return "\n".join(out)


_SEQUENCE_LAYERS = (keras.layers.MultiHeadAttention, keras.layers.RNN)

_TRANSPOSE_CONVS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def _positions(wrapper) -> int:
    """How many times each weight entry is used (MACs per entry) per example.

    Dense and EinsumDense: once per position of the input's middle axes (for
    EinsumDense this is an approximation for equations that contract more
    than the last axis). Convolutions: once per output position (per input
    position for transposed convolutions). MultiHeadAttention and recurrent
    layers: once per time step. Embedding: 0 (a lookup).
    """
    layer = wrapper.layer
    if isinstance(layer, keras.layers.Embedding):
        return 0
    input_shape = (wrapper.get_build_config() or {}).get("input_shape")
    if input_shape is None:
        return 1
    input_shape = tuple(input_shape)
    if isinstance(layer, _SEQUENCE_LAYERS):
        # Once per time step (per query position for attention: an
        # approximation when keys and values are longer than the query).
        return int(input_shape[1] or 1) if len(input_shape) > 2 else 1
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        return int(np.prod([d or 1 for d in input_shape[1:-1]], dtype=np.int64))
    if isinstance(layer, _TRANSPOSE_CONVS):
        shape = input_shape
    else:
        try:
            shape = tuple(layer.compute_output_shape(input_shape))
        except Exception:  # noqa: BLE001 - custom layers may not implement it.
            return 1
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        spatial = shape[2:]
    else:
        spatial = shape[1:-1]
    return int(np.prod([d or 1 for d in spatial], dtype=np.int64))


def sparsity_report(model: keras.Model) -> SparsityReport:
    """Measures the sparsity of every masked weight of `model`.

    Non-zeros count entries that are active in the mask *and* non-zero in the
    weight. For Sequential/Functional models each layer's kernel row also
    gives its output channels before and after
    `keras_sparse.strip(model, remove_channels=True)`. FLOPs count 2 per multiply-add of masked weights for one example
    (biases, normalization and activations excluded).

    Args:
        model: a model containing `SparseWrapper` layers (from `sparsify`).

    Returns:
        A `SparsityReport`.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if the model has no `SparseWrapper`.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`sparsity_report` expects a keras.Model. Received: {type(model).__name__}.")
    wrappers = sparse_wrappers(model)
    if not wrappers:
        raise ValueError(
            f"Model {model.name!r} has no SparseWrapper layer: sparsify it with "
            "`keras_sparse.sparsify(model, sparsity)` first."
        )
    try:
        counts = channel_counts(model)
    except Exception:  # noqa: BLE001 - the column is optional: subclassed, shared or uncloneable layers
        counts = {}
    rows = []
    for r in masked_weights(model):
        entries = sparsity_counts([masked(r.weight, r.mask)])  # NaN-safe: pruned entries are 0
        params, nonzeros = entries.total, entries.nonzeros
        per_entry = 2 * _positions(r.wrapper)
        channels = counts.get(r.wrapper.name, (None, None)) if r.name == "kernel" else (None, None)
        rows.append(
            WeightReport(
                layer=r.wrapper.name,
                weight=r.name,
                shape=tuple(int(d) for d in r.weight.shape),
                params=params,
                nonzeros=nonzeros,
                flops_dense=per_entry * params,
                flops_sparse=per_entry * nonzeros,
                channels_before=channels[0],
                channels_after=channels[1],
                structure=r.wrapper.structure_of(r.name).describe(),
            )
        )
    return SparsityReport(rows=tuple(rows), model_params=model_parameter_count(model))


def model_parameter_count(model: keras.Model) -> int:
    """Entries of all the model's weights except the masks themselves.

    This is `keras_sparse.strip(model).count_params()`: the parameters of
    the plain model, biases, normalization and layers left dense included.
    """
    return int(model.count_params()) - sparsity_counts(model).total


def summary(model: keras.Model, print_fn=print) -> SparsityReport:
    """Prints the sparsity table of `model` and returns the report.

    Args:
        model: a model containing `SparseWrapper` layers.
        print_fn: where to write the table (default `print`).

    Returns:
        The `SparsityReport` that was printed.
    """
    report = sparsity_report(model)
    print_fn(str(report))
    return report
