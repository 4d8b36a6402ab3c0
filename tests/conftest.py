"""Shared pytest set-up: quiet TensorFlow, Keras on the TF backend, fresh state."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
from testing import skip_or_fail_in_ci  # noqa: E402


@pytest.fixture
def fashion_mnist():
    """The real Fashion-MNIST arrays from Debian's dataset-fashion-mnist."""
    from keras_sparse.datasets import load_fashion_mnist

    try:
        return load_fashion_mnist(allow_download=False)
    except FileNotFoundError as e:
        skip_or_fail_in_ci(str(e))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


# The edit-loop tier (`make test-fast`, `-m "not slow and not full"`): the first
# case of each parametrized test, no module that only runs end-to-end scripts,
# notebooks, subprocesses or fuzzing, and no test marked `@pytest.mark.full`
# (those took >= 4 s; every module keeps fast tests). `make test` runs every
# tier but `slow`.
FULL_TIER_MODULES = {
    "test_examples_demo.py",
    "test_examples_notebooks.py",
    "test_examples_scripts.py",
    "test_examples_transformer_rigl.py",
    "test_keras_sparse_fuzz.py",
    "test_benchmarks_on_device_train.py",
    "test_callbacks_distributed.py",
}


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        function = (item.path, item.cls, getattr(item, "originalname", item.name))
        if item.path.name in FULL_TIER_MODULES or function in seen:
            item.add_marker(pytest.mark.full)
        seen.add(function)
