"""Interfaces of datasets."""

from abc import ABC, abstractmethod
from typing import Any, Dict

import numpy as np
from torch.utils.data import Dataset


class IDatasetWithLabels(Dataset, ABC):
    """A dataset whose items are dicts with a label; ``get_labels`` returns all labels at once."""

    @abstractmethod
    def __getitem__(self, item: int) -> Dict[str, Any]:
        raise NotImplementedError

    @abstractmethod
    def get_labels(self) -> np.ndarray:
        raise NotImplementedError


class IDatasetQueryGallery(Dataset, ABC):
    """A validation dataset whose items carry ``is_query`` and ``is_gallery`` flags."""

    @abstractmethod
    def __getitem__(self, item: int) -> Dict[str, Any]:
        raise NotImplementedError


class IPairsDataset(Dataset, ABC):
    """A dataset of pairs (of images or of embeddings)."""

    @abstractmethod
    def __getitem__(self, item: int) -> Dict[str, Any]:
        raise NotImplementedError


__all__ = ["IDatasetWithLabels", "IDatasetQueryGallery", "IPairsDataset"]
