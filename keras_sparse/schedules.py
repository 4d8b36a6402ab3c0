"""Serializable schedules for sparse training: when to update masks, and how much.

All schedules are functions of the optimizer step (`optimizer.iterations`),
never of a Python counter, so they give the same answer with
`steps_per_execution > 1` and after resuming from a checkpoint. Step
arguments that are floats in (0, 1] are fractions of the total number of
training steps and are resolved with `resolve_step`.

Reference:
    - Evci et al., "Rigging the Lottery", ICML 2020 (google-research/rigl
      defaults: update every 100 steps, drop fraction 0.3 with cosine decay,
      stop at 75% of training).
    - Zhu and Gupta, "To prune, or not to prune", 2017 (cubic schedule).
    - Yuan et al., "MEST", NeurIPS 2021 (stage-wise decayed mutation ratio;
      `PiecewiseConstant` holds its Elastic Mutation stages).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

__all__ = [
    "ConstantFraction",
    "CosineDecay",
    "CubicSparsity",
    "PiecewiseConstant",
    "StagewiseDecay",
    "UpdateSchedule",
    "resolve_step",
    "validate_boundaries",
    "validate_floor",
    "validate_fraction",
]


def validate_fraction(value, what: str, low_open: bool = True, high_open: bool = True) -> float:
    """Checks that `value` is a real number in (0, 1) (ends as requested).

    Raises:
        TypeError: not a real number.
        ValueError: outside the interval.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{what}` must be a float. Received: {value!r} of type {type(value).__name__}.")
    v = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    ok = math.isfinite(v) and (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        raise ValueError(f"`{what}` must be in {lo}0, 1{hi}. Received: {value!r}.")
    return v


def validate_floor(value, what: str, ceiling: float, ceiling_name: str) -> float:
    """Checks that `value` is a real number in `[0, ceiling]` (a decay's floor).

    Raises:
        ValueError: not a real number, or outside `[0, ceiling]`; the message
            names `ceiling_name` and its value.
    """
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not 0.0 <= float(value) <= float(ceiling)):
        raise ValueError(f"`{what}` must be a float in [0, {ceiling_name}={ceiling}]. Received: {value!r}.")
    return float(value)


def validate_boundaries(boundaries, what: str = "boundaries") -> tuple[float, ...]:
    """Checks that `boundaries` is a sequence of strictly increasing fractions in (0, 1).

    Returns:
        The boundaries as a tuple of Python floats (may be empty).

    Raises:
        TypeError: not a sequence of real numbers.
        ValueError: a value outside (0, 1), or not strictly increasing.
    """
    if not isinstance(boundaries, (list, tuple, np.ndarray)):
        raise TypeError(
            f"`{what}` must be a list of fractions of training in (0, 1), "
            f"strictly increasing. Received: {boundaries!r} of type {type(boundaries).__name__}."
        )
    out = tuple(validate_fraction(b, f"{what}[{i}]") for i, b in enumerate(boundaries))
    if any(b >= c for b, c in zip(out, out[1:])):
        raise ValueError(
            f"`{what}` must be strictly increasing fractions in (0, 1). Received: {list(boundaries)!r}."
        )
    return out


def _validate_step(value, what: str, allow_fraction: bool = True):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"`{what}` must be an int step >= 0 or a float fraction of training "
            f"in (0, 1]. Received: {value!r} of type {type(value).__name__}."
        )
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"`{what}` must be >= 0. Received: {value!r}.")
        return int(value)
    if not (allow_fraction and 0.0 < float(value) <= 1.0):
        raise ValueError(
            f"`{what}` as a float is a fraction of training and must be in "
            f"(0, 1]. Received: {value!r}. Pass an int for an absolute step."
        )
    return float(value)


def resolve_step(value: int | float, total_steps: int | None, what: str = "step") -> int:
    """An int step, or a float fraction of `total_steps`, as an absolute step.

    Raises:
        ValueError: a fraction without `total_steps`, or a step past training.
    """
    if isinstance(value, float):
        if total_steps is None:
            raise ValueError(
                f"`{what}`={value} is a fraction of training, but the total "
                "number of steps is unknown. Pass `total_steps` to the callback."
            )
        return int(round(value * total_steps))
    if total_steps is not None and value > total_steps:
        raise ValueError(
            f"`{what}`={value} is beyond the end of training ({total_steps} "
            "steps). Accepted: an int <= total steps, or a float fraction in (0, 1]. "
            "For training spread over several `fit` calls, pass the whole "
            "length as `total_steps=` to the callback."
        )
    return int(value)


class _Schedule:
    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_sparse")
class UpdateSchedule(_Schedule):
    """When masks change: every `interval` steps in `[start, stop]`.

    An update happens after the optimizer step that brings
    `optimizer.iterations` to `t` when `t % interval == 0` and
    `start < t <= stop` (RigL's rule).

    Args:
        interval: steps between updates (int >= 1). RigL default 100.
        start: first step (int) or fraction of training (float).
        stop: last step (int) or fraction of training (float, default 0.75).
            Must be after `start`: checked here when both are ints or both
            fractions, in `bounds` (once the length of training is known)
            when one is an int and the other a fraction.

    Raises:
        TypeError, ValueError: invalid interval, start or stop, or a `stop`
            not after `start`.

    Example:

    >>> s = keras_sparse.schedules.UpdateSchedule(100, stop=0.75)
    >>> s.is_update_step(200, total_steps=1000)
    True
    """

    def __init__(self, interval: int = 100, start: int | float = 0, stop: int | float = 0.75):
        if isinstance(interval, bool) or not isinstance(interval, (int, np.integer)) or interval < 1:
            raise ValueError(
                f"`update_interval` must be an int >= 1 (steps between mask "
                f"updates). Received: {interval!r}."
            )
        self.interval = int(interval)
        self.start = _validate_step(start, "start_step")
        self.stop = _validate_step(stop, "stop_step")
        if isinstance(self.start, float) == isinstance(self.stop, float) and self.stop <= self.start:
            kind = "fractions of training" if isinstance(self.start, float) else "steps"
            raise ValueError(
                f"`stop_step` must be after `start_step` (updates happen at steps t "
                f"with start_step < t <= stop_step). Received: start_step={start!r}, "
                f"stop_step={stop!r} (both {kind}). Accepted: start_step < stop_step."
            )

    def bounds(self, total_steps: int | None) -> tuple[int, int]:
        """`(start, stop)` as absolute steps; validates them against training length.

        Raises:
            ValueError: a fraction with unknown `total_steps`, a step past
                `total_steps`, or `stop <= start` once resolved (no update
                could ever happen).
        """
        start = resolve_step(self.start, total_steps, "start_step") if self.start else 0
        stop = resolve_step(self.stop, total_steps, "stop_step")
        if stop <= start:
            raise ValueError(
                f"`stop_step` must be after `start_step`, but with {total_steps} "
                f"training steps they resolve to stop_step={stop} (from {self.stop!r}) "
                f"<= start_step={start} (from {self.start!r}), so no update could "
                "happen. Accepted: start_step < stop_step."
            )
        return start, stop

    def count_updates(self, previous: int, step: int, total_steps: int | None = None) -> int:
        """Number of update steps `t` in `(previous, step]` (each a multiple of `interval`).

        Raises:
            ValueError: as `bounds`.
        """
        start, stop = self.bounds(total_steps)
        lo, hi = max(previous, start, 0), min(step, stop)
        return max(0, hi // self.interval - lo // self.interval) if hi > lo else 0

    def is_update_step(self, step: int, total_steps: int | None = None) -> bool:
        start, stop = self.bounds(total_steps)
        return step % self.interval == 0 and start < step <= stop

    def last_update_in(self, previous: int, step: int, total_steps: int | None = None) -> int | None:
        """Latest update step in `(previous, step]`, or None.

        Used with `steps_per_execution > 1`, where the callback sees the
        iteration count only every few steps.
        """
        start, stop = self.bounds(total_steps)
        hi = min(step, stop)
        t = hi - hi % self.interval
        if t > previous and t > start and t > 0:
            return t
        return None

    def get_config(self):
        return {"interval": self.interval, "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package="keras_sparse")
class ConstantFraction(_Schedule):
    """A constant value (e.g. drop fraction) at every step."""

    def __init__(self, value: float):
        self.value = validate_fraction(value, "drop_fraction")

    def __call__(self, step: int, start: int, stop: int) -> float:
        return self.value

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="keras_sparse")
class CosineDecay(_Schedule):
    """Cosine decay from `initial` at `start` to `initial * alpha` at `stop`.

    `f(t) = initial * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * (t - start) / (stop - start))))`,
    as RigL's `drop_fraction_anneal="cosine"` (alpha 0).

    Args:
        initial: value at `start`, in (0, 1).
        alpha: final value as a fraction of `initial`.
    """

    def __init__(self, initial: float = 0.3, alpha: float = 0.0):
        self.initial = validate_fraction(initial, "drop_fraction")
        self.alpha = validate_fraction(alpha, "alpha", low_open=False, high_open=False)

    def __call__(self, step: int, start: int, stop: int) -> float:
        span = max(stop - start, 1)
        progress = min(max((step - start) / span, 0.0), 1.0)
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.initial * (self.alpha + (1.0 - self.alpha) * cos)

    def get_config(self):
        return {"initial": self.initial, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="keras_sparse")
class StagewiseDecay(_Schedule):
    """Piecewise-constant decay: `initial * factor**k` after the k-th boundary.

    MEST's Elastic Mutation decays the mutation ratio in stages.

    Args:
        initial: value before the first boundary, in (0, 1).
        boundaries: fractions of the `[start, stop]` span, increasing in (0, 1).
        factor: multiplier at each boundary, in (0, 1].
    """

    def __init__(self, initial: float = 0.3, boundaries: Sequence[float] = (0.5, 0.75), factor: float = 0.5):
        self.initial = validate_fraction(initial, "drop_fraction")
        self.boundaries = tuple(float(validate_fraction(b, "boundaries")) for b in boundaries)
        if list(self.boundaries) != sorted(self.boundaries):
            raise ValueError(f"`boundaries` must be increasing. Received: {boundaries!r}.")
        self.factor = validate_fraction(factor, "factor", high_open=False)

    def __call__(self, step: int, start: int, stop: int) -> float:
        progress = (step - start) / max(stop - start, 1)
        k = sum(progress >= b for b in self.boundaries)
        return self.initial * self.factor**k

    def get_config(self):
        return {"initial": self.initial, "boundaries": list(self.boundaries), "factor": self.factor}


@keras.saving.register_keras_serializable(package="keras_sparse")
class PiecewiseConstant(_Schedule):
    """`values[k]` from the k-th boundary on (`values[0]` before the first).

    A stage starts where `(step - start) / (stop - start)` reaches its
    boundary (a step exactly on a boundary belongs to the new stage). MEST's
    Elastic Mutation uses it with `start=0, stop=total_steps`, i.e. with
    boundaries that are fractions of training.

    Args:
        values: one value per stage, each in [0, 1) (0: nothing that stage).
        boundaries: `len(values) - 1` fractions, strictly increasing in (0, 1).

    Raises:
        TypeError, ValueError: invalid values or boundaries, or a count mismatch.

    Example:

    >>> f = keras_sparse.schedules.PiecewiseConstant([0.2, 0.1, 0.0], [0.5625, 0.75])
    >>> f(900, 0, 1600)
    0.1
    """

    def __init__(self, values: Sequence[float], boundaries: Sequence[float] = ()):
        if not isinstance(values, (list, tuple, np.ndarray)) or len(values) == 0:
            raise TypeError(
                "`values` must be a non-empty list of floats in [0, 1). "
                f"Received: {values!r}."
            )
        self.values = tuple(validate_fraction(v, f"values[{i}]", low_open=False)
                            for i, v in enumerate(values))
        self.boundaries = validate_boundaries(boundaries)
        if len(self.boundaries) != len(self.values) - 1:
            raise ValueError(
                f"{len(self.values)} stage values need exactly {len(self.values) - 1} "
                f"boundaries (one fewer). Received: values={list(values)!r}, boundaries={list(boundaries)!r}."
            )

    def stage(self, step: int, start: int, stop: int) -> int:
        """Index of the stage `step` is in."""
        progress = (step - start) / max(stop - start, 1)
        return sum(progress >= b for b in self.boundaries)

    def __call__(self, step: int, start: int, stop: int) -> float:
        return self.values[self.stage(step, start, stop)]

    def get_config(self):
        return {"values": list(self.values), "boundaries": list(self.boundaries)}


@keras.saving.register_keras_serializable(package="keras_sparse")
class CubicSparsity(_Schedule):
    """Zhu and Gupta's cubic sparsity schedule.

    `s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))**3` for `t` in
    `[t0, t1]`; `s_i` before, `s_f` after.

    Args:
        initial_sparsity: `s_i`, in [0, 1).
        final_sparsity: `s_f`, in [0, 1), >= `s_i`.
    """

    def __init__(self, initial_sparsity: float = 0.0, final_sparsity: float = 0.9):
        from keras_sparse.masks import validate_sparsity

        self.initial_sparsity = validate_sparsity(initial_sparsity, "initial_sparsity")
        self.final_sparsity = validate_sparsity(final_sparsity, "final_sparsity")
        if self.final_sparsity < self.initial_sparsity:
            raise ValueError(
                f"`final_sparsity` ({final_sparsity}) must be >= `initial_sparsity` "
                f"({initial_sparsity})."
            )

    def __call__(self, step: int, start: int, stop: int) -> float:
        if step <= start:
            return self.initial_sparsity
        if step >= stop:
            return self.final_sparsity
        progress = (step - start) / (stop - start)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity}
