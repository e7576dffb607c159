"""Models built from other models: MLP projection, siamese pairwise models."""
