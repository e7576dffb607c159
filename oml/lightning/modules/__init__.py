"""LightningModules for extractors and pairwise postprocessors."""
