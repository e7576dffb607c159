"""Use a `pytorch-metric-learning <https://github.com/KevinMusgrave/pytorch-metric-learning>`_ miner as an OML miner."""

from typing import Any, Tuple

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMinerInBatch, TLabels
from oml.miners._utils import TLogs
from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor


def pml_indices_to_triplets(indices: Tuple[Tensor, ...]) -> Tuple[Tensor, Tensor, Tensor]:
    """PML miner output as triplets: a triplet tuple is returned as is; pairs ``(a1, p, a2, n)`` are
    combined into every ``(a, p, n)`` with ``a1 == a2 == a``."""
    if len(indices) == 3:
        return indices[0], indices[1], indices[2]
    if len(indices) != 4:
        raise ValueError(f"A PML miner returns 3 (triplets) or 4 (pairs) index tensors, got {len(indices)}.")
    a1, p, a2, n = indices
    slot_p, slot_n = torch.where(a1.unsqueeze(1) == a2.unsqueeze(0))
    return a1[slot_p], p[slot_p], n[slot_n]


def pml_indices_logs(indices: Tuple[Tensor, ...]) -> TLogs:
    """Sizes of a PML miner output (number of triplets, or of positive and negative pairs)."""
    if len(indices) == 3:
        return {"n_triplets": float(len(indices[0]))}
    return {"n_pos_pairs": float(len(indices[0])), "n_neg_pairs": float(len(indices[2]))}


class PMLMiner(ITripletsMinerInBatch):
    """Wraps a PML miner (e.g. ``MultiSimilarityMiner()``, ``BatchHardMiner()``) into the OML miner interface.

    ``mine`` returns PML's raw indices (pairs or triplets, as a PML loss expects them); ``sample_ids``
    and ``sample`` return (checked) triplets of indices and of features, so the wrapper plugs into
    ``TripletLossWithMiner`` too (pairs are combined into triplets sharing the anchor). ``last_logs``
    holds the size of the last mined set. Needs ``pytorch-metric-learning`` (``pip install "oml[pml]"``);
    the registries build it from names like ``pml.MultiSimilarityMiner``.

    Args:
        miner: an instance of a PML miner (a ``pytorch_metric_learning.miners.BaseMiner``).
    """

    def __init__(self, miner: Any):
        if not callable(miner):
            raise TypeError(f"miner must be a PML miner instance, got {type(miner).__name__}.")
        self.miner = miner
        self.last_logs: TLogs = {}

    @property
    def miner_name(self) -> str:
        return type(self.miner).__name__

    def mine(self, features: Tensor, labels: TLabels) -> Tuple[Tensor, ...]:
        """PML's raw output: ``(a, p, n)`` or ``(a1, p, a2, n)`` indices."""
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        indices = tuple(self.miner(features, labels))
        self.last_logs = pml_indices_logs(indices)
        return indices

    def _sample(self, features: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return pml_indices_to_triplets(self.mine(features, labels))

    def __repr__(self) -> str:
        return f"PMLMiner({self.miner!r})"


__all__ = ["PMLMiner", "pml_indices_to_triplets", "pml_indices_logs"]
