"""Installs keras_sparse and tflite_export.

The version lives in keras_sparse/version.py and is read here without
importing the package (importing it would import TensorFlow).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version() -> str:
    text = (HERE / "keras_sparse" / "version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if match is None:
        raise RuntimeError("Cannot find __version__ in keras_sparse/version.py")
    return match.group(1)


def read_readme() -> str:
    readme = HERE / "README.md"
    return readme.read_text(encoding="utf-8") if readme.exists() else ""


EXTRAS = {
    # TensorFlow >= 2.20 no longer pulls in TensorBoard; SparsityLogger's
    # per-layer scalars go through keras.callbacks.TensorBoard, which needs it.
    "tensorboard": ["tensorboard>=2.17"],
    "test": ["pytest>=7", "hypothesis>=6", "pytest-timeout>=2", "tensorboard>=2.17", "ruff>=0.6"],
    "tflite": ["ai-edge-litert"],
    "bench": ["matplotlib>=3.7", "tqdm>=4.60"],
    "examples": [
        "tensorflow-datasets>=4.9",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "nbclient>=0.7",
        "ipykernel>=6",
    ],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="keras_sparse",
    version=read_version(),
    description=(
        "Sparse neural network training for Keras 3: masks, ERK allocation, "
        "dynamic sparse training, and TFLite export."
    ),
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(
        include=["keras_sparse", "keras_sparse.*", "tflite_export", "tflite_export.*"]
    ),
    python_requires=">=3.11",
    install_requires=[
        "tensorflow>=2.17",
        "keras>=3.5",
        "numpy",
    ],
    extras_require=EXTRAS,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
