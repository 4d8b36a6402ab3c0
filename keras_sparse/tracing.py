"""Reading the call graph of a Functional model through public Keras API.

`keras.models.clone_model(model, clone_function=..., call_function=...)`
replays every call of a Functional model in topological order. Replaying
it with stand-in layers that only compute output specs records which call
reads which tensor, without changing the model (no new call is added to its
layers) and without creating weights. `model.get_config()` would give the
same wiring, but only as a serialized form to parse; private attributes
such as `_inbound_nodes` change between Keras releases.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

__all__ = ["Call", "CallGraph", "TensorKey", "input_names", "trace"]


class TensorKey(int):
    """The key of one tensor of a traced graph (an `int`, told apart from
    integer arguments of a call by its type)."""


class _Probe(keras.layers.Layer):
    """Stands for one operation of the model during the replay."""

    def __init__(self, operation):
        super().__init__(name=operation.name)
        self.operation = [operation]  # a list: not tracked as a sublayer

    def compute_output_spec(self, *args, **kwargs):
        return self.operation[0].compute_output_spec(*args, **kwargs)

    def call(self, *args, **kwargs):  # never run: the replay is symbolic
        raise NotImplementedError


@dataclasses.dataclass
class Call:
    """One call of a layer (or operation) of a Functional model.

    Attributes:
        operation: the model's layer or operation (nested models included).
        args: the call's positional arguments, each tensor replaced by its
            `TensorKey`.
        kwargs: the call's keyword arguments, keyed the same way.
        inputs: keys of the tensors read, in flattened order.
        outputs: keys of the tensors produced, in flattened order.
    """

    operation: Any
    args: tuple
    kwargs: dict
    inputs: list[int]
    outputs: list[int]


@dataclasses.dataclass
class CallGraph:
    """The calls of a Functional model, in topological order.

    Attributes:
        calls: one `Call` per call (a shared layer has several).
        inputs: keys of the model inputs, in `model.inputs` order.
        input_names: names of the model's input layers, same order.
        outputs: `model.output` (a tensor or a structure of them) with
            every tensor replaced by its key.
        shapes: `{key: shape}` of every tensor.
    """

    calls: list[Call]
    inputs: list[int]
    input_names: list[str]
    outputs: Any
    shapes: dict[int, tuple]

    def producers(self) -> dict[int, int]:
        """`{tensor key: index of the call producing it}`."""
        return {t: i for i, c in enumerate(self.calls) for t in c.outputs}

    def consumers(self) -> dict[int, list[int]]:
        """`{tensor key: indices of the calls reading it}` (each call once)."""
        found: dict[int, list[int]] = {}
        for i, c in enumerate(self.calls):
            for t in dict.fromkeys(c.inputs):
                found.setdefault(t, []).append(i)
        return found


def trace(model: keras.Model) -> CallGraph:
    """Records the calls of a Functional or Sequential model.

    Args:
        model: a built Functional or Sequential `keras.Model`.

    Returns:
        A `CallGraph`; the model is left unchanged.

    Raises:
        TypeError: `model` is not a Functional or Sequential model.
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not (isinstance(model, keras.Model) and isinstance(model, keras.Function)):
        raise TypeError(
            "`trace` expects a Functional or Sequential keras.Model. "
            f"Received: {model!r} of type {type(model).__name__}.")
    keys: dict[int, int] = {}
    keep: list = []  # keeps every traced tensor alive, so ids stay unique
    shapes: dict[int, tuple] = {}

    def key_of(t) -> int:
        if id(t) not in keys:
            keys[id(t)] = TensorKey(len(keys))
            keep.append(t)
            shapes[keys[id(t)]] = tuple(t.shape)
        return keys[id(t)]

    def as_keys(struct):
        return keras.tree.map_structure(
            lambda t: key_of(t) if isinstance(t, keras.KerasTensor) else t, struct)

    def flat_keys(struct) -> list[int]:
        return [key_of(t) for t in keras.tree.flatten(struct)
                if isinstance(t, keras.KerasTensor)]

    calls: list[Call] = []

    def call_function(probe, *args, **kwargs):
        out = probe(*args, **kwargs)
        calls.append(Call(probe.operation[0], as_keys(args), as_keys(kwargs),
                          flat_keys((args, kwargs)), flat_keys(out)))
        return out

    replay = keras.models.clone_model(model, clone_function=_Probe,
                                      call_function=call_function)
    return CallGraph(calls, [key_of(t) for t in replay.inputs], input_names(model),
                     as_keys(replay.output), shapes)


def input_names(model: keras.Model) -> list[str]:
    """Names of the input layers of a Functional model, in `model.inputs` order."""
    layer_of = {id(layer.output): layer.name for layer in model.layers
                if isinstance(layer, keras.layers.InputLayer)}
    return [layer_of.get(id(t), t.name) for t in model.inputs]
