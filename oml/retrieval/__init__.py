"""Retrieval on top of embeddings: re-ranking postprocessors, a search index, classification by retrieval.

``RetrievalResults`` (the results of one evaluation, OML 4.0's name) lives in ``oml.metrics.retrieval_results``
and is exported here too (imported on first use, so that ``oml.retrieval.index`` and ``oml.retrieval.sharded``
load without the metrics and plotting stack: it matters in every spawned DDP process).
"""

from typing import Any

__all__ = ["RetrievalResults"]


def __getattr__(name: str) -> Any:
    if name == "RetrievalResults":
        from oml.metrics.retrieval_results import RetrievalResults

        return RetrievalResults
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
