"""Invariants of every algorithm x structure during model.fit (Conv2D and Dense layers)."""

import warnings

import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import masks as mm
from testing import GRADUAL, METHOD_STRUCTURES, METHODS, Checker, algorithm, data, sparse_model

BLOCK_METHODS = [m for m, s in METHOD_STRUCTURES if s == "block"]


@pytest.mark.parametrize("method,structure", METHOD_STRUCTURES)
def test_invariants_during_fit(method, structure):
    _check_invariants(method, structure, None)


@pytest.mark.parametrize("method", BLOCK_METHODS)
def test_every_block_method_keeps_1x16_blocks_and_the_fallback(method):
    # make_model: the conv kernel (3, 3, 4, 8) cannot hold 1x16 blocks and
    # falls back to unstructured; both Dense kernels keep 1x16 blocks.
    # (sparsify's note about it: tests/test_callbacks_training.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = sparse_model(method, "block", block_size=16)
    kinds = [w.structure_of(n) for w in ks.sparse_wrappers(model) for n, _, _ in w.masked_weights]
    assert kinds == [mm.Structure(), mm.Structure("block", 16), mm.Structure("block", 16)]
    _check_invariants(method, "block", model)


def test_block_methods_cover_every_method_but_chase():
    assert set(BLOCK_METHODS) == set(METHODS) - {"chase"}


def _check_invariants(method, structure, model):
    model = sparse_model(method, structure, jit=False) if model is None else model
    x, y = data()
    checker = Checker(structure)
    cb = ks.callbacks.DynamicSparseTraining(algorithm(method, structure))
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[cb, checker], verbose=0)
    counts = np.array(checker.history)
    if method in GRADUAL:
        final = 1 - counts[-1].sum() / sum(np.prod(m.shape) for w in cb.wrappers for _, _, m in w.masked_weights)
        assert final == pytest.approx(0.8, abs=0.02)
    elif method in ("dsr", "chase"):  # global reallocation across layers
        assert len(set(counts.sum(axis=1))) == 1  # total conserved, layers may trade
    else:
        assert (counts == counts[0]).all()  # exact per-layer conservation
    if method not in ("deep_r",):
        assert cb.algorithm.stats, "no update happened"
