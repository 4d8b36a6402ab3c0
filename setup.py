"""Installs keras_sparse and tflite_export.

Every piece of metadata is in pyproject.toml (PEP 621); the version is read
from keras_sparse/version.py. This file only lets older tools call setup.py.
"""

from setuptools import setup

setup()
