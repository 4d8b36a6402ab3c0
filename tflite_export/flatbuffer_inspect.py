"""Read a `.tflite` flatbuffer: operators, sparse-encoded tensors, sizes.

Uses the flatbuffers schema module that ships with ai-edge-litert
(`tflite_export._schema`). Nothing here runs the model.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from tflite_export._schema import schema as _schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


_OP_NAMES = _enum_names(_schema.BuiltinOperator)
_TYPE_NAMES = _enum_names(_schema.TensorType)


@dataclasses.dataclass
class SparseTensorInfo:
    """One sparse-encoded constant tensor of a `.tflite` model.

    Attributes:
        name: tensor name in the flatbuffer.
        shape: dense shape.
        dtype: TFLite element type (`"FLOAT32"`, `"INT8"`, ...).
        format: `"CSR"` (unstructured: a dense row dimension and a compressed
            column dimension) or `"BSR"` (block sparse row).
        block_shape: `[rows, cols]` of a block, `[1, 1]` for CSR.
        traversal_order: the schema's traversal order.
        consumers: builtin op names that read this tensor. A `DENSIFY`
            consumer means the weights are expanded to dense at run time; a
            `FULLY_CONNECTED` consumer means TFLite's sparse FC kernel.
        runtime_path: `"densify"`, `"sparse_fully_connected"` or
            `"other:<OP>"`.
        stored_bytes: bytes of the values buffer (indices excluded).
    """

    name: str
    shape: list[int]
    dtype: str
    format: str
    block_shape: list[int]
    traversal_order: list[int]
    consumers: list[str]
    runtime_path: str
    stored_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FlatbufferSummary:
    """What `inspect_flatbuffer` found.

    Attributes:
        num_bytes: size of the flatbuffer.
        operators: builtin op names of the main subgraph in execution order.
        op_counts: `{op_name: count}` over all subgraphs.
        sparse_tensors: list of `SparseTensorInfo`.
        signatures: signature keys.
        num_subgraphs: number of subgraphs.
    """

    num_bytes: int
    operators: list[str]
    op_counts: dict[str, int]
    sparse_tensors: list[SparseTensorInfo]
    signatures: list[str]
    num_subgraphs: int

    @property
    def has_densify(self) -> bool:
        return self.op_counts.get("DENSIFY", 0) > 0

    @property
    def runtime_path(self) -> str:
        """Summary of how sparse weights execute: see `SparseTensorInfo`."""
        paths = sorted({t.runtime_path for t in self.sparse_tensors})
        if not paths:
            return "dense"
        return "+".join(paths)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["has_densify"] = self.has_densify
        d["runtime_path"] = self.runtime_path
        return d


def _op_name(model, op) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == _schema.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        return "CUSTOM:" + (custom.decode() if custom else "?")
    return _OP_NAMES.get(builtin, str(builtin))


def _classify(sparsity, rank: int) -> tuple[str, list[int]]:
    block_map = [int(v) for v in sparsity.BlockMapAsNumpy()] if (
        sparsity.BlockMapLength()) else []
    if not block_map:
        return "CSR", [1] * max(rank, 1)
    block = [1] * rank
    for k, dim in enumerate(block_map):
        meta = sparsity.DimMetadata(rank + k)
        block[dim] = int(meta.DenseSize())
    return "BSR", block


def inspect_flatbuffer(model_content: bytes | str) -> FlatbufferSummary:
    """Parses a `.tflite` model and lists its ops and sparse tensors.

    Args:
        model_content: the flatbuffer bytes, or a path to a `.tflite` file.

    Returns:
        A `FlatbufferSummary`.

    Raises:
        TypeError: if `model_content` is neither bytes nor a path.
        ValueError: if the bytes are not a TFLite flatbuffer.

    Example:

    ```python
    summary = tflite_export.inspect_flatbuffer("model.tflite")
    [t.format for t in summary.sparse_tensors]  # ["BSR", "BSR", "CSR"]
    ```
    """
    if isinstance(model_content, str):
        with open(model_content, "rb") as f:
            model_content = f.read()
    if not isinstance(model_content, (bytes, bytearray)):
        raise TypeError(
            "inspect_flatbuffer expects the .tflite bytes or a file path; "
            f"received {type(model_content).__name__}.")
    buf = bytes(model_content)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("Not a TFLite flatbuffer (missing 'TFL3' identifier).")
    model = _schema.Model.GetRootAsModel(buf, 0)
    counts: Counter = Counter()
    main_ops: list[str] = []
    sparse: list[SparseTensorInfo] = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        consumers: dict[int, list[str]] = {}
        for j in range(sg.OperatorsLength()):
            op = sg.Operators(j)
            name = _op_name(model, op)
            counts[name] += 1
            if s == 0:
                main_ops.append(name)
            for t in op.InputsAsNumpy() if op.InputsLength() else []:
                consumers.setdefault(int(t), []).append(name)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            sp = tensor.Sparsity()
            if sp is None:
                continue
            shape = [int(v) for v in tensor.ShapeAsNumpy()] if (
                tensor.ShapeLength()) else []
            fmt, block = _classify(sp, len(shape))
            cons = consumers.get(t, [])
            if "DENSIFY" in cons:
                path = "densify"
            elif "FULLY_CONNECTED" in cons:
                path = "sparse_fully_connected"
            else:
                path = "other:" + ",".join(cons)
            nbytes = model.Buffers(tensor.Buffer()).DataLength()
            sparse.append(SparseTensorInfo(
                name=tensor.Name().decode(errors="replace"),
                shape=shape,
                dtype=_TYPE_NAMES.get(tensor.Type(), str(tensor.Type())),
                format=fmt,
                block_shape=block,
                traversal_order=[int(v) for v in sp.TraversalOrderAsNumpy()]
                if sp.TraversalOrderLength() else [],
                consumers=cons,
                runtime_path=path,
                stored_bytes=int(nbytes),
            ))
    sigs = []
    for k in range(model.SignatureDefsLength()):
        key = model.SignatureDefs(k).SignatureKey()
        sigs.append(key.decode() if key else "")
    return FlatbufferSummary(
        num_bytes=len(buf),
        operators=main_ops,
        op_counts=dict(counts),
        sparse_tensors=sparse,
        signatures=sigs,
        num_subgraphs=model.SubgraphsLength(),
    )
