"""Metrics accumulated over an epoch: ``EmbeddingMetrics`` (retrieval), ``AccuracyOnTriplets``, ``Accumulator``."""
