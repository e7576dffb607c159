"""Interface of batch samplers."""

from abc import ABC, abstractmethod
from typing import Iterator, List


class IBatchSampler(ABC):
    """Yields batches as lists of dataset indices (pass it as ``DataLoader(batch_sampler=...)``)."""

    @abstractmethod
    def __len__(self) -> int:
        raise NotImplementedError

    @abstractmethod
    def __iter__(self) -> Iterator[List[int]]:
        raise NotImplementedError


__all__ = ["IBatchSampler"]
