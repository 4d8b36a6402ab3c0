"""`keras_sparse.callbacks.DynamicSparseTraining`: schedules across fit calls,
warnings about plans that do little, one mask updater per fit, argument checks."""

import inspect
import pydoc
import warnings

import keras
import numpy as np
import pytest

import keras_sparse as ks

from testing import masks_of

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
STEPS = 8  # batches per epoch


def _model(spe=1):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, activation="relu", name="fc")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(x)
    sparse = ks.sparsify(keras.Model(inputs, outputs), 0.7, distribution="uniform",
                         keep_dense=None, seed=0)
    sparse.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS, jit_compile=False,
                   steps_per_execution=spe)
    return sparse


def _data():
    rng = np.random.default_rng(0)
    return rng.random((8 * STEPS, 6)).astype("float32"), rng.integers(0, 3, 8 * STEPS)


def _weights(model):
    return [v.numpy().copy() for v in model.weights]


def _fit(model, callbacks, **kwargs):
    x, y = _data()
    kwargs = {"epochs": 1, **kwargs}
    model.fit(x, y, batch_size=8, verbose=0, shuffle=False, callbacks=callbacks, **kwargs)


def _changed_per_call(model, cb, calls=4):
    """Number of mask entries that changed in each of `calls` `fit(epochs=1)` calls."""
    out = []
    for _ in range(calls):
        before = masks_of(model)
        _fit(model, [cb])
        out.append(sum(int(np.sum(a != b)) for a, b in zip(before, masks_of(model))))
    return out


def _plan_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)
            and "DeprecationWarning" not in w.category.__name__]


# ------------------------------------------------- schedules across fit calls
@pytest.mark.parametrize("name", ["RigL", "SET"])
def test_masks_move_in_every_call_of_a_fit_loop(name):
    model = _model()
    # Constant drop fraction: the cosine decay's last updates drop ~1 entry,
    # which RigL may grow right back (an update that changes nothing).
    cb = getattr(ks.callbacks, name)(update_interval=2, stop_step=1.0, seed=0,
                                     drop_fraction_decay="constant")
    with pytest.warns(UserWarning, match=r"total_steps=") as record:
        changed = _changed_per_call(model, cb)
    assert all(c > 0 for c in changed), changed
    assert int(model.optimizer.iterations.numpy()) == 4 * STEPS
    # Warned once (per model), in the second call, with the numbers.
    extension = [m for m in _plan_warnings(record) if "extends the planned end" in m]
    assert len(extension) == 1 and f"to step {2 * STEPS}" in extension[0], extension


def test_total_steps_set_once_spans_a_fit_loop_without_warning():
    model = _model()
    cb = ks.callbacks.RigL(update_interval=2, total_steps=4 * STEPS, seed=0,  # stop at 0.75
                           drop_fraction_decay="constant")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        changed = _changed_per_call(model, cb, calls=3)
    assert all(c > 0 for c in changed), changed
    assert not [m for m in _plan_warnings(record) if "RigL" in m]
    # The 4th quarter is past stop_step (0.75 * 32 = 24): no update, and a warning says so.
    with pytest.warns(UserWarning, match=r"no mask update can happen .*past stop_step.*steps 25 to 32"):
        assert _changed_per_call(model, cb, calls=1) == [0]


def test_fresh_callback_each_call_also_moves_masks():
    model = _model()
    changed = []
    with pytest.warns(UserWarning, match="total_steps="):
        for _ in range(3):
            before = masks_of(model)
            _fit(model, [ks.callbacks.RigL(update_interval=2, stop_step=1.0,
                                           drop_fraction_decay="constant")])
            changed.append(sum(int(np.sum(a != b)) for a, b in zip(before, masks_of(model))))
    assert all(c > 0 for c in changed), changed


