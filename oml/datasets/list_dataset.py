"""A dataset over a plain list of image paths (for inference), optionally with one box per path."""

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from oml.const import BBOXES_COLUMNS, INDEX_KEY, INPUT_TENSORS_KEY, LABELS_COLUMN, PATHS_COLUMN
from oml.datasets.base import BaseDataset
from oml.transforms.images.torchvision import get_normalisation_torch
from oml.transforms.images.utils import TTransforms
from oml.utils.images.images import TImReader

TBBox = Tuple[int, int, int, int]


class ListDataset(Dataset):
    """Images from a list of paths; ``bboxes[i]`` is ``(x1, y1, x2, y2)`` or None for the whole image.

    To take several boxes from one image, repeat its path. Items: ``{input_tensors, labels: "none",
    paths, idx, [x1, y1, x2, y2]}``.
    """

    def __init__(
        self,
        filenames_list: Sequence[Union[str, Path]],
        bboxes: Optional[Sequence[Optional[TBBox]]] = None,
        transform: TTransforms = get_normalisation_torch(),
        f_imread: Optional[TImReader] = None,
        input_tensors_key: str = INPUT_TENSORS_KEY,
        cache_size: Optional[int] = 0,
        index_key: str = INDEX_KEY,
    ):
        df = pd.DataFrame({PATHS_COLUMN: [str(p) for p in filenames_list], LABELS_COLUMN: "none"})
        if bboxes is not None:
            if len(bboxes) != len(df):
                raise ValueError(f"Got {len(df)} paths but {len(bboxes)} boxes: give one box (or None) per path.")
            boxes = np.full((len(df), 4), np.nan)
            for i, box in enumerate(bboxes):
                if box is not None:
                    if len(box) != 4:
                        raise ValueError(f"Box {i} must be (x1, y1, x2, y2), got {box!r}.")
                    x1, y1, x2, y2 = box
                    boxes[i] = (x1, x2, y1, y2)  # columns order: x_1, x_2, y_1, y_2
            df[BBOXES_COLUMNS] = boxes
        self.dataset = BaseDataset(
            df=df,
            transform=transform,
            f_imread=f_imread,
            input_tensors_key=input_tensors_key,
            cache_size=cache_size,
            index_key=index_key,
        )
        self.input_tensors_key = input_tensors_key
        self.index_key = index_key
        self.paths_key = self.dataset.paths_key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        return self.dataset[idx]

    @property
    def bboxes_keys(self) -> Tuple[str, ...]:
        return self.dataset.bboxes_keys


__all__ = ["ListDataset"]
