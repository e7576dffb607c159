"""Interface of postprocessors that re-rank retrieval results."""

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional

from torch import Tensor


class IDistancesPostprocessor(ABC):
    """Updates the query-gallery distances, e.g. re-ranks each query's top-n with a pairwise model.

    OML's contract is ``process`` / ``process_by_dict`` on a dense ``[Q, G]`` matrix. A postprocessor that only
    changes each query's ``top_n`` nearest galleries should also set ``top_n`` and implement ``process_top_n``:
    then ``EmbeddingMetrics`` never builds the dense matrix and passes only the top-n block. Without it,
    ``EmbeddingMetrics`` falls back to the dense ``process_by_dict`` (O(Q x G) memory).
    """

    #: how many nearest galleries of each query ``process_top_n`` re-scores (None: not supported)
    top_n: Optional[int] = None

    @abstractmethod
    def process(self, distances: Tensor, queries: Any, galleries: Any) -> Tensor:
        """Return new distances ``[Q, G]`` for the given queries and galleries (the input is not mutated)."""
        raise NotImplementedError

    @abstractmethod
    def process_by_dict(self, distances: Tensor, data: Dict[str, Any]) -> Tensor:
        """The same as ``process`` with queries and galleries taken from ``data`` by ``needed_keys``."""
        raise NotImplementedError

    @property
    @abstractmethod
    def needed_keys(self) -> List[str]:
        raise NotImplementedError

    def process_top_n(
        self, distances: Tensor, query_ids: Tensor, retrieved_ids: Tensor, data: Dict[str, Any]
    ) -> Tensor:
        """Re-score the top-n block of every query.

        Args:
            distances: ``[Q, n]`` current distances of each query's ``n <= top_n`` nearest galleries, ascending.
            query_ids: ``[Q]`` rows of the queries in ``data`` (the accumulated dataset).
            retrieved_ids: ``[Q, n]`` rows of the retrieved galleries in ``data``.
            data: the accumulated data (e.g. ``EmbeddingMetrics.acc.storage``) with ``needed_keys``.

        Returns:
            ``[Q, n]`` new distances of the same pairs; the caller re-sorts each block, and the galleries
            after the first ``n`` keep their order after the re-ranked ones (as in OML).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement process_top_n.")

    def supports_top_n(self) -> bool:
        """True if ``top_n`` is set and ``process_top_n`` is implemented (the memory-efficient path)."""
        implemented = type(self).process_top_n is not IDistancesPostprocessor.process_top_n
        return implemented and isinstance(self.top_n, int) and self.top_n > 0


__all__ = ["IDistancesPostprocessor"]
