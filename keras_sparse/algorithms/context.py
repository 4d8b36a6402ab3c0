"""What the engine hands a policy, and what a policy hands back.

`Target` names one masked weight of the model; `SetupContext` is what a
policy sees when a run starts, `UpdateContext` what it sees at one mask
update, and `LayerResult` what it returns for one weight. Contexts are
frozen: a policy reads them and returns its results, it never stores
scratch state between hooks on itself.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_sparse.masks import GROUP, Structure

__all__ = ["LayerResult", "SetupContext", "Target", "UpdateContext"]


@dataclass
class Target:
    """One masked weight an updater manages.

    Attributes:
        key: `"<layer>/<weight>"`, used in logs.
        weight: the kernel variable.
        mask: its mask variable.
        sparsity: the wrapper's configured sparsity for it.
        state: where the updater persists this weight's training state
            (`SparseWrapper.training_state(name)`, saved with the model), or
            None to keep it in memory only.
        block_size: the wrapper's `block_size` (the blocks a `"block"`
            algorithm keeps in this weight).
    """

    key: str
    weight: Any
    mask: Any
    sparsity: float
    state: MutableMapping[str, Any] | None = None
    block_size: int = GROUP


@dataclass(frozen=True)
class SetupContext:
    """What a policy sees when a run starts (`Updater.setup`).

    Attributes:
        targets: the masked weights, in a fixed order (index `i` below).
        weights: their current values, as NumPy arrays.
        masks: their current masks, as float32 NumPy arrays.
        total_steps: the planned training length, or None when unknown.
        bounds: `(start, stop)` of the update schedule, resolved.
        state: per weight, the policy's persistent state slots (restored
            from a saved model, or the policy's fresh values).
        structures: per weight, the `keras_sparse.masks.Structure` its
            updates keep (see `UpdateContext`).
    """

    targets: tuple[Target, ...]
    weights: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]
    total_steps: int | None
    bounds: tuple[int, int]
    state: tuple[Mapping[str, np.ndarray], ...] = ()
    structures: tuple[Structure, ...] = ()

    @property
    def keys(self) -> list[str]:
        """`"<layer>/<weight>"` of every target."""
        return [t.key for t in self.targets]


@dataclass(frozen=True)
class UpdateContext:
    """What a policy sees at one mask update.

    Every array is read once by the engine before any variable changes.

    Attributes:
        step: the optimizer step of this update.
        weights: per weight, its values (NumPy).
        masks: per weight, its float32 mask (NumPy).
        grads: per weight, the dense gradient of the update step, or None
            (the policy did not ask for gradients).
        drop_fraction: the injected drop-fraction schedule at `step`.
        seed: the algorithm's seed (`keras_sparse.masks.seed_for(seed,
            step, i)` gives weight `i` its generator).
        structure: the mask structure kept (`keras_sparse.masks.STRUCTURES`).
        structures: per weight, the `keras_sparse.masks.Structure` its
            update keeps: `structure` with the weight's block size, or
            unstructured for a weight that cannot be grouped
            (`keras_sparse.masks.weight_structure`).
        state: per weight, the policy's persistent state before this update.
        optimizer: the optimizer whose slots the engine resets (or None).
        scratch: what the policy's `prepare` returned for this update:
            values computed once, on the engine's thread, that the
            per-weight hooks read (they may run on worker threads).
    """

    step: int
    weights: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]
    grads: tuple[np.ndarray | None, ...]
    drop_fraction: float
    seed: int
    structure: str
    structures: tuple[Structure, ...] = ()
    state: tuple[Mapping[str, np.ndarray], ...] = ()
    optimizer: Any = None
    scratch: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerResult:
    """What a policy's `finish` returns for one weight.

    Attributes:
        weight: the weight's new values.
        mask: its new mask.
        stats: the policy's own per-weight figures (e.g. NeurRev's
            `awakened`); the engine adds them to the update's statistics,
            and `DynamicSparseTraining` logs their sum over weights.
        state: persistent state slots that changed (merged into the
            weight's state by the engine, on its own thread, and saved).
        new_connections: from `Policy.finish_model` only: entries grown
            outside prune-and-grow (e.g. a global regrowth), 1.0 where new;
            their optimizer moments are reset and they count in `regrown`.
    """

    weight: np.ndarray
    mask: np.ndarray
    stats: Mapping[str, float] = field(default_factory=dict)
    state: Mapping[str, np.ndarray] = field(default_factory=dict)
    new_connections: np.ndarray | None = None
