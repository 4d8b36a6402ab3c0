"""Run a `.tflite` model in ai-edge-litert and check it against Keras.

Known runtime faults are detected here, by running, not by version tables:
sparse + quantized FULLY_CONNECTED under the default XNNPACK delegate either
fails to prepare or returns wrong numbers, and a block-sparse float16 weight
read through DEQUANTIZE yields NaNs. Each interpreter configuration is tried
in order and the first that matches Keras within the precision's tolerance
wins.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from tflite_export._interpreter import RESOLVERS, dequantize, new_interpreter, quantize

# (atol, rtol): an output passes when max|tflite - keras| <= atol + rtol *
# max|keras|. int8 tolerances are deliberately loose (quantization noise is
# ~1% of the output range) but catch the XNNPACK fault (errors of 10x-50x).
TOLERANCES = {
    "float32": (1e-5, 1e-4),
    "float16": (1e-3, 1e-2),
    "int8_dynamic": (1e-3, 6e-2),
    "int8_full": (1e-3, 2e-1),
}


class ExportVerificationError(RuntimeError):
    """The converted model does not reproduce Keras in any interpreter
    configuration; nothing was written."""


@dataclasses.dataclass
class Attempt:
    """One interpreter configuration tried during verification."""

    resolver: str
    ok: bool
    max_abs_err: float | None
    tolerance: float | None
    error: str | None = None


def make_interpreter(model_content: bytes, resolver: str = "default",
                     num_threads: int = 1):
    """An allocated LiteRT interpreter for `model_content` (see
    `tflite_export._interpreter.new_interpreter`)."""
    return new_interpreter(model_content=model_content, resolver=resolver,
                           num_threads=num_threads)


def run_batch1(interp, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Runs `interp` sample by sample (batch 1) and stacks the outputs."""
    in_d = interp.get_input_details()
    out_d = interp.get_output_details()
    n = len(inputs[0])
    outs: list[list[np.ndarray]] = [[] for _ in out_d]
    for i in range(n):
        for d, x in zip(in_d, inputs):
            interp.set_tensor(d["index"], quantize(x[i:i + 1], d))
        interp.invoke()
        for k, d in enumerate(out_d):
            outs[k].append(dequantize(interp.get_tensor(d["index"]), d))
    return [np.concatenate(o, axis=0) for o in outs]


def parity_error(tfl_outputs, keras_outputs) -> tuple[float, float]:
    """(max abs error, max abs reference) over all outputs; NaN -> inf."""
    err, ref = 0.0, 0.0
    for a, b in zip(tfl_outputs, keras_outputs):
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        e = float(np.max(d)) if d.size else 0.0
        err = max(err, e if np.isfinite(e) else float("inf"))
        ref = max(ref, float(np.max(np.abs(b))) if b.size else 0.0)
    return err, ref


def verify(model_content: bytes, inputs: Sequence[np.ndarray],
           reference: Sequence[np.ndarray], precision: str,
           resolvers: Sequence[str] = RESOLVERS) -> tuple[str | None, list[Attempt]]:
    """Finds the first interpreter configuration that matches `reference`.

    Args:
        model_content: flatbuffer bytes.
        inputs: one array per model input, first axis = samples.
        reference: Keras outputs for `inputs`.
        precision: key of `TOLERANCES`.
        resolvers: configurations to try, in order.

    Returns:
        `(resolver or None, attempts)`.
    """
    atol, rtol = TOLERANCES[precision]
    attempts = []
    for name in resolvers:
        try:
            interp = make_interpreter(model_content, name)
            outs = run_batch1(interp, inputs)
        except Exception as e:  # runtime faults surface as RuntimeError
            attempts.append(Attempt(name, False, None, None,
                                    f"{type(e).__name__}: {e}"[:300]))
            continue
        err, ref = parity_error(outs, reference)
        tol = atol + rtol * ref
        ok = err <= tol
        attempts.append(Attempt(name, ok, err, tol))
        if ok:
            return name, attempts
    return None, attempts


def measure_latency(model_content: bytes, resolver: str = "default",
                    num_invokes: int = 200, warmup: int = 20,
                    num_threads: int = 1) -> float:
    """Median batch-1 `invoke()` time in microseconds (single thread)."""
    interp = _timed_interpreter(model_content, resolver, num_threads)
    for _ in range(warmup):
        interp.invoke()
    times = np.empty(num_invokes)
    for i in range(num_invokes):
        t0 = time.perf_counter()
        interp.invoke()
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def _timed_interpreter(model_content: bytes, resolver: str, num_threads: int):
    interp = make_interpreter(model_content, resolver, num_threads)
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        shape = [1 if s < 0 else int(s) for s in d["shape_signature"]] or [1]
        x = rng.standard_normal(shape).astype(np.float32)
        interp.set_tensor(d["index"], quantize(x, d))
    return interp


def compare_latency(files: Sequence[tuple[bytes, str]], num_invokes: int = 200,
                    warmup: int = 20, rounds: int = 10,
                    num_threads: int = 1) -> list[float]:
    """Median batch-1 `invoke()` times (microseconds) of several files, side by side.

    The files run in alternated rounds in one process (the order flips every
    round), so load from other processes falls on all of them alike; each
    gets `num_invokes` timed invokes in all, after `warmup` untimed ones.

    Args:
        files: `(model_content, resolver)` pairs.
        num_invokes: timed invokes per file.
        warmup: untimed invokes per file first.
        rounds: alternation rounds.
        num_threads: interpreter threads.

    Returns:
        The median invoke time of each file, in the order given.
    """
    interps = [_timed_interpreter(c, r, num_threads) for c, r in files]
    medians = alternated_medians([interp.invoke for interp in interps],
                                 rounds, max(1, num_invokes // rounds), warmup)
    return [m * 1e6 for m in medians]


def alternated_medians(calls: Sequence, rounds: int, per_round: int,
                       warmup: int) -> list[float]:
    """Median wall time (seconds) of each zero-argument callable, side by side.

    Each runs `warmup` untimed calls, then `rounds` alternated rounds of
    `per_round` timed calls, in one process with the order flipped every
    round, so load from other processes falls on all of them alike.
    """
    for call in calls:
        for _ in range(warmup):
            call()
    times: list[list[float]] = [[] for _ in calls]
    order = list(range(len(calls)))
    for _ in range(rounds):
        for i in order:
            for _ in range(per_round):
                t0 = time.perf_counter()
                calls[i]()
                times[i].append(time.perf_counter() - t0)
        order.reverse()
    return [float(np.median(t)) for t in times]
