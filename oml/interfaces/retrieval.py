"""Interface of postprocessors that re-rank retrieval results."""

from abc import ABC, abstractmethod
from typing import Any, Dict, List

from torch import Tensor


class IDistancesPostprocessor(ABC):
    """Updates the query-gallery distances, e.g. re-ranks each query's top-n with a pairwise model."""

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


__all__ = ["IDistancesPostprocessor"]
