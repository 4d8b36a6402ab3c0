"""Model builders shared by the tflite_export tests."""

import numpy as np


def zero_out(model, density=0.1, block=1, seed=0):
    """Zeros (1 - density) of every kernel: random unstructured (block=1) or
    in 1 x `block` blocks along the Dense input dimension."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        k = np.asarray(kernel)
        if k.ndim == 2 and block > 1:
            n_in, n_out = k.shape
            keep = rng.random((n_in // block, n_out)) < density
            mask = np.repeat(keep, block, axis=0)
        else:
            mask = rng.random(k.shape) < density
        kernel.assign((k * mask).astype(k.dtype))
    return model


def mlp(sizes=(64, 128, 10), activation="relu", use_bias=True):
    import keras

    layers = [keras.Input((sizes[0],))]
    for n in sizes[1:-1]:
        layers.append(keras.layers.Dense(n, activation=activation,
                                         use_bias=use_bias))
    layers.append(keras.layers.Dense(sizes[-1], use_bias=use_bias))
    return keras.Sequential(layers)


def small_cnn(input_shape=(28, 28, 1), widths=(32, 64, 256), pool="max"):
    """conv32-pool-conv64-pool-dense256-dense10, ReLU."""
    import keras

    pool_cls = (keras.layers.MaxPooling2D if pool == "max"
                else keras.layers.AveragePooling2D)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(widths[0], 3, activation="relu"),
        pool_cls(),
        keras.layers.Conv2D(widths[1], 3, activation="relu", padding="same"),
        pool_cls(),
        keras.layers.Flatten(),
        keras.layers.Dense(widths[2], activation="relu"),
        keras.layers.Dense(10),
    ])
