"""Datasets read from a CSV: errors name the CSV row and the image, paths stay inside the dataset root,
and a validation split that cannot be validated is refused before training (issue #17, findings 6, 7, 8).
"""

from pathlib import Path
from typing import List

import albumentations as albu
import numpy as np
import pandas as pd
import pytest
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader

from oml.datasets.base import BaseDataset, DatasetQueryGallery, get_retrieval_datasets
from oml.registry.transforms import get_transforms
from oml.utils.dataframe_format import DataFrameFormatError
from oml.utils.images.images import ImageReadError

TRANSFORMS = {
    "albumentations": lambda: get_transforms("norm_resize_albu", im_size=8),
    "torchvision": lambda: get_transforms("norm_resize_torch", im_size=8),
}


def _make_dataset(root: Path, paths: List[str], rows: List[dict]) -> pd.DataFrame:
    """A tiny dataset: 4 train rows, then the validation rows given; every path that is inside root exists."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = (root / path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            Image.fromarray(np.full((12, 12, 3), 100, dtype=np.uint8)).save(target, format="PNG")
    train = [{"label": i // 2, "path": p, "split": "train", "is_query": None, "is_gallery": None}
             for i, p in enumerate(paths[:4])]  # fmt: skip
    df = pd.DataFrame(train + rows)
    df.to_csv(root / "df.csv", index=False)
    return df


def _valid_rows(paths: List[str]) -> List[dict]:
    return [{"label": 7, "path": p, "split": "validation", "is_query": True, "is_gallery": True} for p in paths]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "dataset"


@pytest.mark.parametrize("family", sorted(TRANSFORMS))
def test_zero_byte_image_in_validation_names_the_csv_row(root: Path, family: str) -> None:
    """OML: a raw cv2.error naming neither row nor file, and rows counted within the split."""
    paths = [f"images/{i}.png" for i in range(7)]
    _make_dataset(root, paths, _valid_rows(paths[4:]))
    (root / "images" / "5.png").write_bytes(b"")  # CSV row 5 is the 2nd validation row
    transform = TRANSFORMS[family]()
    _, valid = get_retrieval_datasets(root, transform, transform)
    assert valid[0]["input_tensors"].shape == (3, 8, 8)
    with pytest.raises(ImageReadError, match=r"row 5: .*images/5\.png .*is empty \(0 bytes\)"):
        valid[1]


@pytest.mark.parametrize("family", sorted(TRANSFORMS))
def test_transform_errors_name_the_row_and_path_also_in_workers(root: Path, family: str) -> None:
    paths = [f"images/{i}.png" for i in range(6)]
    _make_dataset(root, paths, _valid_rows(paths[4:]))

    def fail(image, **_):
        raise ArithmeticError("the transform broke")

    transform = albu.Compose([albu.Lambda(image=fail)]) if family == "albumentations" else T.Compose([T.Lambda(fail)])
    train, _ = get_retrieval_datasets(root, transform, transform)
    with pytest.raises(ArithmeticError) as error:  # the type of the original error is kept
        train[3]
    assert "while reading row 3 of the table" in str(error.value.__notes__) and "images/3.png" in str(
        error.value.__notes__
    )
    with pytest.raises(
        Exception, match=r"(?s)the transform broke.*while reading row \d of the table: .*images/\d\.png"
    ):
        next(iter(DataLoader(train, batch_size=2, num_workers=1)))


def test_paths_outside_the_root_are_refused_before_reading(root: Path, tmp_path: Path) -> None:
    """OML loaded ../../x.jpg and opened /etc/passwd before the decode failed."""
    outside = "../outside/secret.png"
    paths = [f"images/{i}.png" for i in range(4)] + [outside, "images/5.png"]
    _make_dataset(root, paths, _valid_rows(paths[4:]))
    assert (root / outside).exists()
    with pytest.raises(
        DataFrameFormatError,
        match=r"df\.csv: 1 paths lead outside dataset_root=.*rows \[4\], paths \[\.\./outside/secret\.png\]",
    ):  # noqa: E501
        get_retrieval_datasets(root)
    df = pd.read_csv(root / "df.csv")
    with pytest.raises(DataFrameFormatError, match=r"rows \[4\]"):
        DatasetQueryGallery(df[df["split"] == "validation"], dataset_root=root)  # also without the format check
    _, valid = get_retrieval_datasets(root, allow_paths_outside_root=True)  # the documented opt-in
    assert valid[0]["paths"] == str(root / outside)


def test_absolute_path_among_relative_ones_is_refused(root: Path) -> None:
    paths = [f"images/{i}.png" for i in range(6)]
    df = _make_dataset(root, paths, _valid_rows(paths[4:]))
    df.loc[2, "path"] = "/etc/passwd"
    with pytest.raises(
        DataFrameFormatError, match=r"1 of the 6 paths are absolute .*rows \[2\], paths \[/etc/passwd\]"
    ):
        BaseDataset(df, dataset_root=root)


def test_table_of_absolute_paths_is_allowed(root: Path) -> None:
    paths = [f"images/{i}.png" for i in range(6)]
    df = _make_dataset(root, paths, _valid_rows(paths[4:]))
    df["path"] = [str(root / p) for p in df["path"]]
    df.to_csv(root / "df.csv", index=False)
    train, valid = get_retrieval_datasets(root, dataframe_name="df.csv")
    assert train[0]["paths"] == str(root / "images/0.png") and len(valid) == 2


@pytest.mark.parametrize("missing", ["is_query", "is_gallery"])
def test_validation_without_queries_or_galleries_fails_before_training(root: Path, missing: str) -> None:
    """OML: the format check passed and the run failed after the first epoch."""
    paths = [f"images/{i}.png" for i in range(7)]
    rows = _valid_rows(paths[4:])
    for row in rows:
        row[missing] = False
    _make_dataset(root, paths, rows)
    role = "query" if missing == "is_query" else "gallery item"
    with pytest.raises(
        DataFrameFormatError, match=rf"df\.csv: the validation split \(3 rows\) has no {role}: column '{missing}'"
    ):  # noqa: E501
        get_retrieval_datasets(root)
