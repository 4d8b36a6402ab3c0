"""Lottery tickets: iterative magnitude pruning with rewinding."""

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_sparse  # noqa: E402
from keras_sparse import lottery, pruning  # noqa: E402



def mlp():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, activation="relu", name="h")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def xy(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)


def compiled(model):
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


@pytest.mark.full
@pytest.mark.parametrize("rewind_step", [0, 3])
def test_rewinding_restores_saved_weights_on_kept_entries(rewind_step):
    x, y = xy()
    sparse = compiled(keras_sparse.sparsify(mlp(), 0.0, "uniform", keep_dense=None))
    init = [w.copy() for w in sparse.get_weights()]
    ticket = lottery.find_ticket(sparse, dict(x=x, y=y, epochs=2, batch_size=16),
                                 rounds=3, prune_per_round=0.3, rewind_step=rewind_step)
    assert ticket.model is sparse
    if rewind_step == 0:
        for a, b in zip(init, ticket.rewind_weights):
            np.testing.assert_array_equal(a, b)
    else:
        assert any(not np.array_equal(a, b) for a, b in zip(init, ticket.rewind_weights))
    saved = dict(zip([v.path for v in sparse.weights], ticket.rewind_weights))
    for wrapper in keras_sparse.sparse_wrappers(sparse):
        for name, w, m in wrapper.masked_weights:
            kept = m.numpy() == 1
            np.testing.assert_array_equal(w.numpy()[kept], saved[w.path][kept])
            assert np.all(w.numpy()[~kept] == 0)
            np.testing.assert_array_equal(m.numpy(), ticket.masks[f"{wrapper.name}/{name}"])
    np.testing.assert_array_equal(sparse.get_layer("bn").get_weights()[0], saved[sparse.get_layer("bn").weights[0].path])
    expected = 1 - 0.7 ** 3
    assert abs(ticket.sparsity - expected) < 0.01
    assert [h["round"] for h in ticket.history] == [1, 2, 3]
    sparsities = [h["sparsity"] for h in ticket.history]
    assert sparsities == sorted(sparsities)


@pytest.mark.full
def test_ticket_apply_to_fresh_model_and_save_load(tmp_path):
    x, y = xy()
    ticket = lottery.find_ticket(compiled(mlp()), dict(x=x, y=y, epochs=1, batch_size=32),
                                 rounds=2, prune_per_round=0.5)
    path = ticket.save(tmp_path / "ticket")
    loaded = lottery.LotteryTicket.load(path)
    fresh = keras_sparse.sparsify(mlp(), 0.0, "uniform", keep_dense=None)
    loaded.apply(fresh)
    for a, b in zip(fresh.get_weights(), ticket.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for k, m in pruning.get_masks(fresh).items():
        np.testing.assert_array_equal(m, ticket.masks[k])


@pytest.mark.full
def test_masks_are_nested_across_rounds():
    x, y = xy()
    seen = []
    lottery.find_ticket(compiled(mlp()), dict(x=x, y=y, epochs=1, batch_size=32), rounds=3,
                        on_round_end=lambda r, m: seen.append(pruning.get_masks(m)))
    for before, after in zip(seen, seen[1:]):
        for k in before:
            assert np.all(after[k] <= before[k])


@pytest.mark.parametrize(
    "kwargs, text",
    [({"rounds": 0}, "rounds"), ({"prune_per_round": 1.0}, "prune_per_round"),
     ({"rewind_step": -1}, "rewind_step"), ({"rewind_step": 10_000}, "not reached")],
)
def test_bad_input(kwargs, text):
    x, y = xy()
    args = dict(rounds=1, fit_kwargs=dict(x=x, y=y, epochs=1, batch_size=32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=text):
        lottery.find_ticket(compiled(mlp()), **args)


def test_uncompiled_model_is_rejected():
    with pytest.raises(ValueError, match="compiled"):
        lottery.find_ticket(mlp(), {}, rounds=1)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.98])
def test_imp_schedule_lands_on_the_sparsity_with_at_most_the_fraction(sparsity):
    rounds, fraction = lottery.imp_schedule(sparsity)
    assert 0 < fraction <= 0.2 + 1e-12
    assert abs((1 - fraction) ** rounds - (1 - sparsity)) < 1e-12
    # One round fewer would need more than 20% per round.
    assert rounds == 1 or 0.8 ** (rounds - 1) > 1 - sparsity


def test_imp_schedule_counts_rounds_by_hand():
    assert lottery.imp_schedule(0.9)[0] == 11  # 0.8**10 = 0.107 > 0.1 >= 0.8**11
    assert lottery.imp_schedule(0.5)[0] == 4  # 0.8**3 = 0.512 > 0.5
    assert lottery.imp_schedule(0.2) == (1, pytest.approx(0.2))
    assert lottery.imp_schedule(0.75, max_prune_per_round=0.5) == (2, pytest.approx(0.5))


def test_imp_schedule_continues_from_a_start_sparsity():
    rounds, fraction = lottery.imp_schedule(0.98, start_sparsity=0.95)
    assert rounds == 5  # 0.02 / 0.05 = 0.4; 0.8**4 = 0.41 > 0.4
    assert abs(0.05 * (1 - fraction) ** rounds - 0.02) < 1e-12


@pytest.mark.parametrize("kwargs, text", [
    (dict(sparsity=1.0), "`sparsity` must be in"),
    (dict(sparsity=0.0), "`sparsity` must be in"),
    (dict(sparsity=0.5, start_sparsity=0.6), "`sparsity` must be in"),
    (dict(sparsity=0.9, start_sparsity=-0.1), "`start_sparsity` must be in"),
    (dict(sparsity=0.9, max_prune_per_round=1.0), "`max_prune_per_round` must be in"),
    (dict(sparsity="0.9"), "`sparsity` must be a number"),
    (dict(sparsity=True), "`sparsity` must be a number"),
])
def test_imp_schedule_bad_input(kwargs, text):
    with pytest.raises(ValueError, match=text) as info:
        lottery.imp_schedule(**kwargs)
    assert "Received" in str(info.value)
