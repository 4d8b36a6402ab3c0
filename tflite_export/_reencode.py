"""Re-encodes int8 1x4-block weights that the converter stored as CSR.

The converter's sparsity pass stores FULLY_CONNECTED weights block-sparse
only for the block size of the op's sparse kernel: 1x4 for float32, 1x16
for int8. int8 weights with 1x4 blocks therefore become element-wise CSR
(one uint16 column index per non-zero, ~3 bytes per non-zero) read through
a DENSIFY op. This module rewrites such a tensor as BSR with 1x4 blocks
(one uint8/uint16 block index per 4 values, ~1.25 bytes per non-zero), the
layout the converter itself writes for float32 1x4 blocks; the DENSIFY op
stays, so the runtime path is unchanged. `export_inference` verifies the
rewritten file like any other and falls back to the converter's own output
if it does not run correctly.

Only the flatbuffer's tensor sparsity parameters and buffers change, via
the schema's object API that ships with ai-edge-litert.
"""

from __future__ import annotations

import flatbuffers
import numpy as np

from tflite_export._schema import schema as _S

_VEC = {  # SparseIndexVector type -> (table class, numpy dtype)
    _S.SparseIndexVector.Int32Vector: (_S.Int32VectorT, np.int32),
    _S.SparseIndexVector.Uint16Vector: (_S.Uint16VectorT, np.uint16),
    _S.SparseIndexVector.Uint8Vector: (_S.Uint8VectorT, np.uint8),
}


def _read_vec(obj) -> np.ndarray:
    return np.asarray(obj.values, dtype=np.int64)


def _make_vec(values: np.ndarray):
    top = int(values.max()) if values.size else 0
    for kind in (_S.SparseIndexVector.Uint8Vector,
                 _S.SparseIndexVector.Uint16Vector,
                 _S.SparseIndexVector.Int32Vector):
        cls, dt = _VEC[kind]
        if top <= np.iinfo(dt).max:
            v = cls()
            v.values = values.astype(dt)
            return kind, v
    raise ValueError("index too large")  # pragma: no cover


def _csr_to_dense(tensor, data: np.ndarray) -> np.ndarray | None:
    sp = tensor.sparsity
    if (sp is None or sp.blockMap is not None and len(sp.blockMap)
            or len(sp.dimMetadata) != 2
            or list(sp.traversalOrder) != [0, 1]):
        return None
    d0, d1 = sp.dimMetadata
    if (d0.format != _S.DimensionType.DENSE
            or d1.format != _S.DimensionType.SPARSE_CSR):
        return None
    rows, cols = (int(s) for s in tensor.shape)
    seg = _read_vec(d1.arraySegments)
    idx = _read_vec(d1.arrayIndices)
    if len(seg) != rows + 1 or len(idx) != len(data):
        return None
    dense = np.zeros((rows, cols), data.dtype)
    row_of = np.repeat(np.arange(rows), np.diff(seg))
    dense[row_of, idx] = data
    return dense


def _bsr_1xb(dense: np.ndarray, b: int):
    rows, cols = dense.shape
    blocks = dense.reshape(rows, cols // b, b)
    live = np.any(blocks != 0, axis=2)
    values = blocks[live].reshape(-1)
    seg = np.concatenate([[0], np.cumsum(live.sum(axis=1))])
    idx = np.nonzero(live)[1]
    sp = _S.SparsityParametersT()
    sp.traversalOrder = np.array([0, 1, 2], np.int32)
    sp.blockMap = np.array([1], np.int32)
    dims = []
    for size in (rows, None, b):
        dm = _S.DimensionMetadataT()
        if size is None:
            dm.format = _S.DimensionType.SPARSE_CSR
            dm.arraySegmentsType, dm.arraySegments = _make_vec(seg)
            dm.arrayIndicesType, dm.arrayIndices = _make_vec(idx)
        else:
            dm.format = _S.DimensionType.DENSE
            dm.denseSize = int(size)
        dims.append(dm)
    sp.dimMetadata = dims
    return sp, values


def _index_bytes(sp) -> int:
    total = 0
    for dm in sp.dimMetadata:
        for v in (dm.arraySegments, dm.arrayIndices):
            if v is not None:
                total += np.asarray(v.values).nbytes
    return total


def reencode_int8_blocks(model_content: bytes, block: int = 4
                         ) -> tuple[bytes, list[str]]:
    """Rewrites element-wise CSR int8 2-D weights whose non-zeros lie in
    1 x `block` blocks (along the input dimension) as BSR 1 x `block`.

    Returns:
        `(new bytes, names of the rewritten tensors)`; the input bytes
        unchanged when nothing qualifies or nothing gets smaller.
    """
    model = _S.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    changed = []
    for sg in model.subgraphs or []:
        for t in sg.tensors or []:
            if t.type != _S.TensorType.INT8 or t.sparsity is None or \
                    t.shape is None or len(t.shape) != 2 or \
                    int(t.shape[1]) % block:
                continue
            buf = model.buffers[t.buffer]
            if buf.data is None or buf.offset:
                continue
            data = np.asarray(buf.data, np.uint8).view(np.int8)
            dense = _csr_to_dense(t, data)
            if dense is None:
                continue
            rows, cols = dense.shape
            blocks = dense.reshape(rows, cols // block, block)
            live = np.any(blocks != 0, axis=2)
            # Only when the non-zeros really are 1 x block (no zero padding
            # inside live blocks beyond what quantization rounds to 0).
            if live.sum() * block > 1.25 * np.count_nonzero(dense):
                continue
            sp, values = _bsr_1xb(dense, block)
            if values.nbytes + _index_bytes(sp) >= (
                    data.nbytes + _index_bytes(t.sparsity)):
                continue
            t.sparsity = sp
            buf.data = values.view(np.uint8)
            changed.append(t.name.decode() if isinstance(t.name, bytes)
                           else str(t.name))
    if not changed:
        return model_content, []
    builder = flatbuffers.Builder(len(model_content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), changed
