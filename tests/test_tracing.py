"""keras_sparse.tracing: the call graph of a Functional model, public API only."""

import keras
import numpy as np
import pytest

from keras_sparse.tracing import TensorKey, input_names, trace


def _names(graph, keys):
    producers = graph.producers()
    return [graph.calls[producers[k]].operation.name if k in producers else "<input>"
            for k in keys]


def _resnet_block():
    inputs = keras.Input((6, 6, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", name="c1")(x)
    y = keras.layers.ReLU(name="r1")(y)
    x = keras.layers.Add(name="add")([x, y])
    outputs = keras.layers.Dense(2, name="fc")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, outputs)


def test_residual_add_reads_the_shortcut_and_the_branch():
    model = _resnet_block()
    graph = trace(model)
    names = [c.operation.name for c in graph.calls]
    assert names.index("stem") < names.index("c1") < names.index("r1") < names.index("add")
    add = graph.calls[names.index("add")]
    assert _names(graph, add.inputs) == ["stem", "r1"]
    stem_out = graph.calls[names.index("stem")].outputs[0]
    assert sorted(graph.calls[i].operation.name for i in graph.consumers()[stem_out]) == ["add", "c1"]
    assert graph.input_names == ["image"]
    assert _names(graph, graph.calls[names.index("stem")].inputs) == ["<input>"]
    assert graph.producers()[graph.outputs] == names.index("fc")
    assert graph.shapes[add.outputs[0]] == (None, 6, 6, 4)
    # Tensor keys are told apart from integer call arguments.
    assert all(isinstance(k, TensorKey) for c in graph.calls for k in c.inputs)


def test_trace_leaves_the_model_unchanged():
    model = _resnet_block()
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    before = model.predict(x, verbose=0)
    n_weights = len(model.weights)
    trace(model)
    assert len(model.weights) == n_weights
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    # Layers are still called once: `.input` / `.output` stay defined.
    assert model.get_layer("c1").input is not None


def test_shared_layer_has_one_call_per_use():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    outputs = shared(keras.layers.ReLU(name="relu")(shared(inputs)))
    graph = trace(keras.Model(inputs, outputs))
    names = [c.operation.name for c in graph.calls]
    assert names == ["shared", "relu", "shared"]
    assert graph.calls[0].operation is graph.calls[2].operation
    assert _names(graph, graph.calls[2].inputs) == ["relu"]


def test_nested_model_is_one_call_of_the_outer_graph():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="d")(inner_in), name="inner")
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="s")], name="seq")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, seq(inner(inputs)))
    graph = trace(model)
    assert [c.operation.name for c in graph.calls] == ["inner", "seq"]
    assert graph.calls[0].operation is inner
    assert [c.operation.name for c in trace(inner).calls] == ["d"]
    assert [c.operation.name for c in trace(seq).calls] == ["s"]
    assert input_names(model) == ["x"]


def test_subclassed_model_raises_type_error():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="Functional or Sequential"):
        trace(Net())
    with pytest.raises(TypeError, match="Received: 3"):
        trace(3)
