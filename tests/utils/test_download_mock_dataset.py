import subprocess
import sys
from pathlib import Path

import pandas as pd

from oml.utils.dataframe_format import check_retrieval_dataframe_format
from oml.utils.download_mock_dataset import download_mock_dataset, get_mock_dataset_md5
from oml.utils.io import calc_folder_hash


def test_generation_is_reproducible(tmp_path: Path) -> None:
    download_mock_dataset(tmp_path / "a")
    download_mock_dataset(tmp_path / "b")
    assert calc_folder_hash(tmp_path / "a") == calc_folder_hash(tmp_path / "b") == get_mock_dataset_md5()


def test_content_and_format(mock_dataset_root: Path) -> None:
    df_train, df_val = download_mock_dataset(mock_dataset_root)
    assert (mock_dataset_root / "images" / "circle_1.jpg").is_file()
    assert df_train["label"].nunique() >= 4 and df_val["label"].nunique() >= 4
    assert df_train.groupby("label").size().min() >= 6 and df_val.groupby("label").size().min() >= 6
    assert df_val["is_query"].dtype == bool and df_val["is_query"].all() and df_val["is_gallery"].all()
    assert not set(df_train["label"]) & set(df_val["label"])
    for name in ("df.csv", "df_with_bboxes.csv", "df_with_category.csv"):
        check_retrieval_dataframe_format(mock_dataset_root / name, dataset_root=mock_dataset_root)

    with_boxes = pd.read_csv(mock_dataset_root / "df_with_bboxes.csv")
    assert with_boxes["x_1"].isna().any() and with_boxes["x_1"].notna().sum() > len(with_boxes) // 2
    boxes = with_boxes.dropna()
    assert ((boxes["x_2"] - boxes["x_1"]) < 96).all() and ((boxes["y_2"] - boxes["y_1"]) > 10).all()

    with_category = pd.read_csv(mock_dataset_root / "df_with_category.csv")
    assert with_category.groupby("label")["category"].nunique().max() == 1
    assert (with_category["category"] == with_category["path"].str.extract(r"images/(\w+)_\d+\.jpg")[0]).all()


def test_missing_and_corrupted_files_are_regenerated(tmp_path: Path) -> None:
    download_mock_dataset(tmp_path)
    expected = calc_folder_hash(tmp_path)
    (tmp_path / "images" / "star_3.jpg").unlink()
    (tmp_path / "images" / "cross_2.jpg").write_bytes(b"broken")
    (tmp_path / "df.csv").write_text("label,path\n")
    download_mock_dataset(tmp_path)
    assert calc_folder_hash(tmp_path) == expected


def test_without_md5_check_only_missing_files_are_written(tmp_path: Path) -> None:
    download_mock_dataset(tmp_path)
    (tmp_path / "images" / "cross_2.jpg").write_bytes(b"changed")
    download_mock_dataset(tmp_path, check_md5=False)
    assert (tmp_path / "images" / "cross_2.jpg").read_bytes() == b"changed"
    download_mock_dataset(tmp_path, check_md5=True)
    assert (tmp_path / "images" / "cross_2.jpg").read_bytes() != b"changed"


def test_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oml.utils.download_mock_dataset", "--dataset_root", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "72 train images (12 labels)" in result.stdout
    assert calc_folder_hash(tmp_path / "cli") == get_mock_dataset_md5()
