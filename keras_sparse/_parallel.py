"""Per-weight NumPy work on a thread pool when the arrays are large.

Mask updates do the same NumPy work (selections, scatters, counts) on every
masked weight independently. NumPy releases the GIL inside these kernels, so
on a multi-core CPU the weights of a large model can be processed at once.
Results are returned in input order and never depend on the thread count.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import TypeVar
from collections.abc import Callable, Sequence

__all__ = ["PARALLEL_ABOVE", "map_weights"]

T = TypeVar("T")
R = TypeVar("R")

PARALLEL_ABOVE = 1 << 20
"""Work over at least this many entries in all runs on a thread pool."""


def map_weights(fn: Callable[[T], R], items: Sequence[T], total_size: int) -> list[R]:
    """`[fn(item) for item in items]`, on threads when `total_size >= PARALLEL_ABOVE`.

    Args:
        fn: work on one weight; must not change shared state other than its
            own weight's slot.
        items: one entry per weight.
        total_size: entries over all weights (decides whether threads pay).
    """
    workers = min(len(items), os.cpu_count() or 1)
    if workers < 2 or total_size < PARALLEL_ABOVE:
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
