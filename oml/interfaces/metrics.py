"""Interfaces of metrics that accumulate data over an epoch."""

from abc import ABC, abstractmethod
from typing import Any, List, Tuple

from matplotlib import pyplot as plt

from oml.const import OVERALL_CATEGORIES_KEY

TIndices = List[int]


class IBasicMetric(ABC):
    """A metric with the life cycle ``setup`` -> ``update_data`` (per batch) -> ``compute_metrics``."""

    metric_name = "BASE"
    overall_categories_key = OVERALL_CATEGORIES_KEY

    @abstractmethod
    def setup(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @abstractmethod
    def update_data(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @abstractmethod
    def compute_metrics(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class IMetricDDP(IBasicMetric):
    """A metric that gathers the data of all processes before computing."""

    @abstractmethod
    def sync(self) -> None:
        raise NotImplementedError


class IMetricVisualisable(IBasicMetric):
    """A metric that can draw figures (e.g. its worst queries)."""

    @abstractmethod
    def visualize(self) -> Tuple[List[plt.Figure], List[str]]:
        raise NotImplementedError

    @abstractmethod
    def ready_to_visualize(self) -> bool:
        raise NotImplementedError


__all__ = ["IBasicMetric", "IMetricDDP", "IMetricVisualisable", "TIndices"]
