"""Version of keras_sparse."""

__version__ = "0.2.0"