def test_initial_epoch_resume_plans_epochs_times_steps():
    """A continuation with `initial_epoch` keeps the horizon `epochs * steps` (exact resumes)."""
    model = _model()
    cb = ks.callbacks.RigL(update_interval=2, seed=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        x, y = _data()

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    self.model.stop_training = True

        model.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False, callbacks=[cb, Stop()])
        assert cb._total == 4 * STEPS
        model.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, verbose=0, shuffle=False,
                  callbacks=[cb])
    assert cb._total == 4 * STEPS
    assert int(model.optimizer.iterations.numpy()) == 4 * STEPS
    assert not [m for m in _plan_warnings(record) if "extends" in m]


# ------------------------------------------------------- plan warnings
def test_warns_when_no_update_can_happen_in_the_run():
    model = _model()
    with pytest.warns(UserWarning, match=r"no mask update can happen") as record:
        _fit(model, [ks.callbacks.RigL(update_interval=100)])
    message = [m for m in _plan_warnings(record) if "no mask update" in m][0]
    for number in ("update_interval=100", "steps 1 to 8", "8 steps", "stop_step=6",
                   "longer than the run"):
        assert number in message, message


def test_warns_when_fewer_than_three_updates_are_planned():
    model = _model()
    with pytest.warns(UserWarning, match=r"only 1 mask update\(s\) in the planned training of 8 steps"):
        _fit(model, [ks.callbacks.SET(update_interval=4)])  # update at 4 only (stop 6)


def test_no_plan_warning_for_a_healthy_run():
    model = _model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _fit(model, [ks.callbacks.RigL(update_interval=1)], epochs=2)
    assert not [m for m in _plan_warnings(record) if "RigL" in m]


def test_warns_when_steps_per_execution_merges_updates():
    model = _model(spe=4)  # executions end at steps 4 and 8; updates every 1 step up to 6
    with pytest.warns(UserWarning, match=r"steps_per_execution=4 > update_interval=1") as record:
        _fit(model, [ks.callbacks.SET(update_interval=1, stop_step=6)])
    message = [m for m in _plan_warnings(record) if "steps_per_execution" in m][0]
    assert "makes 2 mask update(s) instead of 6" in message, message


