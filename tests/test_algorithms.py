"""Argument checks of the sparse-training algorithms (`keras_sparse.algorithms`).

Every bad argument raises at construction, naming the argument, what was
received and what is accepted; the named callbacks check the same.
"""

import keras
import numpy as np
import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg
from testing import masks_of

NAN, INF = float("nan"), float("inf")

CASES = [
    # (class name, kwargs, error, fragments of the message)
    ("GraNet", dict(regeneration_rate=2.0), ValueError, ["`regeneration_rate`", "2.0", "(0, 1)"]),
    ("GraNet", dict(regeneration_rate="0.5"), TypeError, ["`regeneration_rate`", "'0.5'"]),
    ("GraNetST", dict(regeneration_rate=0.0), ValueError, ["`regeneration_rate`", "0.0"]),
    ("RigL", dict(start_step=0.9, stop_step=0.5), ValueError, ["start_step=0.9", "stop_step=0.5"]),
    ("SET", dict(start_step=100, stop_step=100), ValueError, ["start_step=100", "stop_step=100"]),
    ("RigL", dict(seed=1.5), TypeError, ["`seed`", "1.5"]),
    ("RigL", dict(seed=True), TypeError, ["`seed`", "True"]),
    ("MEST", dict(seed=-1), ValueError, ["`seed`", "-1"]),
    ("RigL", dict(update_interval=2.5), ValueError, ["update_interval", "2.5"]),
    ("NeurRev", dict(update_interval=True), ValueError, ["update_interval", "True"]),
    ("SET", dict(drop_fraction=1.0), ValueError, ["`drop_fraction`", "1.0"]),
    ("SET", dict(drop_fraction=NAN), ValueError, ["`drop_fraction`", "nan"]),
    ("DSR", dict(initial_threshold=NAN), ValueError, ["`initial_threshold`", "nan"]),
    ("DSR", dict(initial_threshold=INF), ValueError, ["`initial_threshold`", "inf"]),
    ("DSR", dict(initial_threshold=True), TypeError, ["`initial_threshold`", "True"]),
    ("DSR", dict(initial_threshold=0), ValueError, ["`initial_threshold`", "> 0"]),
    ("DeepR", dict(temperature=NAN), ValueError, ["`temperature`", "nan"]),
    ("DeepR", dict(temperature="1"), TypeError, ["`temperature`", "'1'"]),
    ("MEST", dict(gradient_weight=NAN), ValueError, ["`gradient_weight`", "nan"]),
    ("MEST", dict(gradient_weight=True), TypeError, ["`gradient_weight`", "True"]),
    ("GMP", dict(drop_fraction=0.3), TypeError, ["drop_fraction", "cubic"]),
    ("GraNet", dict(drop_fraction_decay="constant"), TypeError, ["drop_fraction_decay"]),
]


@pytest.mark.parametrize("name, kwargs, error, fragments", CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1])}-{i}" for i, c in enumerate(CASES)])
def test_bad_argument_is_named_at_construction(name, kwargs, error, fragments):
    with pytest.raises(error) as e:
        getattr(alg, name)(**kwargs)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))
    with pytest.raises(error):  # the named callback checks the same
        getattr(ks.callbacks, name)(**kwargs)


def test_granet_error_does_not_blame_drop_fraction():
    with pytest.raises(ValueError) as e:
        alg.GraNet(regeneration_rate=2.0)
    assert "drop_fraction" not in str(e.value)


@pytest.mark.parametrize("name, kwargs", [
    ("RigL", dict(start_step=0.1, stop_step=0.5)),
    ("RigL", dict(start_step=10, stop_step=0.5)),  # mixed kinds: checked at setup
    ("DSR", dict(initial_threshold=1)),
    ("DeepR", dict(temperature=0)),
    ("MEST", dict(gradient_weight=0)),
    ("GraNet", dict(regeneration_rate=0.9)),
])
def test_good_arguments_are_accepted(name, kwargs):
    a = getattr(alg, name)(**kwargs)
    assert type(a).from_config(a.get_config()).get_config() == a.get_config()


# --------------------------------------------------- policy and engine
class RandomDropGrow(alg.Updater):
    """A whole new algorithm: drop and grow at random, and count what grew."""

    def drop_scores(self, ctx, index):
        rng = np.random.default_rng([self.seed, ctx.step, index, 7])
        return rng.random(ctx.weights[index].shape)

    def grow_scores(self, ctx, index, rng):
        return rng.random(ctx.weights[index].shape)

    def finish(self, ctx, index, weight, mask, grown):
        return alg.LayerResult(weight, mask, stats={"grown_here": float(grown.sum())})


def test_custom_policy_trains_with_the_engine_and_keeps_the_non_zero_count():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2)])
    sparse = ks.sparsify(model, 0.75, seed=0)
    sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    start = masks_of(sparse)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")
    algorithm = RandomDropGrow(update_interval=2, stop_step=1.0, drop_fraction=0.5,
                               drop_fraction_decay="constant", seed=0)
    history = sparse.fit(x, y, batch_size=8, epochs=2, verbose=0,
                         callbacks=[ks.callbacks.DynamicSparseTraining(algorithm)])
    end = masks_of(sparse)
    assert [int(np.count_nonzero(m)) for m in end] == [int(np.count_nonzero(m)) for m in start]
    assert any(not np.array_equal(a, b) for a, b in zip(start, end))  # the masks did move
    # The policy's own figure is logged by the generic callback, summed over weights.
    assert algorithm.policy_stat_names == ("grown_here",)
    assert history.history["grown_here"][-1] == pytest.approx(
        sum(s["grown_here"] for s in algorithm.stats.values()))
    assert history.history["grown_here"][-1] > 0


def test_injected_fraction_schedule_drives_the_update_and_round_trips():
    a = alg.SET(fraction_schedule=ks.schedules.ConstantFraction(0.25), update_interval=10)
    config = a.get_config()
    b = alg.get({"class_name": "set", "config": config})
    assert b.get_config() == config
    assert isinstance(b.fraction_schedule, ks.schedules.ConstantFraction)
    assert "fraction_schedule" not in alg.SET().get_config()  # only when injected
    with pytest.raises(TypeError, match="fraction_schedule"):
        alg.SET(fraction_schedule=0.25)


def test_pruners_are_not_drop_and_grow_updaters():
    for name in ("GMP", "GraNet", "GraNetST"):
        a = getattr(alg, name)()
        assert isinstance(a, alg.Pruner) and not isinstance(a, alg.Updater)
        assert not {"drop_fraction", "drop_fraction_decay"} & set(a.get_config())
    for name in ("SET", "RigL", "MEST", "NeurRev", "DSR", "DeepR", "Chase"):
        assert isinstance(getattr(alg, name)(), alg.Updater)
