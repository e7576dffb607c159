"""Datasets over a table in the oml format: training (with labels) and validation (query/gallery)."""

import inspect
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from oml.const import (
    BBOXES_COLUMNS,
    CATEGORIES_COLUMN,
    CATEGORIES_KEY,
    INDEX_KEY,
    INPUT_TENSORS_KEY,
    IS_GALLERY_COLUMN,
    IS_GALLERY_KEY,
    IS_QUERY_COLUMN,
    IS_QUERY_KEY,
    LABELS_COLUMN,
    LABELS_KEY,
    PATHS_COLUMN,
    PATHS_KEY,
    SEQUENCE_COLUMN,
    SEQUENCE_KEY,
    SPLIT_COLUMN,
    X1_KEY,
    X2_KEY,
    Y1_KEY,
    Y2_KEY,
)
from oml.interfaces.datasets import IDatasetQueryGallery, IDatasetWithLabels
from oml.transforms.images.albumentations import get_normalisation_albu
from oml.transforms.images.utils import TTransforms, apply_transforms, get_im_reader_for_transforms
from oml.utils.dataframe_format import check_dataframe, check_paths_inside_root
from oml.utils.images.images import ImageReadError, TImage, TImReader, read_image_bytes

TPath = Union[str, Path]


class BaseDataset(Dataset):
    """Images (optionally cropped by their boxes) with their labels, read from a table.

    Args:
        df: a table with at least the ``label`` and ``path`` columns; ``category`` and the four box
            columns ``x_1, x_2, y_1, y_2`` are used when present.
        extra_data: more per-row values to put in each item, ``{key: sequence of len(df)}``.
        transform: albumentations or torchvision transforms (default: albumentations normalisation).
        dataset_root: folder that the paths are relative to. Relative paths must stay inside it and
            absolute paths are accepted only if every path is absolute (``check_paths_inside_root``).
        f_imread: image reader; by default the one that suits ``transform``.
        cache_size: how many files to keep in an LRU cache of raw bytes (0 = no cache).
        *_key: the keys of the items.
        allow_paths_outside_root: accept paths that leave ``dataset_root`` (``../x.jpg``) and absolute
            paths among relative ones. OML read any path; here it is an explicit choice.

    Each item is a dict ``{input_tensors, labels, paths, idx, [categories], [x1, y1, x2, y2], **extra}``.
    A row without a box (all four empty) is the whole image.

    Errors while reading an item name its row in the table given (the index label of ``df``: for the
    datasets of ``get_retrieval_datasets``, the 0-based data row of the CSV file) and the image path.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        extra_data: Optional[Dict[str, Any]] = None,
        transform: Optional[TTransforms] = None,
        dataset_root: Optional[TPath] = None,
        f_imread: Optional[TImReader] = None,
        cache_size: Optional[int] = 0,
        input_tensors_key: str = INPUT_TENSORS_KEY,
        labels_key: str = LABELS_KEY,
        paths_key: str = PATHS_KEY,
        categories_key: Optional[str] = CATEGORIES_KEY,
        x1_key: str = X1_KEY,
        x2_key: str = X2_KEY,
        y1_key: str = Y1_KEY,
        y2_key: str = Y2_KEY,
        index_key: str = INDEX_KEY,
        allow_paths_outside_root: bool = False,
    ):
        _require_columns(df, (LABELS_COLUMN, PATHS_COLUMN))
        # the caller's row of every item, for messages (positions if the index is not made of integers)
        integer_index = pd.api.types.is_integer_dtype(df.index)
        self._rows = df.index.tolist() if integer_index else list(range(len(df)))
        df = df.reset_index(drop=True).copy()
        if dataset_root is not None:
            check_paths_inside_root(df[PATHS_COLUMN], dataset_root, allow_paths_outside_root, rows=self._rows)
            df[PATHS_COLUMN] = df[PATHS_COLUMN].apply(lambda p: str(Path(dataset_root) / str(p)))
        else:
            df[PATHS_COLUMN] = df[PATHS_COLUMN].astype(str)

        extra_data = dict(extra_data or {})
        for key, values in extra_data.items():
            if len(values) != len(df):
                raise ValueError(
                    f"extra_data[{key!r}] has {len(values)} elements, but the dataframe has {len(df)} rows."
                )

        self.input_tensors_key = input_tensors_key
        self.labels_key = labels_key
        self.paths_key = paths_key
        self.categories_key = categories_key if CATEGORIES_COLUMN in df.columns else None
        self.index_key = index_key
        self.x1_key, self.x2_key, self.y1_key, self.y2_key = x1_key, x2_key, y1_key, y2_key
        self.has_bboxes = all(c in df.columns for c in BBOXES_COLUMNS)

        reserved = {input_tensors_key, labels_key, paths_key, index_key, self.categories_key, *self.bboxes_keys} - {
            None
        }
        clashes = sorted(reserved & set(extra_data))
        if clashes:
            raise ValueError(f"extra_data keys {clashes} clash with the keys of the dataset items.")

        self.df = df
        self.extra_data = extra_data
        self.transform = transform if transform is not None else get_normalisation_albu()
        self.f_imread = f_imread if f_imread is not None else get_im_reader_for_transforms(self.transform)
        self.cache_size = cache_size or 0
        self._paths = df[PATHS_COLUMN].tolist()
        self._labels = df[LABELS_COLUMN].tolist()
        self._categories = df[CATEGORIES_COLUMN].tolist() if self.categories_key else None
        self._bboxes = df[BBOXES_COLUMNS].to_numpy(dtype=np.float64) if self.has_bboxes else None
        self._cache: Optional[Any] = None  # LRU cache of raw file bytes, made lazily in every process

    def __getstate__(self) -> Dict[str, Any]:
        # the cache is not sent to DataLoader workers or DDP processes: each builds its own
        return {**self.__dict__, "_cache": None}

    def read_bytes(self, path: str) -> bytes:
        """The raw bytes of a file, through the LRU cache when ``cache_size > 0``."""
        if self.cache_size <= 0:
            return read_image_bytes(path)
        if self._cache is None:
            self._cache = lru_cache(maxsize=self.cache_size)(read_image_bytes)
        return self._cache(path)

    @property
    def bboxes_keys(self) -> Tuple[str, ...]:
        """The keys of the box coordinates in the items (empty without boxes)."""
        return (self.x1_key, self.y1_key, self.x2_key, self.y2_key) if self.has_bboxes else ()

    def __len__(self) -> int:
        return len(self.df)

    def read_image(self, idx: int) -> TImage:
        """The decoded image of item ``idx`` (not cropped, not transformed)."""
        path = self._paths[idx]
        try:
            return self.f_imread(self.read_bytes(path))
        except ImageReadError as e:
            raise ImageReadError(f"Cannot read the image of row {self._rows[idx]}: {path} ({e})") from e

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        item: Dict[str, Any] = {}
        try:
            img = self.read_image(idx)
            if self.has_bboxes:
                img, (x1, y1, x2, y2) = self._crop(img, idx)
                item.update({self.x1_key: x1, self.y1_key: y1, self.x2_key: x2, self.y2_key: y2})
            item[self.input_tensors_key] = apply_transforms(self.transform, img)
        except ImageReadError:
            raise  # its message names the row and the path
        except Exception as e:  # a custom reader or a transform failed: keep its type, add where it happened
            e.add_note(f"(while reading row {self._rows[idx]} of the table: {self._paths[idx]})")
            raise
        item[self.labels_key] = self._labels[idx]
        item[self.paths_key] = self._paths[idx]
        item[self.index_key] = idx
        if self.categories_key:
            item[self.categories_key] = self._categories[idx]
        for key, values in self.extra_data.items():
            item[key] = values[idx]
        return item

    def _crop(self, img: TImage, idx: int) -> Tuple[TImage, Tuple[int, int, int, int]]:
        x1, x2, y1, y2 = self._bboxes[idx]
        is_array = isinstance(img, np.ndarray)
        h, w = img.shape[:2] if is_array else (img.height, img.width)
        if np.isnan([x1, x2, y1, y2]).any():
            return img, (0, 0, w, h)
        x1, y1, x2, y2 = int(x1), int(y1), int(min(x2, w)), int(min(y2, h))
        if x1 >= x2 or y1 >= y2:
            raise ValueError(f"The box of row {self._rows[idx]} ({self._paths[idx]}) is outside of the {w}x{h} image.")
        cropped = img[y1:y2, x1:x2] if is_array else img.crop((x1, y1, x2, y2))
        return cropped, (x1, y1, x2, y2)


def _require_columns(df: pd.DataFrame, columns: Tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"The dataframe misses the columns {missing}; it has {list(df.columns)}.")


class DatasetWithLabels(BaseDataset, IDatasetWithLabels):
    """Training dataset: items with labels, plus ``get_labels`` for samplers and categories for losses.

    >>> from oml.utils.download_mock_dataset import download_mock_dataset
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> df_train, _ = download_mock_dataset(root)
    >>> dataset = DatasetWithLabels(df_train, dataset_root=root)
    >>> dataset[0]["input_tensors"].shape, len(set(dataset.get_labels()))
    (torch.Size([3, 96, 96]), 12)
    """

    def get_labels(self) -> np.ndarray:
        return np.asarray(self._labels)

    def get_label2category(self) -> Optional[Dict[int, Union[str, int]]]:
        """``{label: category}`` (the first category of each label), or None without a category column."""
        if CATEGORIES_COLUMN not in self.df.columns:
            return None
        first = self.df.drop_duplicates(LABELS_COLUMN)
        return dict(zip(first[LABELS_COLUMN].tolist(), first[CATEGORIES_COLUMN].tolist()))


class DatasetQueryGallery(BaseDataset, IDatasetQueryGallery):
    """Validation dataset: items also carry ``is_query`` and ``is_gallery`` flags.

    With a ``sequence`` column (re-id tracklets, cameras, photo series; OML 4.0's column), items also carry
    their sequence id under ``sequence_key`` (as a string; a missing one becomes an id of its own), and
    ``EmbeddingMetrics(sequence_key=...)`` does not retrieve for a query the items of its sequence.
    """

    # The parameters repeat BaseDataset's in OML 0.4.4's order (dataset_root before transform, no index_key):
    # a forced repetition of the public signature. They are forwarded by name through _BASE_PARAMETERS.
    def __init__(
        self,
        df: pd.DataFrame,
        extra_data: Optional[Dict[str, Any]] = None,
        dataset_root: Optional[TPath] = None,
        transform: Optional[TTransforms] = None,
        f_imread: Optional[TImReader] = None,
        cache_size: Optional[int] = 0,
        input_tensors_key: str = INPUT_TENSORS_KEY,
        labels_key: str = LABELS_KEY,
        paths_key: str = PATHS_KEY,
        categories_key: Optional[str] = CATEGORIES_KEY,
        x1_key: str = X1_KEY,
        x2_key: str = X2_KEY,
        y1_key: str = Y1_KEY,
        y2_key: str = Y2_KEY,
        is_query_key: str = IS_QUERY_KEY,
        is_gallery_key: str = IS_GALLERY_KEY,
        allow_paths_outside_root: bool = False,
        sequence_key: Optional[str] = SEQUENCE_KEY,
    ):
        _require_columns(df, (IS_QUERY_COLUMN, IS_GALLERY_COLUMN))
        arguments = locals()
        super().__init__(**{name: arguments[name] for name in _BASE_PARAMETERS if name in arguments})
        self.is_query_key = is_query_key
        self.is_gallery_key = is_gallery_key
        self._is_query = self.df[IS_QUERY_COLUMN].astype(bool).tolist()
        self._is_gallery = self.df[IS_GALLERY_COLUMN].astype(bool).tolist()
        #: the key of the sequence ids in the items, or None when the table has no ``sequence`` column
        self.sequence_key = sequence_key if SEQUENCE_COLUMN in self.df.columns else None
        if self.sequence_key:
            # strings, so that batches collate; a missing sequence gets an id of its own (it hides only itself)
            values = self.df[SEQUENCE_COLUMN]
            own = pd.Series([f"\x00row-{i}" for i in range(len(values))], index=values.index)
            self._sequences = values.astype(str).where(values.notna(), own).tolist()

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        item = super().__getitem__(idx)
        item[self.is_query_key] = self._is_query[idx]
        item[self.is_gallery_key] = self._is_gallery[idx]
        if self.sequence_key:
            item[self.sequence_key] = self._sequences[idx]
        return item


_BASE_PARAMETERS = tuple(inspect.signature(BaseDataset.__init__).parameters)[1:]


def get_retrieval_datasets(
    dataset_root: TPath,
    transforms_train: Optional[TTransforms] = None,
    transforms_val: Optional[TTransforms] = None,
    f_imread_train: Optional[TImReader] = None,
    f_imread_val: Optional[TImReader] = None,
    dataframe_name: str = "df.csv",
    cache_size: Optional[int] = 0,
    verbose: bool = True,
    allow_paths_outside_root: bool = False,
) -> Tuple[DatasetWithLabels, DatasetQueryGallery]:
    """Read ``dataset_root/dataframe_name``, check its format and build the train and validation datasets.

    Train labels are mapped to ``0..n_train_labels-1`` (in sorted order), as classification losses
    such as ArcFace need; validation labels are kept as they are. Errors while reading an image name
    the row of the CSV file (0-based data row, as the format checker counts), not the row within the split.
    ``allow_paths_outside_root`` is passed to the format check and the datasets.
    """
    dataset_root = Path(dataset_root)
    csv_path = dataset_root / dataframe_name
    df = pd.read_csv(csv_path)
    check_dataframe(df, str(csv_path), dataset_root, verbose=verbose, allow_paths_outside_root=allow_paths_outside_root)

    # the splits keep the CSV's row numbers as their index, for the messages of the datasets
    df_train = df[df[SPLIT_COLUMN] == "train"].copy()
    mapper = {label: i for i, label in enumerate(sorted(df_train[LABELS_COLUMN].unique()))}
    df_train[LABELS_COLUMN] = df_train[LABELS_COLUMN].map(mapper)
    df_val = df[df[SPLIT_COLUMN] == "validation"]

    common: Dict[str, Any] = {
        "dataset_root": dataset_root,
        "cache_size": cache_size,
        "allow_paths_outside_root": allow_paths_outside_root,
    }
    train_dataset = DatasetWithLabels(df_train, transform=transforms_train, f_imread=f_imread_train, **common)
    valid_dataset = DatasetQueryGallery(df_val, transform=transforms_val, f_imread=f_imread_val, **common)
    return train_dataset, valid_dataset


__all__ = ["BaseDataset", "DatasetWithLabels", "DatasetQueryGallery", "get_retrieval_datasets"]
