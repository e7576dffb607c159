"""Datasets of pairs: of embeddings (for pairwise models on features) and of images."""

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import Tensor

from oml.const import INDEX_KEY, PAIR_1ST_KEY, PAIR_2ND_KEY
from oml.datasets.list_dataset import ListDataset, TBBox
from oml.interfaces.datasets import IPairsDataset
from oml.transforms.images.torchvision import get_normalisation_torch
from oml.transforms.images.utils import TTransforms
from oml.utils.images.images import TImReader, imread_pillow


class EmbeddingPairsDataset(IPairsDataset):
    """Pairs ``(embeddings1[i], embeddings2[i])``; items ``{pair_1st_key, pair_2nd_key, idx}``."""

    def __init__(
        self,
        embeddings1: Tensor,
        embeddings2: Tensor,
        pair_1st_key: str = PAIR_1ST_KEY,
        pair_2nd_key: str = PAIR_2ND_KEY,
        index_key: str = INDEX_KEY,
    ):
        if embeddings1.shape != embeddings2.shape or embeddings1.ndim < 2:
            raise ValueError(
                f"Expected two tensors of the same shape [N, D, ...], got {tuple(embeddings1.shape)} and "
                f"{tuple(embeddings2.shape)}."
            )
        self.embeddings1, self.embeddings2 = embeddings1, embeddings2
        self.pair_1st_key, self.pair_2nd_key, self.index_key = pair_1st_key, pair_2nd_key, index_key

    def __len__(self) -> int:
        return len(self.embeddings1)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return {self.pair_1st_key: self.embeddings1[idx], self.pair_2nd_key: self.embeddings2[idx], self.index_key: idx}


class ImagePairsDataset(IPairsDataset):
    """Pairs of images ``(paths1[i], paths2[i])``; each side is an item dict of a ``ListDataset``."""

    def __init__(
        self,
        paths1: Sequence[Union[str, Path]],
        paths2: Sequence[Union[str, Path]],
        bboxes1: Optional[Sequence[Optional[TBBox]]] = None,
        bboxes2: Optional[Sequence[Optional[TBBox]]] = None,
        transform: Optional[TTransforms] = None,
        f_imread: TImReader = imread_pillow,
        pair_1st_key: str = PAIR_1ST_KEY,
        pair_2nd_key: str = PAIR_2ND_KEY,
        index_key: str = INDEX_KEY,
        cache_size: Optional[int] = 0,
    ):
        if len(paths1) != len(paths2):
            raise ValueError(f"paths1 and paths2 must have the same length, got {len(paths1)} and {len(paths2)}.")
        transform = transform if transform is not None else get_normalisation_torch()
        half_cache = (cache_size or 0) // 2
        self.dataset1 = ListDataset(
            paths1, bboxes=bboxes1, transform=transform, f_imread=f_imread, cache_size=half_cache
        )
        self.dataset2 = ListDataset(
            paths2, bboxes=bboxes2, transform=transform, f_imread=f_imread, cache_size=half_cache
        )
        self.pair_1st_key, self.pair_2nd_key, self.index_key = pair_1st_key, pair_2nd_key, index_key

    def __len__(self) -> int:
        return len(self.dataset1)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return {self.pair_1st_key: self.dataset1[idx], self.pair_2nd_key: self.dataset2[idx], self.index_key: idx}


__all__ = ["EmbeddingPairsDataset", "ImagePairsDataset"]
