"""Tests for keras_sparse.datasets: IDX parsing and Fashion-MNIST lookup."""

import gzip
import struct
import sys

import numpy as np
import pytest

from keras_sparse import datasets


def _write_idx(path, array, type_code=0x08, magic=None, compress=True):
    array = np.asarray(array)
    header = magic if magic is not None else bytes([0, 0, type_code, array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    payload = header + array.astype(dtype).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def _write_fake_fashion_mnist(directory, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=(n_train,), dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=(n_test,), dtype=np.uint8),
    }
    arrays["x_train"][0, 0, 0] = 255  # make sure the max value is present
    arrays["x_train"][0, 0, 1] = 0
    for key, name in datasets.FASHION_MNIST_FILES.items():
        _write_idx(directory / name, arrays[key])
    return arrays


def test_read_idx_roundtrip_gzip_and_plain(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    gz = _write_idx(tmp_path / "a-idx3-ubyte.gz", data)
    plain = _write_idx(tmp_path / "a-idx3-ubyte", data, compress=False)
    for path in (gz, plain):
        out = datasets.read_idx(path)
        assert out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, data)


def test_read_idx_multibyte_big_endian(tmp_path):
    data = np.array([1, -2, 70000, 2**30], dtype=np.int32)
    out = datasets.read_idx(_write_idx(tmp_path / "i.gz", data, type_code=0x0C))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, data)


def test_read_idx_bad_magic_raises(tmp_path):
    data = np.zeros((2, 2), dtype=np.uint8)
    path = _write_idx(tmp_path / "bad.gz", data, magic=bytes([0x1F, 0, 0x08, 2]))
    with pytest.raises(ValueError, match="bad IDX magic number 0x1f000802"):
        datasets.read_idx(path)


def test_read_idx_unknown_type_code_raises(tmp_path):
    path = tmp_path / "bad_type.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="magic number"):
        datasets.read_idx(path)


def test_read_idx_truncated_data_raises(tmp_path):
    path = tmp_path / "short.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="size mismatch"):
        datasets.read_idx(path)


def test_load_fashion_mnist_from_data_dir(tmp_path):
    raw = _write_fake_fashion_mnist(tmp_path, n_train=5, n_test=3)
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(
        data_dir=tmp_path, allow_download=False
    )
    assert x_train.shape == (5, 28, 28, 1) and x_test.shape == (3, 28, 28, 1)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.shape == (5,) and y_test.shape == (3,)
    assert np.issubdtype(y_train.dtype, np.integer)
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_allclose(x_train[..., 0], raw["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(x_test[..., 0], raw["x_test"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, raw["y_train"])
    np.testing.assert_array_equal(y_test, raw["y_test"])


def test_load_fashion_mnist_env_var(tmp_path, monkeypatch):
    raw = _write_fake_fashion_mnist(tmp_path, n_train=4, n_test=2)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV_VAR, str(tmp_path))
    (_, y_train), _ = datasets.load_fashion_mnist(
        data_dir=tmp_path / "missing", allow_download=False
    )
    np.testing.assert_array_equal(y_train, raw["y_train"])


def test_load_fashion_mnist_missing_names_paths_and_apt(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV_VAR, str(tmp_path / "env_dir"))
    monkeypatch.setattr(datasets, "DEFAULT_FASHION_MNIST_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist(data_dir=tmp_path / "arg_dir", allow_download=False)
    msg = str(info.value)
    assert str(tmp_path / "arg_dir") in msg
    assert str(tmp_path / "env_dir") in msg
    assert str(tmp_path / "none") in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg


def test_load_fashion_mnist_bad_magic_in_data_dir(tmp_path):
    _write_fake_fashion_mnist(tmp_path)
    _write_idx(
        tmp_path / datasets.FASHION_MNIST_FILES["y_test"],
        np.zeros(3, dtype=np.uint8),
        magic=bytes([0, 1, 0x08, 1]),
    )
    with pytest.raises(ValueError, match="magic number"):
        datasets.load_fashion_mnist(data_dir=tmp_path, allow_download=False)


def test_load_cifar_bad_name():
    with pytest.raises(ValueError, match="'cifar1000'.*cifar10"):
        datasets.load_cifar("cifar1000")


def test_load_cifar_without_tfds_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        datasets.load_cifar("cifar10")


@pytest.mark.full
@pytest.mark.real_data
def test_real_fashion_mnist(fashion_mnist):
    (x_train, y_train), (x_test, y_test) = fashion_mnist
    assert x_train.shape == (60000, 28, 28, 1)
    assert x_test.shape == (10000, 28, 28, 1)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    # Fashion-MNIST is balanced: 6000 / 1000 examples per class.
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [1000] * 10)
