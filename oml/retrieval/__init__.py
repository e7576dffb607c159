"""Retrieval on top of embeddings: re-ranking postprocessors, a search index, classification by retrieval."""