def test_no_steps_per_execution_warning_when_it_divides_the_interval():
    model = _model(spe=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _fit(model, [ks.callbacks.SET(update_interval=2)], epochs=2)
    assert not [m for m in _plan_warnings(record) if "steps_per_execution" in m]


# ------------------------------------------------ one mask updater per fit
def test_second_dst_callback_in_one_fit_is_refused_before_any_change():
    model = _model()
    before = _weights(model)
    with pytest.raises(ValueError, match=r"Two mask-updating callbacks in one `fit`: RigL and SET"):
        _fit(model, [ks.callbacks.RigL(update_interval=1), ks.callbacks.SET(update_interval=1)])
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 0
    # The refused fit leaves nothing behind: one callback alone works.
    masks = masks_of(model)
    cb = ks.callbacks.RigL(update_interval=2)
    _fit(model, [cb])
    assert cb.algorithm.stats
    assert any(not np.array_equal(a, b) for a, b in zip(masks, masks_of(model)))


def test_generic_and_named_callbacks_are_named_in_the_error():
    model = _model()
    with pytest.raises(ValueError, match=r"SET and DynamicSparseTraining\(RigL\)"):
        _fit(model, [ks.callbacks.SET(), ks.callbacks.DynamicSparseTraining("rigl")])


def test_interrupted_fit_does_not_block_the_next_one_with_another_updater():
    model = _model()

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(model, [ks.callbacks.RigL(update_interval=1), Interrupt()])
    cb = ks.callbacks.SET(update_interval=2)
    _fit(model, [cb])  # a stale claim of the interrupted fit is not "another callback"
    assert cb.algorithm.stats


# ------------------------------------------------------------ arguments
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(total_steps=1.5), TypeError, ["total_steps", "1.5"]),
    (dict(total_steps=True), TypeError, ["total_steps", "True"]),
    (dict(total_steps=0), ValueError, ["total_steps", "0"]),
    (dict(per_layer="yes"), TypeError, ["per_layer", "yes"]),
])
def test_callback_arguments_are_checked_with_name_and_value(kwargs, error, words):
    with pytest.raises(error) as e:
        ks.callbacks.RigL(**kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_named_callbacks_take_keyword_arguments_only():
    with pytest.raises(TypeError):
        ks.callbacks.RigL(100)  # was silently total_steps=100


def test_start_not_before_stop_with_mixed_kinds_fails_at_train_begin_before_changes():
    model = _model()
    before = _weights(model)
    with pytest.raises(ValueError, match=r"stop_step=6 \(from 0.75\) <= start_step=7"):
        _fit(model, [ks.callbacks.RigL(update_interval=1, start_step=7)])
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------- named callbacks' signatures
def _named_callbacks():
    return {name: getattr(ks.callbacks, name) for name in ks.callbacks.__all__
            if isinstance(getattr(ks.callbacks, name), type)
            and issubclass(getattr(ks.callbacks, name), ks.callbacks.DynamicSparseTraining)
            and getattr(ks.callbacks, name) is not ks.callbacks.DynamicSparseTraining}


NAMED = sorted(_named_callbacks())
# Arguments an algorithm's `**kwargs` passes on to its base but rejects itself.
REJECTED = {"GMP": {"drop_fraction", "drop_fraction_decay"},
            "GraNet": {"drop_fraction", "drop_fraction_decay"},
            "GraNetST": {"drop_fraction", "drop_fraction_decay"}}


def _algorithm_parameters(algorithm_cls):
    """{name: default} of every argument the algorithm takes: its `__init__`'s, and
    along the MRO its bases' where an `__init__` passes `**kwargs` on (the first
    class naming an argument gives its default)."""
    out = {}
    for klass in algorithm_cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        for name, p in params.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                out.setdefault(name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return out


def test_every_algorithm_has_a_named_callback():
    assert set(NAMED) >= {"SET", "RigL", "RigLITOP", "MEST", "NeurRev", "DSR", "DeepR", "GMP",
                          "GraNet", "GraNetST", "Chase"}
    for name in NAMED:
        assert ks.callbacks.__dict__[name].algorithm_class is getattr(ks.algorithms, name)


@pytest.mark.parametrize("name", NAMED)
def test_named_callback_signature_lists_every_algorithm_argument_with_its_default(name):
    cls = getattr(ks.callbacks, name)
    signature = inspect.signature(cls).parameters
    expected = _algorithm_parameters(cls.algorithm_class)
    for arg in REJECTED.get(name, ()):
        expected.pop(arg, None)
        with pytest.raises(TypeError, match=arg):  # really not an argument of the algorithm
            cls.algorithm_class(**{arg: 0.3})
    assert expected, name
    for arg, default in expected.items():
        assert arg in signature, (name, arg)
        assert signature[arg].default == default, (name, arg, signature[arg].default, default)
    assert set(signature) == set(expected) | {"total_steps", "per_layer"}, name
    assert not any(p.kind == p.VAR_KEYWORD for p in signature.values()), name


@pytest.mark.parametrize("name", NAMED)
def test_named_callback_documents_every_argument(name):
    cls = getattr(ks.callbacks, name)
    doc = cls.__doc__
    for section in ("Args:", "Example:", "Reference:"):
        assert section in doc, (name, section)
    for arg in inspect.signature(cls).parameters:
        assert f"        {arg}: " in doc, (name, arg)
    assert "{" + "shared_args}" not in doc and "{" + "granet_args}" not in doc


@pytest.mark.parametrize("name", NAMED)
def test_named_callback_defaults_build_the_algorithm_defaults(name):
    cls = getattr(ks.callbacks, name)
    assert cls().algorithm.get_config() == cls.algorithm_class().get_config()
    changed = cls(seed=3, update_interval=7, total_steps=40, per_layer=True)
    assert changed.algorithm.get_config() == cls.algorithm_class(seed=3, update_interval=7).get_config()
    again = cls.from_config(changed.get_config())
    assert again.get_config() == changed.get_config() and type(again.algorithm) is cls.algorithm_class


def test_help_of_rigl_shows_its_arguments():
    text = pydoc.render_doc(ks.callbacks.RigL, renderer=pydoc.plaintext)
    for arg in ("update_interval", "drop_fraction", "total_steps", "Evci"):
        assert arg in text, arg
