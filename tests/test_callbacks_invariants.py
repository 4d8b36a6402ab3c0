"""Invariants of every algorithm x structure during model.fit (Conv2D and Dense layers)."""

import numpy as np
import pytest

import keras_sparse as ks
from testing import GRADUAL, METHOD_STRUCTURES, Checker, algorithm, data, sparse_model


@pytest.mark.parametrize("method,structure", METHOD_STRUCTURES)
def test_invariants_during_fit(method, structure):
    model = sparse_model(method, structure, jit=False)
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
