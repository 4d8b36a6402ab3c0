"""Functional-graph surgery for the ToST tweaks, on public Keras API.

The ToST tweaks insert, swap and remove layers in an existing Functional
model. `Graph` reads the model's calls with `keras_sparse.tracing.trace`
(a `keras.models.clone_model(clone_function=..., call_function=...)`
replay), records the edits on that list of calls, and `build` re-traces the
edited graph functionally: every kept layer is re-created from its
`get_config()` (with an edited `activation` where asked), inserted and
swapped layers are used as given, all are called on new `keras.Input`s in
topological order, and the weights are copied back by layer name.
Sequential models are first re-expressed as Functional ones; subclassed
models have no graph to edit.

Nested Functional / Sequential sub-models are edited recursively by
`edit_nested`: each sub-model is transformed on its own graph (its layer
names are its own namespace), the edited sub-model replaces it in the
parent, keeping its weights. An edit never crosses a sub-model boundary
(e.g. a ghost skip unit ends at the sub-model's output). A nested
sub-model comes back Functional, with its name and its call sites unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import keras

from keras_sparse.model_utils import is_graph_model
from keras_sparse.tracing import TensorKey, trace

__all__ = ["Graph", "Ref", "as_functional", "check_nested", "edit_nested"]

OUTPUT = "<output>"


def as_functional(model: keras.Model, what: str) -> keras.Model:
    """`model` as a Functional model (Sequential ones are re-expressed)."""
    if not is_graph_model(model):
        received = (f"subclassed model {model.name!r}" if isinstance(model, keras.Model)
                    else repr(model))
        raise TypeError(
            f"`{what}` edits the graph of a Functional or Sequential keras.Model; "
            f"only those expose one. Received: {received} of type "
            f"{type(model).__name__}. Build the model with the Functional API."
        )
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise ValueError(
                f"`{what}` needs a Sequential model with a known input: start "
                "it with `keras.Input(shape)`."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


@dataclasses.dataclass(frozen=True)
class Ref:
    """A tensor of the graph: output `index` of call `call` of layer `layer`."""

    layer: str
    call: int = 0
    index: int = 0


@dataclasses.dataclass
class _Node:
    """One call in the graph; tensors in `args`/`kwargs` are `Ref`s."""

    name: str
    call: int
    args: Any
    kwargs: Any


def _refs(obj) -> Iterator[Ref]:
    """The `Ref`s in a call structure, in argument order."""
    if isinstance(obj, Ref):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _refs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _refs(value)


def _map(obj, fn: Callable):
    """`obj` with every leaf `x` replaced by `fn(x)` (lists, tuples, dicts kept)."""
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(v, fn) for v in obj)
    return fn(obj)


def _inner_config(config: dict) -> dict:
    """The config holding `activation` (the wrapped layer's for wrappers)."""
    inner = config.get("layer")
    if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
        return inner["config"]
    return config


class Graph:
    """The calls of a Functional model, with edits recorded on them.

    Layers are named by their (unique) names; a tensor is a `Ref`. Model
    inputs are `Ref(<input layer name>)` and have no call.

    Args:
        model: a Functional model (see `as_functional`).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.nested: dict[str, keras.Model] = {}
        traced = trace(model)
        self._input_names = list(traced.input_names)
        ref_of: dict[int, Ref] = {
            key: Ref(name) for key, name in zip(traced.inputs, traced.input_names)}
        self._ops: dict[str, Any] = {}  # name -> the model's operation
        self._nodes: list[_Node] = []
        for c in traced.calls:
            name = c.operation.name
            self._ops[name] = c.operation
            count = sum(n.name == name for n in self._nodes)
            args, kwargs = (_map(s, lambda x: ref_of[x] if isinstance(x, TensorKey) else x)
                            for s in (c.args, c.kwargs))
            self._nodes.append(_Node(name, count, args, kwargs))
            for j, key in enumerate(c.outputs):
                ref_of[key] = Ref(name, count, j)
        self._outputs = _map(traced.outputs, lambda x: ref_of[x])
        self._given: dict[str, keras.layers.Layer] = {}  # inserted / swapped in
        self._activations: dict[str, Any] = {}  # name -> edited `activation`
        self._after_build: list[Callable[[keras.Model], None]] = []

    # -- queries ---------------------------------------------------------
    def order(self) -> list[str]:
        """Every layer name (inputs first), in topological order."""
        return list(dict.fromkeys([*self._input_names, *(n.name for n in self._nodes)]))

    def contains(self, name: str) -> bool:
        return name in self._input_names or any(n.name == name for n in self._nodes)

    def layer(self, name: str) -> keras.layers.Layer | None:
        """The layer `name` of the original model (None: not one of its layers)."""
        try:
            return self.model.get_layer(name)
        except ValueError:
            return None

    def _calls(self, name: str) -> list[_Node]:
        return [n for n in self._nodes if n.name == name]

    def input_refs(self, name: str) -> list[Ref]:
        """Tensors read by the single call of `name` (empty if shared/none)."""
        calls = self._calls(name)
        return list(_refs((calls[0].args, calls[0].kwargs))) if len(calls) == 1 else []

    def is_single_call(self, name: str) -> bool:
        return len(self._calls(name)) == 1

    def consumers(self, name: str) -> list[str]:
        """Layers reading an output of `name`; `"<output>"` if a model output."""
        found = [n.name for n in self._nodes
                 for ref in _refs((n.args, n.kwargs)) if ref.layer == name]
        found += [OUTPUT for ref in _refs(self._outputs) if ref.layer == name]
        return found

    def names(self, cls: type) -> list[str]:
        """Names of the layers (of `self.model`) that are a `cls`."""
        return [name for name in self.order() if isinstance(self.layer(name), cls)]

    def _config(self, name: str) -> dict:
        """`get_config()` of the layer now at `name`, with edited activation."""
        config = (self._given.get(name) or self._ops[name]).get_config()
        if name in self._activations:
            _inner_config(config)["activation"] = self._activations[name]
        return config

    def activation(self, name: str):
        """The `activation` config of layer `name` (the wrapped layer's for
        wrappers); None for inputs and operations that are not layers."""
        if not isinstance(self._given.get(name) or self._ops.get(name), keras.layers.Layer):
            return None
        return _inner_config(self._config(name)).get("activation")

    # -- edits -----------------------------------------------------------
    def set_activation(self, name: str, activation) -> None:
        """Re-creates layer `name` with `activation` (e.g. `"linear"`)."""
        self._activations[name] = activation

    def _redirect(self, old: str, new: Ref, skip: str | None = None) -> None:
        """Makes every reader of an output of `old` (but `skip`) read `new`."""
        def swap(x):
            return new if isinstance(x, Ref) and x.layer == old else x

        for n in self._nodes:
            if n.name != skip:
                n.args, n.kwargs = _map(n.args, swap), _map(n.kwargs, swap)
        self._outputs = _map(self._outputs, swap)

    def insert_after(self, anchor: str, layer: keras.layers.Layer,
                     extra_inputs: tuple | list = ()) -> None:
        """Inserts `layer` reading `anchor` (plus `extra_inputs` refs); every
        other reader of `anchor` reads `layer` instead."""
        ref = next((r for n in self._nodes for r in _refs((n.args, n.kwargs))
                    if r.layer == anchor), Ref(anchor))
        args = [ref, *extra_inputs] if extra_inputs else ref
        self._given[layer.name] = layer
        self._redirect(anchor, Ref(layer.name), skip=layer.name)
        index = next(i for i, n in enumerate(self._nodes) if n.name == anchor)
        self._nodes.insert(index + 1, _Node(layer.name, 0, (args,), {}))

    def remove(self, name: str) -> None:
        """Deletes `name`, wiring its readers to its first input."""
        first = self.input_refs(name)[0]
        self._redirect(name, first)
        self._nodes = [n for n in self._nodes if n.name != name]

    def replace(self, name: str, layer: keras.layers.Layer) -> None:
        """Swaps the layer at `name` for `layer` (same name, same wiring)."""
        self._given[name] = layer
        self._activations.pop(name, None)

    def replace_model(self, name: str, submodel: keras.Model) -> None:
        """Swaps nested model `name` for the edited `submodel` (same wiring)."""
        self.replace(name, submodel)
        self.nested[name] = submodel

    def after_build(self, finish: Callable[[keras.Model], None]) -> None:
        """Runs `finish(new_model)` at the end of `build` (e.g. to rescale weights)."""
        self._after_build.append(finish)

    def build(self) -> keras.Model:
        """The edited model, with weights copied by layer name from `self.model`.

        Nested models swapped in by `replace_model` keep their own weights;
        the `after_build` callbacks then run on the new model.
        """
        new_input = {id(t): keras.Input(batch_shape=t.shape, dtype=t.dtype,
                                            sparse=t.sparse, name=name)
                     for t, name in zip(self.model.inputs, self._input_names)}
        tensors: dict[Ref, Any] = {
            Ref(name): new_input[id(t)] for t, name in zip(self.model.inputs, self._input_names)}
        layers: dict[str, Any] = {}

        def fill(x):
            return tensors[x] if isinstance(x, Ref) else x

        for n in self._nodes:
            if n.name not in layers:  # kept layers are fresh copies, built by the call
                op = self._given.get(n.name) or self._ops[n.name]
                layers[n.name] = (op if n.name in self._given
                                  else type(op).from_config(self._config(n.name)))
            out = layers[n.name](*_map(n.args, fill), **_map(n.kwargs, fill))
            flat = [t for t in keras.tree.flatten(out) if isinstance(t, keras.KerasTensor)]
            for j, t in enumerate(flat):
                tensors[Ref(n.name, n.call, j)] = t
        model = keras.Model(
            keras.tree.map_structure(lambda t: new_input[id(t)], self.model.input),
            _map(self._outputs, lambda x: tensors[x]), name=self.model.name)
        for layer in model.layers:
            if not layer.weights or layer.name in self.nested:
                continue
            old = self.layer(layer.name)
            if old is not None and len(old.weights) == len(layer.weights) and all(
                    tuple(a.shape) == tuple(b.shape) for a, b in zip(old.weights, layer.weights)):
                layer.set_weights(old.get_weights())
        for finish in self._after_build:
            finish(model)
        return model


def check_nested(model: keras.Model, what: str) -> None:
    """Raises before any edit if a nested model has no graph to edit.

    Raises:
        ValueError: a nested (sub-)model is subclassed; the message names it
            and its parent.
    """
    for layer in model.layers:
        if not isinstance(layer, keras.Model):
            continue
        if not is_graph_model(layer):
            raise ValueError(
                f"`{what}` cannot edit nested model {layer.name!r} (subclassed "
                f"{type(layer).__name__}) inside model {model.name!r}: ToST edits "
                "the graphs of Functional and Sequential models, nested ones "
                "included, and a subclassed model has no graph. Build "
                f"{layer.name!r} with the Functional API or as a keras.Sequential."
            )
        check_nested(layer, what)


def edit_nested(model: keras.Model, what: str,
                edit: Callable[[Graph], int]) -> tuple[keras.Model, int]:
    """Applies `edit` to `model`'s graph and, recursively, to every nested one.

    Args:
        model: a Functional or Sequential model (checked with `check_nested`
            first by the caller).
        what: the public function name, for messages.
        edit: `edit(graph) -> changes`: edits `graph` in place (see
            `Graph.after_build` for work on the rebuilt model) and returns
            how many changes it made.

    Returns:
        `(new_model, changes)`; with no change anywhere, `model` itself (as
        a Functional model) and 0.
    """
    functional = as_functional(model, what)
    graph = Graph(functional)
    changes = 0
    for name in graph.order():
        layer = graph.layer(name)
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            sub, n = edit_nested(layer, what, edit)
            if n:
                graph.replace_model(name, sub)
                changes += n
    changes += edit(graph)
    if not changes:
        return functional, 0
    return graph.build(), changes
