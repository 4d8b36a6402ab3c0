"""Functional-graph surgery through the public model config.

The ToST tweaks insert, swap and remove layers in an existing Functional
model. Keras exposes a Functional model's graph publicly as its config
(`get_config` / `from_config`), so the edits are made there and the weights
are copied back by layer name. Sequential models are first re-expressed as
Functional ones; subclassed models have no graph to edit.

Nested Functional / Sequential sub-models are edited recursively by
`edit_nested`: each sub-model is transformed on its own graph (its layer
names are its own namespace), its new config replaces its entry in the
parent's config, and its weights are copied into the rebuilt parent. An edit
never crosses a sub-model boundary (e.g. a ghost skip unit ends at the
sub-model's output). A nested sub-model comes back Functional, with its name
and its call sites unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import keras

from keras_sparse.model_utils import is_graph_model

__all__ = ["Graph", "as_functional", "check_nested", "edit_nested"]

_TENSOR = "__keras_tensor__"


def as_functional(model: keras.Model, what: str) -> keras.Model:
    """`model` as a Functional model (Sequential ones are re-expressed)."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{what}` expects a Functional or Sequential keras.Model. "
            f"Received: {model!r} of type {type(model).__name__}."
        )
    if not is_graph_model(model):
        raise TypeError(
            f"`{what}` cannot edit the graph of subclassed model {model.name!r} "
            f"of type {type(model).__name__}: only Functional and Sequential "
            "models expose a graph. Build the model with the Functional API."
        )
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise ValueError(
                f"`{what}` needs a Sequential model with a known input: start "
                "it with `keras.Input(shape)`."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def tensor_ref(entry_or_name, shape=None, dtype="float32") -> dict:
    """A serialized Keras tensor pointing at output 0 of node 0 of a layer."""
    return {
        "class_name": _TENSOR,
        "config": {"shape": shape, "dtype": dtype, "keras_history": [entry_or_name, 0, 0]},
    }


def _walk(obj) -> Iterator[dict]:
    if isinstance(obj, dict):
        if obj.get("class_name") == _TENSOR:
            yield obj
            return
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _walk(value)


class Graph:
    """An editable copy of a Functional model's config.

    Args:
        model: a Functional model (see `as_functional`).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.config = copy.deepcopy(model.get_config())
        self.entries: list[dict] = self.config["layers"]
        self.nested: dict[str, keras.Model] = {}

    # -- queries ---------------------------------------------------------
    def entry(self, name: str) -> dict:
        for e in self.entries:
            if e["name"] == name:
                return e
        raise KeyError(name)

    def layer(self, name: str) -> keras.layers.Layer | None:
        try:
            return self.model.get_layer(name)
        except ValueError:
            return None

    def input_refs(self, name: str) -> list[dict]:
        """Tensor refs of the single call of `name` (empty if shared/none)."""
        nodes = self.entry(name)["inbound_nodes"]
        return list(_walk(nodes[0])) if len(nodes) == 1 else []

    def is_single_call(self, name: str) -> bool:
        return len(self.entry(name)["inbound_nodes"]) == 1

    def _output_refs(self) -> list[list]:
        out = self.config["output_layers"]
        return [out] if out and isinstance(out[0], str) else list(out)

    def consumers(self, name: str) -> list[str]:
        """Layers reading output 0 of `name`; `"<output>"` if a model output."""
        found = []
        for e in self.entries:
            for ref in _walk(e["inbound_nodes"]):
                if ref["config"]["keras_history"][0] == name:
                    found.append(e["name"])
        for ref in self._output_refs():
            if ref[0] == name:
                found.append("<output>")
        return found

    def names(self, cls: type) -> list[str]:
        """Names of entries whose layer (in `self.model`) is a `cls`."""
        return [e["name"] for e in self.entries
                if isinstance(self.layer(e["name"]), cls)]

    def _ref_for(self, name: str) -> dict:
        """A tensor ref to output 0 of `name`, with its shape and dtype."""
        for e in self.entries:
            for ref in _walk(e["inbound_nodes"]):
                if ref["config"]["keras_history"][0] == name:
                    return copy.deepcopy(ref)
        layer = self.layer(name)
        if layer is None:
            raise ValueError(f"Cannot find the output shape of layer {name!r}.")
        out = layer.output
        return tensor_ref(name, list(out.shape), str(out.dtype))

    # -- edits -----------------------------------------------------------
    def rewire(self, old: str, new: str, skip: str | None = None) -> None:
        """Makes every reader of `old`'s output read `new`'s output instead."""
        for e in self.entries:
            if e["name"] == skip:
                continue
            for ref in _walk(e["inbound_nodes"]):
                hist = ref["config"]["keras_history"]
                if hist[0] == old:
                    ref["config"]["keras_history"] = [new, 0, 0]
        outs = self.config["output_layers"]
        if outs and isinstance(outs[0], str):
            if outs[0] == old:
                self.config["output_layers"] = [new, 0, 0]
        else:
            for i, ref in enumerate(outs):
                if ref[0] == old:
                    outs[i] = [new, 0, 0]

    def insert_after(self, anchor: str, layer: keras.layers.Layer, extra_inputs=()) -> None:
        """Inserts `layer` reading `anchor` (plus `extra_inputs` refs)."""
        entry = keras.saving.serialize_keras_object(layer)
        entry["name"] = layer.name
        ref = self._ref_for(anchor)
        args = [ref, *[copy.deepcopy(r) for r in extra_inputs]] if extra_inputs else ref
        entry["inbound_nodes"] = [{"args": [args], "kwargs": {}}]
        self.rewire(anchor, layer.name, skip=layer.name)
        index = next(i for i, e in enumerate(self.entries) if e["name"] == anchor)
        self.entries.insert(index + 1, entry)

    def remove(self, name: str) -> None:
        """Deletes `name`, wiring its readers to its first input."""
        first = self.input_refs(name)[0]["config"]["keras_history"]
        for e in self.entries:
            for ref in _walk(e["inbound_nodes"]):
                if ref["config"]["keras_history"][0] == name:
                    ref["config"]["keras_history"] = list(first)
        outs = self._output_refs()
        for ref in outs:
            if ref[0] == name:
                ref[:] = list(first)
        if self.config["output_layers"] and isinstance(self.config["output_layers"][0], str):
            self.config["output_layers"] = outs[0]
        self.entries[:] = [e for e in self.entries if e["name"] != name]

    def replace(self, name: str, layer: keras.layers.Layer) -> None:
        """Swaps the layer of entry `name` for `layer` (same name, same wiring)."""
        entry = self.entry(name)
        new = keras.saving.serialize_keras_object(layer)
        for key in ("module", "class_name", "config", "registered_name"):
            entry[key] = new.get(key)
        entry.pop("build_config", None)

    def replace_model(self, name: str, submodel: keras.Model) -> None:
        """Swaps nested model `name` for the edited `submodel` (same wiring)."""
        self.replace(name, submodel)
        self.entry(name)["name"] = name
        self.nested[name] = submodel

    def build(self, *sources: keras.Model) -> keras.Model:
        """The edited model, with weights copied by layer name from `sources`.

        Nested models swapped in by `replace_model` get their weights from
        the edited sub-model.
        """
        model = keras.Model.from_config(copy.deepcopy(self.config))
        pools = [self.model, *sources]
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name in self.nested:
                layer.set_weights(self.nested[layer.name].get_weights())
                continue
            for pool in pools:
                try:
                    old = pool.get_layer(layer.name)
                except ValueError:
                    continue
                if len(old.weights) == len(layer.weights) and all(
                    tuple(a.shape) == tuple(b.shape) for a, b in zip(old.weights, layer.weights)
                ):
                    layer.set_weights(old.get_weights())
                    break
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
                edit: Callable[[Graph], tuple[int, Callable[[keras.Model], None] | None]]
                ) -> tuple[keras.Model, int]:
    """Applies `edit` to `model`'s graph and, recursively, to every nested one.

    Args:
        model: a Functional or Sequential model (checked with `check_nested`
            first by the caller).
        what: the public function name, for messages.
        edit: `edit(graph) -> (changes, finish)`: edits `graph` in place and
            returns how many changes it made and an optional `finish(model)`
            run on the rebuilt model (e.g. to rescale weights).

    Returns:
        `(new_model, changes)`; with no change anywhere, `model` itself (as
        a Functional model) and 0.
    """
    functional = as_functional(model, what)
    graph = Graph(functional)
    changes = 0
    for entry in list(graph.entries):
        layer = graph.layer(entry["name"])
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            sub, n = edit_nested(layer, what, edit)
            if n:
                graph.replace_model(entry["name"], sub)
                changes += n
    n, finish = edit(graph)
    changes += n
    if not changes:
        return functional, 0
    new = graph.build()
    if finish is not None:
        finish(new)
    return new, changes


def inner_config(entry: dict) -> dict:
    """The config holding `activation` (the wrapped layer's for wrappers)."""
    config = entry["config"]
    if "layer" in config and isinstance(config["layer"], dict) and "config" in config["layer"]:
        return config["layer"]["config"]
    return config

