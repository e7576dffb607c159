"""Pure tensor functions (no state, no modules): losses, label smoothing, kNN search and retrieval metrics.

Import from the submodules, e.g. ``from oml.functional.losses import surrogate_precision``.
"""
