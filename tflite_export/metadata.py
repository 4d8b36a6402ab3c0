"""Runtime requirements stored inside the `.tflite` flatbuffer.

The exporters add one entry to the flatbuffer's `metadata` table, named
`keras_sparse`, whose buffer is UTF-8 JSON, e.g.

```json
{"format": 1, "kind": "trainable", "op_resolver": "default",
 "weights": {"dense_kernel": [16, 4]}, "labels": "sparse",
 "num_classes": 4, "batch_size": 8}
```

so a bare `.tflite` file (no `.json` sidecar) tells the runner which op
resolver it needs and what its training signatures accept. Metadata does
not change what the interpreter executes.

`read_metadata` parses the flatbuffer with `struct` only (no TensorFlow,
no `flatbuffers` package), so the device runner can use it with
tflite-runtime alone. `add_metadata` uses the schema's object API that
ships with ai-edge-litert (export side only).
"""

from __future__ import annotations

import json
import struct
from typing import Any

KEY = "keras_sparse"
FORMAT = 1

# Field indices of the TFLite schema tables used here.
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


def trainable_metadata(weight_names, weight_shapes, state_names,
                       labels: str, num_classes: int,
                       batch_size: int) -> dict[str, Any]:
    """The metadata of an `export_trainable` file."""
    return {
        "format": FORMAT,
        "kind": "trainable",
        "op_resolver": "default",
        "weights": {n: [int(d) for d in s]
                    for n, s in zip(weight_names, weight_shapes)},
        "state": list(state_names),
        "labels": labels,
        "num_classes": int(num_classes),
        "batch_size": int(batch_size),
    }


def inference_metadata(op_resolver: str, precision: str) -> dict[str, Any]:
    """The metadata of an `export_inference` file."""
    return {"format": FORMAT, "kind": "inference", "op_resolver": op_resolver,
            "precision": precision}


def add_metadata(model_content: bytes, info: dict[str, Any],
                 strip_tensor_names: bool = False) -> bytes:
    """Returns `model_content` with `info` stored under `KEY` (replacing an
    earlier entry of that name).

    With `strip_tensor_names`, the names of tensors that are not a
    subgraph's inputs or outputs are emptied: the interpreter and the
    signature runners never read them (signatures refer to tensors by
    index), and a training graph has thousands of such names.
    """
    import flatbuffers
    import numpy as np

    from tflite_export._schema import schema  # export side only: needs ai-edge-litert

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    if strip_tensor_names:
        for sg in model.subgraphs or []:
            keep = set(np.asarray(sg.inputs if sg.inputs is not None else [],
                                  np.int64).tolist())
            keep |= set(np.asarray(sg.outputs if sg.outputs is not None
                                   else [], np.int64).tolist())
            for i, tensor in enumerate(sg.tensors or []):
                if i not in keep:
                    tensor.name = b""
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(info, sort_keys=True).encode(),
                             np.uint8)
    model.buffers = list(model.buffers or []) + [buf]
    entry = schema.MetadataT()
    entry.name = KEY
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or [])
            if _decode(m.name) != KEY]
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(model_content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _decode(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


class _Reader:
    """Minimal little-endian flatbuffer table reader."""

    def __init__(self, data: bytes):
        self.d = data

    def u16(self, pos):
        return struct.unpack_from("<H", self.d, pos)[0]

    def u32(self, pos):
        return struct.unpack_from("<I", self.d, pos)[0]

    def u64(self, pos):
        return struct.unpack_from("<Q", self.d, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        vtable = table - struct.unpack_from("<i", self.d, table)[0]
        size = self.u16(vtable)
        slot = 4 + 2 * index
        if slot >= size:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, pos: int) -> tuple[int, int]:
        start = self.deref(pos)
        return start + 4, self.u32(start)

    def tables(self, pos: int) -> list[int]:
        start, n = self.vector(pos)
        return [self.deref(start + 4 * i) for i in range(n)]


def read_metadata(model: bytes | str) -> dict[str, Any] | None:
    """The `KEY` metadata of a `.tflite` file (path or bytes), or None when
    the file has none or is not a TFLite flatbuffer.
    """
    if isinstance(model, str):
        with open(model, "rb") as f:
            data = f.read()
    else:
        data = bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        return None
    r = _Reader(data)
    try:
        root = r.deref(0)
        md = r.field(root, _MODEL_METADATA)
        bufs = r.field(root, _MODEL_BUFFERS)
        if md is None or bufs is None:
            return None
        buffers = r.tables(bufs)
        for entry in r.tables(md):
            name_pos = r.field(entry, _METADATA_NAME)
            if name_pos is None:
                continue
            start, n = r.vector(name_pos)
            if data[start:start + n].decode() != KEY:
                continue
            idx_pos = r.field(entry, _METADATA_BUFFER)
            buf = buffers[r.u32(idx_pos) if idx_pos is not None else 0]
            data_pos = r.field(buf, _BUFFER_DATA)
            if data_pos is not None:
                start, n = r.vector(data_pos)
                raw = data[start:start + n]
            else:  # large models: data after the flatbuffer
                off, size = (r.field(buf, _BUFFER_OFFSET),
                             r.field(buf, _BUFFER_SIZE))
                if off is None or size is None:
                    return None
                raw = data[r.u64(off):r.u64(off) + r.u64(size)]
            return json.loads(raw.decode())
    except (struct.error, IndexError, UnicodeDecodeError, ValueError):
        return None
    return None
