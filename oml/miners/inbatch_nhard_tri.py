"""N-hard mining: several hardest positives and negatives per anchor, or a range of hardness ranks."""

from typing import Tuple, Union

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMinerInBatch, TLabels, TTriplets
from oml.miners._utils import (
    ReprMixin,
    TLogs,
    check_features_and_labels,
    check_range,
    labels_to_tensor,
    mining_distances,
    n_hard_triplets,
    same_label_masks,
)

TRange = Union[int, Tuple[int, int]]


class NHardTripletsMiner(ReprMixin, ITripletsMinerInBatch):
    """For every anchor, its ``n_positive`` hardest positives x ``n_negative`` hardest negatives.

    A range ``(min, max)`` takes the positives (negatives) of hardness ranks ``min .. max - 1``, rank 0
    being the hardest (farthest positive, nearest negative): e.g. ``n_negative=(1, 4)`` skips the very
    hardest negative, which is often a labelling mistake, and takes the next three. An int ``n`` is the
    range ``(0, n)``; ``NHardTripletsMiner(1, 1)`` mines the same triplets as ``HardTripletsMiner``.
    Anchors with fewer candidates than requested use what they have.

    Args:
        n_positive: an int or a ``(min, max)`` range of hardness ranks of positives.
        n_negative: an int or a ``(min, max)`` range of hardness ranks of negatives.

    >>> features = torch.tensor([[0.0], [1.0], [2.5], [5.0], [6.0]])
    >>> ids_a, ids_p, ids_n = NHardTripletsMiner(n_positive=1, n_negative=(1, 2))._sample(features, [0, 0, 0, 1, 1])
    >>> ids_a.tolist(), ids_p.tolist(), ids_n.tolist()
    ([0, 1, 2, 3, 4], [2, 2, 0, 4, 3], [4, 4, 4, 1, 1])
    """

    def __init__(self, n_positive: TRange = 1, n_negative: TRange = 1):
        self.n_positive = n_positive
        self.n_negative = n_negative
        self.positive_range = check_range(n_positive, "n_positive")
        self.negative_range = check_range(n_negative, "n_negative")
        self.last_logs: TLogs = {}

    @torch.no_grad()
    def _sample(self, features: Tensor, labels: TLabels) -> Tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        dist = mining_distances(features)
        ids = torch.arange(len(labels), device=features.device)
        pos_mask, neg_mask = same_label_masks(labels, labels, self_ids=ids)
        return n_hard_triplets(dist, pos_mask, neg_mask, self.positive_range, self.negative_range)

    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        ids_a, ids_p, ids_n = self._sample(features, labels)
        return features[ids_a], features[ids_p], features[ids_n]


__all__ = ["NHardTripletsMiner"]
