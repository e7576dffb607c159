"""Postprocessors that re-rank each query's nearest galleries."""
