"""Retrieval on top of embeddings: re-ranking postprocessors, a search index, classification by retrieval.

``RetrievalResults`` (the results of one evaluation, OML 4.0's name) lives in ``oml.metrics.retrieval_results``
and is exported here too.
"""

from oml.metrics.retrieval_results import RetrievalResults

__all__ = ["RetrievalResults"]
