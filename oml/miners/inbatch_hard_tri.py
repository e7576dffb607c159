"""Batch-hard mining: the farthest positive and the nearest negative of every anchor."""

from typing import Tuple

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMinerInBatch
from oml.miners._utils import ReprMixin, TLogs, batch_distances_and_masks


class HardTripletsMiner(ReprMixin, ITripletsMinerInBatch):
    """For every anchor: its hardest positive (maximal distance) and hardest negative (minimal distance).

    One triplet per anchor (`Hermans et al., 2017 <https://arxiv.org/abs/1703.07737>`_); anchors
    without a positive or a negative in the batch are skipped. Costs one distance matrix (a GEMM)
    and two masked reductions; no gradient flows through the mining.

    >>> features = torch.tensor([[0.0], [1.0], [3.0], [1.5]])
    >>> HardTripletsMiner().sample_ids(features, [0, 0, 1, 1])
    (tensor([0, 1, 2, 3]), tensor([1, 0, 3, 2]), tensor([3, 3, 1, 1]))
    """

    def __init__(self) -> None:
        self.last_logs: TLogs = {}

    @torch.no_grad()
    def _sample(self, features: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        dist, pos_mask, neg_mask = batch_distances_and_masks(features, labels)
        inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
        ids_p = torch.where(pos_mask, dist, -inf).argmax(dim=1)
        ids_n = torch.where(neg_mask, dist, inf).argmin(dim=1)
        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        ids = torch.arange(len(labels), device=features.device)
        return ids[valid], ids_p[valid], ids_n[valid]


__all__ = ["HardTripletsMiner"]
