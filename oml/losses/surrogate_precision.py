"""Surrogate precision@k loss on all in-batch pairs."""

from typing import Dict

from torch import Tensor, nn

from oml.functional.losses import check_reduction, get_reduced, surrogate_precision
from oml.interfaces.miners import TLabels
from oml.utils.checks import check_int
from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor, pairwise_dist


class SurrogatePrecision(nn.Module):
    """``1 - surrogate precision@k`` of every sample as a query against the whole batch (`Patel et al.,
    2022 <https://arxiv.org/abs/2108.11179>`_).

    Every sample of the batch is a query and the batch is the gallery, the query included: it is
    always its own nearest match and counts as a hit, hence ``k + 1`` is used internally, so that the
    top ``k`` other samples are evaluated. With the default ``temperature1 = 1`` the sigmoid is soft, so
    even a perfect batch has a positive loss; it is the ranking of the batch that the gradient improves. See
    ``oml.functional.losses.surrogate_precision`` for the formula. Memory is ``O(B^3)``.

    Args:
        k: the ``k`` of precision@k.
        temperature1: temperature of the "rank <= k" sigmoid.
        temperature2: temperature of the pairwise comparison sigmoid.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    >>> import torch
    >>> features = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    >>> criterion = SurrogatePrecision(k=1)
    >>> criterion(features, torch.tensor([0, 0, 1, 1])) < criterion(features, torch.tensor([0, 1, 0, 1]))
    tensor(True)
    """

    criterion_name = "surrogate_precision"

    def __init__(self, k: int, temperature1: float = 1.0, temperature2: float = 0.01, reduction: str = "mean"):
        super().__init__()
        self.k = check_int(k, "k")
        check_reduction(reduction)
        self.temperature1 = temperature1
        self.temperature2 = temperature2
        self.reduction = reduction
        self.last_logs: Dict[str, float] = {}

    def forward(self, features: Tensor, labels: TLabels) -> Tensor:
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        distances = pairwise_dist(features, features, p=2)
        mask_gt = labels.unsqueeze(1) == labels.unsqueeze(0)
        precision = surrogate_precision(
            distances, mask_gt, self.k + 1, self.temperature1, self.temperature2, reduction="none"
        )
        return get_reduced(1.0 - precision, self.reduction)


__all__ = ["SurrogatePrecision"]
