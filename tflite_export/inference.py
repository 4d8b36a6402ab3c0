"""`export_inference`: convert, verify in LiteRT, report, then write."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any
from collections.abc import Sequence

import numpy as np

from tflite_export import _reencode
from tflite_export import convert as _convert
from tflite_export import flatbuffer_inspect as _inspect
from tflite_export import verify as _verify
from tflite_export._atomic import atomic_write_bytes
from tflite_export.metadata import add_metadata, inference_metadata
from tflite_export._validate import check_model, check_output_path
from tflite_export.report import ExportReport

OPTIMIZE = ("latency", "size", "sparse")
# Latencies within this relative difference, or within TIE_FLOOR_US (below
# what a Python timing loop around `invoke()` resolves), are a tie: the
# smaller file wins.
TIE_TOLERANCE = 0.03
TIE_FLOOR_US = 1.0


def _as_input_list(x, model, name) -> list[np.ndarray]:
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    if not all(isinstance(a, np.ndarray) for a in arrays):
        raise TypeError(f"{name} must be a numpy array or a list of arrays "
                        f"(one per model input); received {type(x).__name__}.")
    if len(arrays) != len(model.inputs):
        raise ValueError(f"{name} has {len(arrays)} arrays; the model has "
                         f"{len(model.inputs)} inputs.")
    for a, t in zip(arrays, model.inputs):
        if tuple(a.shape[1:]) != tuple(t.shape[1:]):
            raise ValueError(f"{name} sample shape {a.shape[1:]} does not "
                             f"match model input shape {tuple(t.shape[1:])}.")
    return [a.astype(np.float32) for a in arrays]


def _default_samples(model, representative_data, n: int, seed: int):
    if isinstance(representative_data, (np.ndarray, list, tuple)):
        arrays = _as_input_list(representative_data, model,
                                "representative_data")
        return [a[:n] for a in arrays]
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n,) + tuple(t.shape[1:])).astype(np.float32)
            for t in model.inputs]


def _has_block_float16(data: bytes) -> bool:
    return any(t.dtype == "FLOAT16" and t.format == "BSR"
               for t in _inspect.inspect_flatbuffer(data).sparse_tensors)


def _keras_outputs(model, inputs) -> list[np.ndarray]:
    x = inputs[0] if len(inputs) == 1 else inputs
    y = model(x, training=False)
    ys = y if isinstance(y, (list, tuple)) else [y]
    return [np.asarray(v) for v in ys]


def export_inference(
    model,
    path,
    precision: str = "float32",
    representative_data: Any = None,
    sample_inputs: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    num_samples: int = 16,
    allow_dense_fallback: bool = True,
    measure_latency: bool = True,
    latency_invokes: int = 200,
    compare_dense: bool = True,
    write_report_json: bool = True,
    optimize: str = "latency",
    seed: int = 0,
) -> ExportReport:
    """Exports a sparse Keras 3 model to a verified `.tflite` file.

    The model is converted with builtin ops only and
    `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, then run in the ai-edge-litert
    interpreter on sample inputs (batch 1) and compared with Keras using the
    tolerance of `precision` (`tflite_export.verify.TOLERANCES`). The default
    interpreter (XNNPACK delegate) is tried first; if it fails to prepare or
    gives wrong numbers (a known fault of sparse + quantized
    FULLY_CONNECTED), the builtin op resolver without default delegates is
    tried and the report says so. If no configuration is correct and
    `allow_dense_fallback`, the model is re-converted without sparse
    encoding and verified again (reported in `notes`); otherwise
    `ExportVerificationError` is raised. The file is written only after
    verification, atomically: a failed export leaves nothing at `path`.

    Dense layers trained with 1x4 blocks along the input dimension (float32)
    or 1x16 blocks (int8) are stored block-sparse and run on TFLite's sparse
    FULLY_CONNECTED kernel (no DENSIFY). int8 weights with 1x4 blocks, which
    the converter writes element-wise CSR, are re-encoded BSR 1x4 (still
    expanded by DENSIFY; see `tflite_export._reencode`).

    Never silently slower: when the sparse file verifies, the same model is
    also converted without sparse encoding at the same precision and
    verified, and `optimize` picks the file that is written. `"latency"`
    (default) times both side by side (alternated rounds, medians of
    `latency_invokes` batch-1 single-thread invokes each) and keeps the
    faster one; latencies within `TIE_TOLERANCE` (3%) or `TIE_FLOOR_US`
    (1 us) count as a tie and the smaller file is kept. `"size"` keeps the
    smaller file. `"sparse"` keeps
    the sparse encoding whenever it verifies (the converter's choice, e.g.
    to benchmark the encodings themselves). `report.encoding_choice` says
    what was chosen and why, with both sizes and, for `"latency"`, both
    latencies. The latency is that of the machine running the export: on a
    phone, export there or pass `"size"`/`"sparse"` deliberately.

    Known converter limitation: block-sparse float16 is written BSR and fed
    to DEQUANTIZE without DENSIFY, giving NaN; verification catches it and
    the export falls back to dense float16 with a `UserWarning` and a note.

    Args:
        model: a plain Keras 3 model (`keras_sparse.strip(model)`), pruned
            weights exactly 0.0.
        path: output `.tflite` path.
        precision: `"float32"`, `"float16"`, `"int8_dynamic"` (weights int8,
            activations float) or `"int8_full"` (integer ops with float
            input/output; needs `representative_data`).
        representative_data: numpy array of typical input samples (or the
            converter's generator callable) for `int8_full` calibration.
            Its first samples also serve as verification inputs.
        sample_inputs: verification inputs; defaults to the first
            `num_samples` representative samples, else standard normal noise.
        num_samples: verification samples when `sample_inputs` is None.
        allow_dense_fallback: re-export without sparse encoding when the
            sparse file cannot be run correctly.
        measure_latency: measure median batch-1 single-thread latency.
        latency_invokes: invokes for the latency median (after 20 warm-up).
        compare_dense: also convert dense float32 to report the size ratio.
        write_report_json: also write `<path>.json` with the report (the
            runner reads its `op_resolver`).
        optimize: `"latency"`, `"size"` or `"sparse"` (see above).
        seed: seed for the default noise inputs.

    Returns:
        An `ExportReport`.

    Raises:
        TypeError: `model` is not a Keras 3 model, still has SparseWrapper
            layers, or inputs have the wrong type.
        ValueError: unknown precision or `optimize`, `int8_full` without
            representative data, or layers without a builtin lowering.
        ExportVerificationError: no correct configuration was found.

    Example:

    ```python
    model = keras_sparse.strip(model)
    report = tflite_export.export_inference(
        model, "mlp_int8.tflite", precision="int8_full",
        representative_data=x_train[:200])
    print(report.to_markdown())
    ```
    """
    check_model(model, "export_inference")
    path = check_output_path(path)
    _convert.check_precision(precision)
    _convert.check_calibration(precision, representative_data)
    if optimize not in OPTIMIZE:
        raise ValueError(f"`optimize` must be one of {list(OPTIMIZE)}. "
                         f"Received: optimize={optimize!r}.")
    if optimize == "latency" and (not isinstance(latency_invokes, int)
                                  or latency_invokes < 1):
        raise ValueError("`latency_invokes` must be a positive int. "
                         f"Received: {latency_invokes!r}.")
    if sample_inputs is None:
        inputs = _default_samples(model, representative_data, num_samples,
                                  seed)
    else:
        inputs = _as_input_list(sample_inputs, model, "sample_inputs")
    reference = _keras_outputs(model, inputs)

    notes: list[str] = []
    converted = _convert.convert(model, precision, sparsity=True,
                                 representative_data=representative_data)
    candidates = [(converted, "")]
    if precision.startswith("int8"):
        # The converter writes int8 1x4-block weights element-wise CSR;
        # BSR 1x4 (the float32 layout) is less than half the index bytes.
        rewritten, names = _reencode.reencode_int8_blocks(converted)
        if names:
            candidates.insert(0, (rewritten, (
                f"{len(names)} int8 weight tensor(s) with 1x4 blocks "
                "re-encoded from the converter's element-wise CSR to BSR 1x4 "
                "(expanded by DENSIFY at load, like the CSR they replace).")))
    attempt_log = []
    for data, how in candidates:
        resolver, attempts = _verify.verify(data, inputs, reference,
                                            precision)
        attempt_log += [dict(dataclasses.asdict(a), sparse_encoding=True,
                             reencoded=bool(how)) for a in attempts]
        label = "re-encoded sparse" if how else "sparse"
        for a in attempts:
            if not a.ok:
                why = a.error or (f"max abs err {a.max_abs_err:.3g} > "
                                  f"tolerance {a.tolerance:.3g}")
                notes.append(f"{label} {precision} under the '{a.resolver}' "
                             f"interpreter configuration is incorrect "
                             f"({why}).")
        if resolver is not None:
            if how:
                notes.append(how)
            break
    if resolver == "builtin_without_default_delegates":
        notes.append(
            "Verified with the builtin op resolver without default delegates "
            "(XNNPACK off): use OpResolverType."
            "BUILTIN_WITHOUT_DEFAULT_DELEGATES on device.")
    if resolver is None:
        if not allow_dense_fallback:
            raise _verify.ExportVerificationError(
                f"The sparse {precision} export of '{model.name}' does not "
                f"match Keras in any interpreter configuration: {notes}. "
                "Nothing was written; pass allow_dense_fallback=True to "
                "export without sparse encoding.")
        data = _convert.convert(model, precision, sparsity=False,
                                representative_data=representative_data)
        resolver, attempts = _verify.verify(data, inputs, reference,
                                            precision)
        attempt_log += [dict(dataclasses.asdict(a), sparse_encoding=False,
                             reencoded=False) for a in attempts]
        if resolver is None:
            raise _verify.ExportVerificationError(
                f"The {precision} export of '{model.name}' does not match "
                f"Keras, with or without sparse encoding: {attempt_log}. "
                "Nothing was written.")
        fallback = ("Fell back to dense (non-sparse-encoded) weights because "
                    "no runtime configuration ran the sparse encoding "
                    "correctly: the file has no sparse tensors.")
        if precision == "float16" and _has_block_float16(converted):
            fallback += (" Known converter limitation (TF 2.21 converter, "
                         "LiteRT 2.3): block-sparse float16 weights are "
                         "written BSR and fed to DEQUANTIZE without a "
                         "DENSIFY op, which reads them as dense and yields "
                         "NaN/garbage. Unstructured float16 (CSR + DENSIFY) "
                         "is not affected; for small block-sparse files use "
                         "float32 (BSR 1x4) or int8.")
        notes.append(fallback)
        warnings.warn(f"export_inference('{path}', precision={precision!r}): "
                      + fallback, UserWarning, stacklevel=2)
    choice, dense_attempts, dense_winner = _choose_encoding(
        model, precision, representative_data, inputs, reference, optimize,
        latency_invokes, data, resolver)
    attempt_log += [dict(dataclasses.asdict(a), sparse_encoding=False,
                         reencoded=False) for a in dense_attempts]
    if dense_winner is not None:
        data, resolver = dense_winner
        attempts = dense_attempts
    notes.append(choice["reason"])
    passed = [a for a in attempts if a.ok][0]
    # The resolver requirement travels inside the file (runner reads it);
    # metadata does not change what the interpreter executes.
    data = add_metadata(data, inference_metadata(resolver, precision))
    summary = _inspect.inspect_flatbuffer(data)
    dense_bytes = None
    if compare_dense:
        dense_bytes = len(_convert.convert(model, "float32", sparsity=False))
    latency = None
    if measure_latency:
        latency = choice.get(f"{choice['chosen']}_latency_us")
        if latency is None:
            latency = _verify.measure_latency(data, resolver,
                                              num_invokes=latency_invokes)
    report = ExportReport(
        path=path,
        precision=precision,
        num_bytes=len(data),
        dense_float32_bytes=dense_bytes,
        size_ratio=(len(data) / dense_bytes) if dense_bytes else None,
        sparse_encoding=bool(summary.sparse_tensors),
        sparse_tensors=[t.to_dict() for t in summary.sparse_tensors],
        operators=summary.operators,
        runtime_path=summary.runtime_path,
        op_resolver=resolver,
        max_abs_err=float(passed.max_abs_err),
        tolerance=float(passed.tolerance),
        num_samples=int(len(inputs[0])),
        latency_us=latency,
        notes=notes,
        attempts=attempt_log,
        encoding_choice=choice,
    )
    atomic_write_bytes(path, data)
    if write_report_json:
        atomic_write_bytes(path + ".json", report.to_json().encode())
    return report


def _choose_encoding(model, precision, representative_data, inputs, reference,
                     optimize, latency_invokes, sparse_content, sparse_resolver):
    """Which encoding `export_inference` writes, sparse or dense, and why.

    Returns:
        `(choice, dense_attempts, dense_winner)`: `choice` is the report's
        `encoding_choice` dict; `dense_attempts` the verification attempts
        of the dense file (empty if it was not verified); `dense_winner` is
        `(dense_content, dense_resolver)` when the dense file is to be
        written, else None.
    """
    choice = {"optimize": optimize, "chosen": "sparse", "reason": "",
              "sparse_bytes": len(sparse_content), "dense_bytes": None,
              "sparse_latency_us": None, "dense_latency_us": None}
    if not _inspect.inspect_flatbuffer(sparse_content).sparse_tensors:
        choice.update(chosen="dense", sparse_bytes=None,
                      dense_bytes=len(sparse_content),
                      reason="Encoding: dense (the file has no sparse tensors).")
        return choice, [], None
    if optimize == "sparse":
        choice["reason"] = "Encoding: sparse (optimize='sparse' keeps it)."
        return choice, [], None
    dense = _convert.convert(model, precision, sparsity=False,
                             representative_data=representative_data)
    choice["dense_bytes"] = len(dense)
    smaller = "sparse" if len(sparse_content) <= len(dense) else "dense"
    sizes = f"{len(sparse_content)} bytes sparse vs {len(dense)} dense"
    if optimize == "size" and smaller == "sparse":
        choice["reason"] = f"Encoding: sparse, the smaller file ({sizes})."
        return choice, [], None
    resolver, attempts = _verify.verify(dense, inputs, reference, precision)
    if resolver is None:
        choice["reason"] = ("Encoding: sparse; the dense file does not match "
                            "Keras in any interpreter configuration.")
        return choice, attempts, None
    if optimize == "size":
        choice.update(chosen="dense",
                      reason=f"Encoding: dense, the smaller file ({sizes}).")
        return choice, attempts, (dense, resolver)
    t_sparse, t_dense = _verify.compare_latency(
        [(sparse_content, sparse_resolver), (dense, resolver)],
        num_invokes=latency_invokes)
    choice.update(sparse_latency_us=t_sparse, dense_latency_us=t_dense)
    times = (f"batch-1 single-thread medians {t_sparse:.1f} us sparse vs "
             f"{t_dense:.1f} us dense, measured side by side; {sizes}")
    if abs(t_sparse - t_dense) <= max(TIE_TOLERANCE * t_dense, TIE_FLOOR_US):
        chosen, why = smaller, "a tie in latency, the smaller file"
    elif t_sparse < t_dense:
        chosen, why = "sparse", "the faster file"
    else:
        chosen, why = "dense", "the faster file"
    choice.update(chosen=chosen, reason=f"Encoding: {chosen}, {why} ({times}).")
    return choice, attempts, ((dense, resolver) if chosen == "dense" else None)
