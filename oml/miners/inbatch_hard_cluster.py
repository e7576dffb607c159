"""Hard cluster mining: triplets of label centres."""

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMiner, TLabels, TTriplets
from oml.miners._utils import ReprMixin, TLogs, mining_distances
from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor


class HardClusterMiner(ReprMixin, ITripletsMiner):
    """One triplet per label, built from the label centres (`Hard cluster loss <https://arxiv.org/abs/1812.10325>`_).

    For every label in the batch: the anchor is the mean of its features, the positive is its sample
    farthest from that mean, the negative is the nearest mean of another label. The means keep their
    gradient. Unlike OML 0.4.4, labels may have different numbers of samples (a P x K layout is not
    required), but the batch needs at least 2 labels, each with at least 2 samples.

    >>> features = torch.tensor([[0.0], [2.0], [10.0], [11.0]])
    >>> anchor, positive, negative = HardClusterMiner().sample(features, [0, 0, 1, 1])
    >>> anchor.squeeze(1).tolist(), positive.squeeze(1).tolist(), negative.squeeze(1).tolist()
    ([1.0, 10.5], [0.0, 10.0], [10.5, 1.0])
    """

    def __init__(self) -> None:
        self.last_logs: TLogs = {}

    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        unique, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        if len(unique) < 2:
            raise ValueError(f"HardClusterMiner needs at least 2 labels in a batch, got {len(unique)}.")
        if (counts < 2).any():
            bad = unique[counts < 2][0].item()
            raise ValueError(f"HardClusterMiner needs at least 2 samples of every label, label {bad} has 1.")
        n_labels = len(unique)
        means = torch.zeros((n_labels, features.shape[1]), dtype=features.dtype, device=features.device)
        means = means.index_add(0, inverse, features) / counts.unsqueeze(1).to(features.dtype)
        with torch.no_grad():
            dist_to_mean = (features - means[inverse]).pow(2).sum(dim=1)
            table = torch.full((n_labels, len(labels)), float("-inf"), dtype=dist_to_mean.dtype, device=features.device)
            table[inverse, torch.arange(len(labels), device=features.device)] = dist_to_mean
            ids_p = table.argmax(dim=1)
            dist_means = mining_distances(means)
            dist_means.fill_diagonal_(float("inf"))
            ids_n = dist_means.argmin(dim=1)
        return means, features[ids_p], means[ids_n]


__all__ = ["HardClusterMiner"]
