"""Streaming accuracy on triplets: the share of (anchor, positive, negative) with d(a, p) < d(a, n)."""

from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from oml.const import EMBEDDINGS_KEY
from oml.functional.metrics import calculate_accuracy_on_triplets
from oml.interfaces.metrics import IBasicMetric
from oml.utils.misc_torch import OnlineAvgDict


class AccuracyOnTriplets(IBasicMetric):
    """Average triplet accuracy over an epoch, overall and (optionally) per category.

    A batch holds ``[3 * n, D]`` embeddings laid out as ``a, p, n, a, p, n, ...``; categories (if any) are given
    per triplet (``n`` values) or per embedding (``3 n`` values, the anchors' are used).

    >>> metric = AccuracyOnTriplets()
    >>> metric.setup()
    >>> metric.update_data({"embeddings": torch.tensor([[0.0], [1.0], [3.0], [0.0], [2.0], [1.0]])})
    >>> metric.compute_metrics()
    {'OVERALL': {'accuracy_on_triplets': 0.5}}
    """

    metric_name = "accuracy_on_triplets"

    def __init__(self, embeddings_key: str = EMBEDDINGS_KEY, categories_key: Optional[str] = None):
        self.embeddings_key = embeddings_key
        self.categories_key = categories_key
        self.avg_online = OnlineAvgDict()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        """Forget the previous epoch."""
        self.avg_online = OnlineAvgDict()

    def update_data(self, data_dict: Dict[str, Any]) -> None:  # type: ignore[override]
        if self.embeddings_key not in data_dict:
            raise KeyError(f"The batch has no key {self.embeddings_key!r}; it has {sorted(map(str, data_dict))}.")
        correct = calculate_accuracy_on_triplets(data_dict[self.embeddings_key], reduce_mean=False)
        self.avg_online.update({self.overall_categories_key: correct})
        if self.categories_key is None:
            return
        categories = data_dict[self.categories_key]
        categories = np.asarray(categories.cpu() if isinstance(categories, torch.Tensor) else categories)
        if len(categories) == 3 * len(correct):
            categories = categories[0::3]
        if len(categories) != len(correct):
            raise ValueError(
                f"{self.categories_key!r} must have one value per triplet ({len(correct)}) or per embedding "
                f"({3 * len(correct)}), got {len(categories)}."
            )
        for category in np.unique(categories):
            key = category.item() if isinstance(category, np.generic) else category
            self.avg_online.update({key: correct[torch.from_numpy(categories == category)]})

    def compute_metrics(self) -> Dict[Union[str, int], Dict[str, float]]:  # type: ignore[override]
        """``{category: {"accuracy_on_triplets": value}}`` with the ``"OVERALL"`` category first."""
        if not self.avg_online:
            raise ValueError("No triplets were seen: call update_data with batches before compute_metrics.")
        results = self.avg_online.get_dict_with_results()
        return {category: {self.metric_name: value} for category, value in results.items()}


__all__ = ["AccuracyOnTriplets"]
