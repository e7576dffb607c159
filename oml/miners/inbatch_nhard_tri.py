"""N-hard mining: several hardest positives and negatives per anchor, or a range of hardness ranks."""

from typing import Tuple, Union

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMinerInBatch
from oml.miners._utils import ReprMixin, TLogs, batch_distances_and_masks, check_range, n_hard_triplets

TRange = Union[int, Tuple[int, int]]


class NHardTripletsMiner(ReprMixin, ITripletsMinerInBatch):
    """For every anchor, its ``n_positive`` hardest positives x ``n_negative`` hardest negatives.

    As in OML 0.4.4, a range ``(first, last)`` counts hardness ranks from 1 (the hardest: the farthest
    positive, the nearest negative) and includes both ends: ``n_negative=(2, 5)`` takes the negatives
    from the 2nd hardest to the 5th one, skipping the very hardest, which is often a labelling mistake.
    An int ``n`` is the range ``(1, n)``; ``NHardTripletsMiner(1, 1)`` mines the same triplets as
    ``HardTripletsMiner``. So an anchor with enough candidates gives
    ``(last_pos - first_pos + 1) * (last_neg - first_neg + 1)`` triplets; anchors with fewer candidates
    use what they have.

    Args:
        n_positive: an int or a ``(first, last)`` range of hardness ranks of positives.
        n_negative: an int or a ``(first, last)`` range of hardness ranks of negatives.

    >>> features = torch.tensor([[0.0], [1.0], [2.5], [5.0], [6.0]])
    >>> ids_a, ids_p, ids_n = NHardTripletsMiner(n_positive=1, n_negative=(2, 2)).sample_ids(features, [0, 0, 0, 1, 1])
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
    def _sample(self, features: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        dist, pos_mask, neg_mask = batch_distances_and_masks(features, labels)
        return n_hard_triplets(dist, pos_mask, neg_mask, self.positive_range, self.negative_range)


__all__ = ["NHardTripletsMiner"]
