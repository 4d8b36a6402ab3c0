"""Dataset loaders used by the examples, benchmarks and marked tests.

Fashion-MNIST is read from the IDX files of Debian's `dataset-fashion-mnist`
package, so no network is needed on the project's machines. CIFAR goes through
tensorflow-datasets, which is an optional extra (`pip install
keras_sparse[examples]`) and needs a network on first use.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_ENV_VAR",
    "FASHION_MNIST_FILES",
    "load_cifar",
    "load_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_ENV_VAR = "KERAS_SPARSE_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_APT_HINT = "sudo apt-get install -y dataset-fashion-mnist"

# IDX type codes (third byte of the magic number) -> numpy big-endian dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

PathLike = str | os.PathLike


def read_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) into a numpy array.

    The IDX format (used by MNIST and Fashion-MNIST) starts with a 4-byte
    magic number `0x00 0x00 <type code> <ndim>`, then `ndim` big-endian
    uint32 dimension sizes, then the data in row-major order.

    Args:
        path: path to a `.gz` or uncompressed IDX file.

    Returns:
        A numpy array with the file's shape, in native byte order.

    Raises:
        ValueError: if the magic number, type code or size is invalid.

    Example:

    >>> labels = keras_sparse.datasets.read_idx(
    ...     "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    >>> labels.shape
    (10000,)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(
            f"{path}: too short to be an IDX file ({len(raw)} bytes); "
            "expected a 4-byte magic number followed by dimensions and data."
        )
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim < 1:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected "
            "0x0000TTNN with type code TT in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)} and NN >= 1 dimensions "
            "(e.g. 0x00000803 for images, 0x00000801 for labels)."
        )
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need "
            f"{header_end} bytes, file has {len(raw)}."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(
            f"{path}: IDX data size mismatch: shape {shape} of {dtype} needs "
            f"{expected} bytes, file has {len(raw) - header_end}."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _candidate_dirs(data_dir: PathLike | None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    env = os.environ.get(FASHION_MNIST_ENV_VAR)
    if env:
        dirs.append(Path(env))
    dirs.append(Path(DEFAULT_FASHION_MNIST_DIR))
    return dirs


def _has_all_files(directory: Path) -> bool:
    return all((directory / name).is_file() for name in FASHION_MNIST_FILES.values())


def _prepare(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 3:
        raise ValueError(
            f"Expected images of shape (N, height, width), received {x.shape}."
        )
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"Expected {x.shape[0]} labels of shape (N,), received {y.shape}."
        )
    x = (x.astype(np.float32) / np.float32(255.0))[..., np.newaxis]
    return x, y.astype(np.int64)


def load_fashion_mnist(
    data_dir: PathLike | None = None,
    allow_download: bool = True,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads Fashion-MNIST (60k train / 10k test, 28x28 grayscale, 10 classes).

    Looks for the four IDX `.gz` files (`train-images-idx3-ubyte.gz`, ...)
    in, in order: `data_dir`, the directory named by the environment variable
    `KERAS_SPARSE_FASHION_MNIST_DIR`, and `/usr/share/datasets/fashion-mnist`
    (Debian's `dataset-fashion-mnist` package). If none has them, falls back
    to `keras.datasets.fashion_mnist.load_data()`, which downloads.

    Args:
        data_dir: optional directory holding the four IDX `.gz` files.
        allow_download: whether to fall back to the Keras downloader when no
            local copy is found.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images as float32 in
        `[0, 1]` of shape `(N, 28, 28, 1)`, labels as int64 of shape `(N,)`.

    Raises:
        FileNotFoundError: if no local copy is found and the download is not
            allowed or fails. The message lists the directories tried and the
            apt command that installs the data.
        ValueError: if a file found is not a valid IDX file.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = (
    ...     keras_sparse.datasets.load_fashion_mnist())
    >>> x_train.shape, x_train.dtype
    ((60000, 28, 28, 1), dtype('float32'))

    Reference:
        Xiao et al., "Fashion-MNIST: a Novel Image Dataset for Benchmarking
        Machine Learning Algorithms", 2017. https://arxiv.org/abs/1708.07747
    """
    tried = _candidate_dirs(data_dir)
    for directory in tried:
        if _has_all_files(directory):
            arrays = {
                key: read_idx(directory / name)
                for key, name in FASHION_MNIST_FILES.items()
            }
            train = _prepare(arrays["x_train"], arrays["y_train"])
            test = _prepare(arrays["x_test"], arrays["y_test"])
            return train, test

    download_error = None
    if allow_download:
        try:
            import keras

            (x_tr, y_tr), (x_te, y_te) = keras.datasets.fashion_mnist.load_data()
            return _prepare(x_tr, y_tr), _prepare(x_te, y_te)
        except Exception as e:  # network errors come in many types.
            download_error = e

    tried_str = ", ".join(str(d) for d in tried)
    msg = (
        "Fashion-MNIST not found. Looked for "
        f"{sorted(FASHION_MNIST_FILES.values())} in: {tried_str}. "
        f"Install the Debian package with `{_APT_HINT}`, or pass `data_dir=`, "
        f"or set {FASHION_MNIST_ENV_VAR} to a directory holding the files."
    )
    if download_error is not None:
        msg += (
            " The fallback keras.datasets.fashion_mnist.load_data() failed too: "
            f"{type(download_error).__name__}: {download_error}"
        )
    elif not allow_download:
        msg += " (Download fallback disabled: allow_download=False.)"
    raise FileNotFoundError(msg)


_CIFAR_NAMES = ("cifar10", "cifar100")


def load_cifar(
    name: str = "cifar10",
    data_dir: PathLike | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads CIFAR-10 or CIFAR-100 through tensorflow-datasets.

    tensorflow-datasets is an optional dependency (the `examples` extra) and
    is imported only when this function is called. The first call downloads
    the data (about 160 MB), so it needs a network.

    Args:
        name: `"cifar10"` or `"cifar100"`.
        data_dir: optional tensorflow-datasets data directory.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images as float32 in
        `[0, 1]` of shape `(N, 32, 32, 3)`, labels as int64 of shape `(N,)`.

    Raises:
        ValueError: if `name` is not one of `"cifar10"`, `"cifar100"`.
        ImportError: if tensorflow-datasets is not installed.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = (
    ...     keras_sparse.datasets.load_cifar("cifar10"))
    >>> x_train.shape
    (50000, 32, 32, 3)
    """
    if name not in _CIFAR_NAMES:
        raise ValueError(
            f"Unknown CIFAR dataset name {name!r}; accepted: {list(_CIFAR_NAMES)}."
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"load_cifar({name!r}) needs tensorflow-datasets, which is not "
            "installed. Install it with `pip install tensorflow-datasets` or "
            "`pip install 'keras_sparse[examples]'`. For offline runs use "
            "keras_sparse.datasets.load_fashion_mnist() instead."
        ) from e

    kwargs = {} if data_dir is None else {"data_dir": os.fspath(data_dir)}
    splits = tfds.as_numpy(
        tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True, **kwargs)
    )
    (x_tr, y_tr), (x_te, y_te) = splits
    scale = np.float32(255.0)
    return (
        (x_tr.astype(np.float32) / scale, y_tr.astype(np.int64)),
        (x_te.astype(np.float32) / scale, y_te.astype(np.int64)),
    )
