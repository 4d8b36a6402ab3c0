"""Version of keras_sparse."""

__version__ = "0.1.0"
