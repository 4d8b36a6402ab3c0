"""LRSI as in the ToST code: search layer-wise init scales before training.

ToST's layer-wise re-scaled initialization (LRSI) keeps the mask's initial
weights and re-scales each parameter block by one scalar. The reference code
(VITA-Group/ToST `LRsI/train_ticket.py`, flag `--gradinit`) finds these
scalars *before* training with GradInit (Zhu et al., 2021;
`LRsI/gradinit_utils.py`, `LRsI/gradinit_optimizers.py`), then trains the
re-scaled weights plainly. `search_lrsi_scales` runs that search and
`apply_lrsi_scales` writes the result into the weights; `keras_sparse.tost.ToST`
calls both in `prepare` (`lrsi="gradinit"`, its default). The scales are
never variables of the model: nothing is added to the graph and nothing
extra is trained.

The search (reference defaults in brackets: `LRsI/train_ticket.py` argparse):
one scale `s_i` per trainable variable `p_i = s_i * p_i^0` (every conv /
dense kernel, BatchNorm gamma, and non-zero bias; variables whose initial
norm is 0, e.g. zero-initialised biases and BN betas, are skipped as in
`RescaleAdam.step`), all starting at 1. Each of `iterations` [390] steps
draws three batches `S0, S1, S2` of `batch_size` [the training batch, 128]:

1. `g = grad L(p; S0 + S1)` (BatchNorm on batch statistics, moving
   statistics untouched: `set_bn_modes`);
2. one plain SGD look-ahead step `p' = p - eta * g` [eta 0.1,
   `--gradinit-alg sgd`], with `g` treated as a constant (`set_param` uses
   `gstep.data`, so no second-order term);
3. the objective `L(p'; S0 + S2) / eta`; the gradient of each scale is
   `<dObj/dp_i(p'), p_i> * |p_i^0| / |p_i|` (`RescaleAdam.step`), clipped
   to `[-grad_clip, grad_clip]` [1];
4. an Adam step on each scale [lr 1e-3, betas (0.9, 0.999), eps 1e-8],
   floored at `min_scale` [0.01] for weights and 0 for biases, and
   `p_i <- s_i * p_i^0`.

The gradient-norm constraint branch of GradInit (`--gradinit-gamma`) is
off in the reference (gamma = inf) and is not implemented.

Deviations from the reference, all deliberate:
    - The search runs on the *sparse* model: masked kernels keep their zeros,
      and the look-ahead step is masked like the training step that follows
      (the reference's `train` masks the gradients). The reference calls
      `gradinit` *before* it applies the mask (`train_ticket.py`: `gradinit`,
      then `m.weight.data.mul_(mask)`), i.e. it searches the scales of the
      dense initialization; the paper describes LRSI as re-scaling "the
      original initialization of sparse masks", and a Keras sparse model no
      longer holds the pruned initial values, so the sparse network is the
      one searched.
    - Inside `ToST.prepare` the search sees the model as it will be trained
      (ghost Swish at beta 1 and ghost jumps at alpha 1, when enabled); the
      ghost layers' own variables take the look-ahead step but get no scale
      (they are removed at the end; the jump's 1e-4 init is the reference's).
    - The reference puts the network in eval mode, which also switches
      dropout off; Keras has one `training` flag, so dropout layers are
      active during the search.
    - Batches are drawn with a seeded shuffle of `(x, y)` (or cycled from an
      iterable), instead of the training `DataLoader`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf  # Gradient capture only (Keras exposes no gradients).

from keras_sparse.model_utils import iter_layers
from keras_sparse.model_view import masked_weights
from keras_sparse.pruning.core import resolve_loss
from keras_sparse.tost.layers import GhostGate, GhostSwish, LRSIScale

__all__ = ["apply_lrsi_scales", "search_lrsi_scales"]

_GHOSTS = (GhostGate, GhostSwish, LRSIScale)
_BIAS_NAMES = ("bias", "beta")


class _Batches:
    """Endless `(x, y)` batches: seeded shuffles of arrays, or a cycled iterable."""

    def __init__(self, data, batch_size: int, seed: int):
        self.arrays = None
        if isinstance(data, tuple) and len(data) in (2, 3) and hasattr(data[0], "shape"):
            x, y = np.asarray(data[0]), np.asarray(data[1])
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(
                    "`data` must hold as many labels as examples, at least one. "
                    f"Received x of length {len(x)} and y of length {len(y)}.")
            self.arrays = (x, y)
            self.size = min(batch_size, len(x))
            self.rng = np.random.default_rng(seed)
            self.order, self.pos = self.rng.permutation(len(x)), 0
        elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise TypeError(
                "`data` must be a (x, y) tuple of arrays, a tf.data.Dataset or an "
                f"iterable of (x, y) batches. Received: {type(data).__name__}.")
        else:
            self.data = data
            self.it = iter(data)

    def next(self):
        if self.arrays is not None:
            if self.pos + self.size > len(self.order):
                self.order, self.pos = self.rng.permutation(len(self.order)), 0
            idx = self.order[self.pos:self.pos + self.size]
            self.pos += self.size
            return self.arrays[0][idx], self.arrays[1][idx]
        try:
            batch = next(self.it)
        except StopIteration:  # restart the loader, as `get_batch` does
            self.it = iter(self.data)
            try:
                batch = next(self.it)
            except StopIteration:
                raise ValueError("`data` yielded no batch.") from None
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError("Each batch of `data` must be (x, y) or (x, y, sample_weight). "
                            f"Received a batch of type {type(batch).__name__}.")
        return batch[0], batch[1]


def _concat(a, b):
    return np.concatenate([np.asarray(a[0]), np.asarray(b[0])]), np.concatenate(
        [np.asarray(a[1]), np.asarray(b[1])])


def _variable_table(model: keras.Model) -> dict[str, tuple]:
    """`{"sub_model/layer/weight": (variable, layer)}` of the trainable variables.

    Keys name the nested sub-models, so they are unique even where Keras's
    `variable.path` is not (e.g. in clones); shared layers appear once.
    """
    return {f"{prefix}{layer.name}/{v.name}": (v, layer)
            for prefix, layer in iter_layers(model) for v in layer.trainable_weights}


def _scaled_variables(model: keras.Model):
    """(trainable variables, {key: variable} to scale, {id: mask}) of `model`."""
    masks = {id(r.weight): r.mask for r in masked_weights(model)}
    scaled = {key: v for key, (v, layer) in _variable_table(model).items()
              if not isinstance(layer, _GHOSTS)}
    return list(model.trainable_variables), scaled, masks


def _check(name, value, low, kind=float, allow_equal=False):
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if ok:
        ok = value >= low if allow_equal else value > low
    if not ok:
        raise ValueError(f"`{name}` must be a {'number' if kind is float else 'int'} "
                         f"{'>=' if allow_equal else '>'} {low}. Received: {value!r}.")


def search_lrsi_scales(
    model: keras.Model,
    data,
    loss=None,
    iterations: int = 390,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    eta: float = 0.1,
    min_scale: float = 0.01,
    grad_clip: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """Searches one init scale per parameter block before training (GradInit).

    See the module docstring for the algorithm and its deviations from the
    reference. The model is left exactly as it was (weights, masks and
    BatchNorm statistics are restored); apply the result with
    `apply_lrsi_scales`.

    Args:
        model: a built Keras model, sparse (`SparseWrapper`s) or dense.
        data: a `(x, y)` tuple of arrays (shuffled with `seed`), or a
            `tf.data.Dataset` / iterable of `(x, y)` batches (cycled).
        loss: loss callable or name; default the model's compiled loss. The
            reference uses plain cross-entropy (no label smoothing).
        iterations: search steps (reference: 390); each uses 3 batches.
        batch_size: examples per batch when `data` is arrays (reference: the
            training batch size, 128); each loss sees two batches.
        learning_rate: Adam learning rate of the scales (reference: 1e-3).
        eta: learning rate of the look-ahead SGD step (reference: 0.1).
        min_scale: floor of the weight scales (reference: 0.01; biases: 0).
        grad_clip: clip of each scale's gradient (reference: 1).
        seed: shuffling seed for array `data`.

    Returns:
        `{"sub_model/layer/weight": scale}` (e.g. `"conv1/kernel"`,
        `"block/bn1/gamma"`) for every trainable variable with non-zero
        initial norm outside the ToST ghost layers.

    Raises:
        ValueError: bad numeric arguments, empty data, or no loss.
        TypeError: `data` of an unsupported type.

    Example:

    >>> scales = keras_sparse.tost.search_lrsi_scales(
    ...     sparse_model, (x_train, y_train),
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> keras_sparse.tost.apply_lrsi_scales(sparse_model, scales)

    Reference:
        Jaiswal et al., "Training Your Sparse Neural Network Better with Any
        Mask", ICML 2022 (LRSI); code: VITA-Group/ToST `LRsI/train_ticket.py`,
        `LRsI/gradinit_utils.py` (`gradinit`), `LRsI/gradinit_optimizers.py`
        (`RescaleAdam`). Zhu et al., "GradInit: Learning to Initialize Neural
        Networks for Stable and Efficient Training", NeurIPS 2021.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: {type(model).__name__}.")
    _check("iterations", iterations, 0, int)
    _check("batch_size", batch_size, 0, int)
    _check("learning_rate", learning_rate, 0.0)
    _check("eta", eta, 0.0)
    _check("min_scale", min_scale, 0.0, allow_equal=True)
    _check("grad_clip", grad_clip, 0.0, allow_equal=True)
    loss_fn = resolve_loss(model, loss, "search_lrsi_scales")
    batches = _Batches(data, batch_size, seed)
    variables, scaled, masks = _scaled_variables(model)
    saved = [v.numpy().copy() for v in model.variables]

    @tf.function(reduce_retracing=True)
    def gradients(x, y):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss_fn(y, model(x, training=True)))
        return tape.gradient(value, variables)

    init = {id(v): v.numpy().astype(np.float64) for v in scaled.values()}
    init_norm = {k: float(np.linalg.norm(w)) for k, w in init.items()}
    state = {id(v): {"scale": 1.0, "m": 0.0, "v": 0.0, "t": 0} for v in scaled.values()
             if init_norm[id(v)] > 0}
    mask_values = {k: m.numpy() for k, m in masks.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    try:
        for _ in range(iterations):
            b0, b1, b2 = batches.next(), batches.next(), batches.next()
            x, y = _concat(b0, b1)
            grads = gradients(x, y)
            current = [v.numpy() for v in variables]
            for v, w, g in zip(variables, current, grads):
                if g is None:
                    continue
                step = np.asarray(g)
                if id(v) in mask_values:
                    step = step * mask_values[id(v)]
                v.assign(w - eta * step)
            x, y = _concat(b0, b2)
            grads = gradients(x, y)
            for v, w in zip(variables, current):
                v.assign(w)
            for v, w, g in zip(variables, current, grads):
                st = state.get(id(v))
                if st is None or g is None:
                    continue
                norm = float(np.linalg.norm(w))
                if norm == 0.0:
                    continue
                grad = float(np.sum(np.asarray(g, np.float64) / eta * w)) * init_norm[id(v)] / norm
                grad = max(min(grad, grad_clip), -grad_clip) if grad_clip > 0 else grad
                st["t"] += 1
                st["m"] = st["m"] * beta1 + grad * (1 - beta1)
                st["v"] = st["v"] * beta2 + grad * grad * (1 - beta2)
                denom = math.sqrt(st["v"] / (1 - beta2 ** st["t"])) + eps
                floor = 0.0 if v.name in _BIAS_NAMES else float(min_scale)
                st["scale"] = max(st["scale"] - learning_rate / (1 - beta1 ** st["t"]) * st["m"] / denom,
                                  floor)
                v.assign((init[id(v)] * st["scale"]).astype(w.dtype))
        return {key: float(state[id(v)]["scale"]) for key, v in scaled.items() if id(v) in state}
    finally:
        for v, value in zip(model.variables, saved):
            v.assign(value)


def apply_lrsi_scales(model: keras.Model, scales: dict[str, float]) -> keras.Model:
    """Multiplies each variable named in `scales` by its scale, in place.

    Masked entries stay exactly zero. The scales are not kept anywhere in
    the model: training afterwards is plain training of the re-scaled
    weights, as in the reference (`LRsI/train_ticket.py`).

    Args:
        model: the model `scales` were searched on (or one with the same
            variable paths).
        scales: `{"sub_model/layer/weight": scale}` from `search_lrsi_scales`.

    Returns:
        `model`, for chaining.

    Raises:
        ValueError: a path in `scales` is not a variable of `model`, or a
            scale is not a finite number >= 0 (checked before any change).
    """
    by_key = {key: v for key, (v, _) in _variable_table(model).items()}
    unknown = sorted(set(scales) - set(by_key))
    if unknown:
        raise ValueError(f"`scales` names variables that model {model.name!r} does not "
                         f"have: {unknown[:5]}. Accepted: {sorted(by_key)[:5]}...")
    bad = {k: s for k, s in scales.items()
           if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0}
    if bad:
        raise ValueError(f"Every scale must be a finite number >= 0. Received: {bad}.")
    for key, scale in scales.items():
        v = by_key[key]
        v.assign(np.asarray(v.numpy()) * np.asarray(scale, v.dtype))
    return model
