"""Batch-hard mining: the farthest positive and the nearest negative of every anchor."""

from typing import Tuple

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMinerInBatch, TLabels, TTriplets
from oml.miners._utils import (
    ReprMixin,
    TLogs,
    check_features_and_labels,
    labels_to_tensor,
    mining_distances,
    same_label_masks,
)


class HardTripletsMiner(ReprMixin, ITripletsMinerInBatch):
    """For every anchor: its hardest positive (maximal distance) and hardest negative (minimal distance).

    One triplet per anchor (`Hermans et al., 2017 <https://arxiv.org/abs/1703.07737>`_); anchors
    without a positive or a negative in the batch are skipped. Costs one distance matrix (a GEMM)
    and two masked reductions; no gradient flows through the mining.

    >>> features = torch.tensor([[0.0], [1.0], [3.0], [1.5]])
    >>> HardTripletsMiner()._sample(features, [0, 0, 1, 1])
    (tensor([0, 1, 2, 3]), tensor([1, 0, 3, 2]), tensor([3, 3, 1, 1]))
    """

    def __init__(self) -> None:
        self.last_logs: TLogs = {}

    @torch.no_grad()
    def _sample(self, features: Tensor, labels: TLabels) -> Tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        dist = mining_distances(features)
        ids = torch.arange(len(labels), device=features.device)
        pos_mask, neg_mask = same_label_masks(labels, labels, self_ids=ids)
        inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
        ids_p = torch.where(pos_mask, dist, -inf).argmax(dim=1)
        ids_n = torch.where(neg_mask, dist, inf).argmin(dim=1)
        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        return ids[valid], ids_p[valid], ids_n[valid]

    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        ids_a, ids_p, ids_n = self._sample(features, labels)
        return features[ids_a], features[ids_p], features[ids_n]


__all__ = ["HardTripletsMiner"]
