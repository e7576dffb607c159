"""Interfaces of triplet miners."""

from abc import ABC, abstractmethod
from typing import List, Tuple, Union

import numpy as np
from torch import Tensor

TTriplets = Tuple[Tensor, Tensor, Tensor]
TTripletsIds = Tuple[List[int], List[int], List[int]]
TLabels = Union[List[int], Tensor, np.ndarray]


def labels2list(labels: TLabels) -> List[int]:
    """Convert labels given as a list, a tensor or an array into a list of ints."""
    if isinstance(labels, Tensor):
        return labels.squeeze().tolist() if labels.ndim > 1 else labels.tolist()
    if isinstance(labels, np.ndarray):
        return labels.tolist()
    return list(labels)


class ITripletsMiner(ABC):
    """Forms triplets ``(anchor, positive, negative)`` of features from a batch."""

    @abstractmethod
    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        raise NotImplementedError


class ITripletsMinerInBatch(ITripletsMiner):
    """A miner that selects triplets inside the current batch by their indices."""

    @abstractmethod
    def _sample(self, features: Tensor, labels: List[int]) -> TTripletsIds:
        """Return the indices ``(ids_anchor, ids_positive, ids_negative)`` of the mined triplets."""
        raise NotImplementedError

    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        ids_a, ids_p, ids_n = self._sample(features, labels=labels2list(labels))
        return features[ids_a], features[ids_p], features[ids_n]


__all__ = ["TTriplets", "TTripletsIds", "TLabels", "labels2list", "ITripletsMiner", "ITripletsMinerInBatch"]
