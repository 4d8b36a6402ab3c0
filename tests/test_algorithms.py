"""Argument checks of the sparse-training algorithms (`keras_sparse.algorithms`).

Every bad argument raises at construction, naming the argument, what was
received and what is accepted; the named callbacks check the same.
"""

import pytest

import keras_sparse as ks
from keras_sparse import algorithms as alg

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
