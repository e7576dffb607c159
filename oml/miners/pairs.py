"""Positive and negative pairs for training pairwise models (re-rankers)."""

from typing import Tuple

import torch
from torch import Tensor

from oml.interfaces.miners import TLabels
from oml.miners._utils import ReprMixin, TLogs
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor


class PairsMiner(ReprMixin):
    """Unique pairs ``(i, j)`` of a batch with the target ``is_negative``.

    With ``hard_mining`` the pairs are taken apart from the batch-hard triplets of
    ``HardTripletsMiner`` (every anchor with its hardest positive and its hardest negative); otherwise
    they are the pairs of all triplets of the batch, i.e. every positive pair whose label has a
    negative in the batch and every negative pair where one side has a positive. Pairs are unordered
    and unique: ``i < j``.

    Args:
        hard_mining: hard pairs (``True``) or all pairs (``False``).

    >>> ids1, ids2, is_negative = PairsMiner(hard_mining=False).sample(torch.zeros(3, 2), [0, 0, 1])
    >>> ids1.tolist(), ids2.tolist(), is_negative.tolist()
    ([0, 0, 1], [1, 2, 2], [False, True, True])
    """

    def __init__(self, hard_mining: bool = True):
        self.hard_mining = hard_mining
        self.miner = HardTripletsMiner()
        self.last_logs: TLogs = {}

    @staticmethod
    def _unique_pairs(ids1: Tensor, ids2: Tensor, n: int) -> Tuple[Tensor, Tensor]:
        low, high = torch.minimum(ids1, ids2), torch.maximum(ids1, ids2)
        keys = torch.unique(low * n + high)
        return keys // n, keys % n

    def sample(self, features: Tensor, labels: TLabels) -> Tuple[Tensor, Tensor, Tensor]:
        """Mine pairs.

        Returns:
            ``(ids1, ids2, is_negative)``: positive pairs first, then negative pairs.
        """
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        n = len(labels)
        if self.hard_mining:
            ids_a, ids_p, ids_n = self.miner.sample_ids(features, labels)
            pos_1, pos_2 = self._unique_pairs(ids_a, ids_p, n)
            neg_1, neg_2 = self._unique_pairs(ids_a, ids_n, n)
        else:
            same = labels.unsqueeze(1) == labels.unsqueeze(0)
            upper = torch.ones_like(same).triu_(diagonal=1)
            has_pos = (same.sum(dim=1) > 1).unsqueeze(1)
            has_neg = (~same).any(dim=1).unsqueeze(1)
            pos_1, pos_2 = (same & upper & has_neg).nonzero(as_tuple=True)
            neg_1, neg_2 = (~same & upper & (has_pos | has_pos.T)).nonzero(as_tuple=True)
        ids1, ids2 = torch.cat([pos_1, neg_1]), torch.cat([pos_2, neg_2])
        is_negative = torch.zeros(len(ids1), dtype=torch.bool, device=features.device)
        is_negative[len(pos_1) :] = True
        self.last_logs = {"n_pos_pairs": float(len(pos_1)), "n_neg_pairs": float(len(neg_1))}
        return ids1, ids2, is_negative


__all__ = ["PairsMiner"]
