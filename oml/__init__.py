"""oml: train, validate and serve embedding models (metric learning) with PyTorch."""

__version__ = "0.4.4"
