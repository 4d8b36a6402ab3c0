"""Export reports: plain dataclasses with `to_dict`, `to_json`,
`to_markdown`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass
class ExportReport:
    """What `export_inference` wrote and how it was verified.

    Attributes:
        path: the `.tflite` file.
        precision: requested precision.
        num_bytes: size of the file.
        dense_float32_bytes: size of the same model exported dense float32
            (no sparsity, no quantization), or None if not measured.
        size_ratio: `num_bytes / dense_float32_bytes`.
        sparse_encoding: whether the file stores sparse-encoded tensors.
        sparse_tensors: per sparse tensor: name, shape, dtype, format
            (`CSR`/`BSR`), block shape, runtime path.
        operators: builtin ops of the main subgraph.
        runtime_path: `dense`, `densify`, `sparse_fully_connected` or a `+`
            join of these.
        op_resolver: interpreter configuration that passed verification:
            `default` (XNNPACK delegate applied) or
            `builtin_without_default_delegates`. Use the same one on device.
        max_abs_err: verification error vs Keras.
        tolerance: verification tolerance.
        num_samples: samples used for verification.
        latency_us: median batch-1 single-thread invoke time, or None.
        notes: fallbacks and detected runtime faults, in plain words.
        attempts: every configuration tried, with its error or result.
        encoding_choice: which encoding was written and why (`optimize`,
            `chosen`, `reason`, `sparse_bytes`, `dense_bytes`,
            `sparse_latency_us`, `dense_latency_us`).
    """

    path: str
    precision: str
    num_bytes: int
    dense_float32_bytes: int | None
    size_ratio: float | None
    sparse_encoding: bool
    sparse_tensors: list[dict[str, Any]]
    operators: list[str]
    runtime_path: str
    op_resolver: str
    max_abs_err: float
    tolerance: float
    num_samples: int
    latency_us: float | None
    notes: list[str]
    attempts: list[dict[str, Any]]
    encoding_choice: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self) -> str:
        ratio = f"{self.size_ratio:.3f}x" if self.size_ratio else "n/a"
        lat = f"{self.latency_us:.1f} us" if self.latency_us else "n/a"
        lines = [
            f"### TFLite export `{self.path}` ({self.precision})",
            "",
            f"- bytes: {self.num_bytes} ({ratio} of dense float32 "
            f"{self.dense_float32_bytes})",
            f"- runtime path: {self.runtime_path}; op resolver: "
            f"{self.op_resolver}",
            f"- parity: max abs err {self.max_abs_err:.3g} <= "
            f"{self.tolerance:.3g} on {self.num_samples} samples",
            f"- batch-1 single-thread latency: {lat}",
        ]
        if self.sparse_tensors:
            lines += ["", "| tensor | shape | dtype | format | block | path |",
                      "|---|---|---|---|---|---|"]
            for t in self.sparse_tensors:
                lines.append(
                    f"| {t['name'][:48]} | {t['shape']} | {t['dtype']} | "
                    f"{t['format']} | {'x'.join(map(str, t['block_shape']))}"
                    f" | {t['runtime_path']} |")
        for n in self.notes:
            lines.append(f"- note: {n}")
        return "\n".join(lines)


@dataclasses.dataclass
class TrainableExportReport:
    """What `export_trainable` wrote.

    Attributes:
        path: the `.tflite` file.
        num_bytes: its size.
        dense_inference_float32_bytes: dense float32 inference export of the
            same model (the weights alone), for comparison.
        weight_storage: `"dense"` or `"sparse"` (pruned kernels stored as
            `[nnz]` value variables + int32 indices, scattered on use).
        signatures: signature keys in the file.
        operators: op counts over all subgraphs.
        flex_ops: ops that would need the Flex delegate (must be empty).
        num_weights: trainable weight tensors.
        num_masked: kernels whose pruned entries are kept at exact zero.
        weight_names: names of `get_weights` / `set_weights`, in order
            (trained weights, then BN moving statistics with
            `batchnorm="train"`).
        state_names: names of `get_state` / `set_state` (the weights, the
            optimizer slots `<weight>__slot<k>`, then `step`).
        frozen_layers: layers with `trainable=False` (constants on device).
        batchnorm: `"frozen"` or `"train"`.
        notes: plain-words remarks.
        sparse_matmul: per compact Dense kernel considered by
            `sparse_matmul="on"|"auto"`: `{"form": "sparse" | "masked"}`,
            with `"auto"` also the measured `"masked_us"` and `"sparse_us"`
            (median step share, microseconds, on the exporting machine).
    """

    path: str
    num_bytes: int
    dense_inference_float32_bytes: int | None
    weight_storage: str
    signatures: list[str]
    operators: dict[str, int]
    flex_ops: list[str]
    num_weights: int
    num_masked: int
    weight_names: list[str]
    state_names: list[str]
    frozen_layers: list[str]
    batchnorm: str
    notes: list[str]
    sparse_matmul: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)
