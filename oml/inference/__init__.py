"""Batched inference of extractors and pairwise models over images, tables and embeddings (DDP-aware)."""
