from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from oml.datasets.base import BaseDataset, DatasetQueryGallery, DatasetWithLabels, get_retrieval_datasets
from oml.datasets.list_dataset import ListDataset
from oml.datasets.pairs import EmbeddingPairsDataset, ImagePairsDataset
from oml.registry.transforms import get_transforms
from oml.utils.images.images import ImageReadError, imread_cv2

SIZE = 32


@pytest.fixture(scope="module")
def transforms():
    return get_transforms("norm_resize_albu", im_size=SIZE)


@pytest.mark.parametrize("dataframe_name", ["df.csv", "df_with_bboxes.csv", "df_with_category.csv"])
def test_retrieval_datasets_through_loader_with_workers(
    mock_dataset_root: Path, transforms, dataframe_name: str
) -> None:
    train, val = get_retrieval_datasets(mock_dataset_root, transforms, transforms, dataframe_name=dataframe_name)
    df = pd.read_csv(mock_dataset_root / dataframe_name)
    assert len(train) == (df["split"] == "train").sum() and len(val) == (df["split"] == "validation").sum()
    assert sorted(set(train.get_labels())) == list(range(len(set(train.get_labels()))))  # remapped 0..n-1

    for dataset in (train, val):
        seen = []
        for batch in DataLoader(dataset, batch_size=10, num_workers=2):
            assert batch["input_tensors"].shape[1:] == (3, SIZE, SIZE)
            assert batch["input_tensors"].dtype == torch.float32
            seen.extend(batch["idx"].tolist())
            if "bboxes" in dataframe_name:
                assert set(dataset.bboxes_keys) <= set(batch)
                assert (batch["x2"] > batch["x1"]).all() and (batch["y2"] > batch["y1"]).all()
            else:
                assert dataset.bboxes_keys == () and "x1" not in batch
            assert ("categories" in batch) == ("category" in dataframe_name)
            if dataset is val:
                assert batch["is_query"].dtype == torch.bool and batch["is_gallery"].all()
        assert seen == list(range(len(dataset)))

    label2category = train.get_label2category()
    if "category" in dataframe_name:
        assert set(label2category) == set(train.get_labels()) and set(label2category.values()) <= set(df["category"])
    else:
        assert label2category is None


def test_bbox_crop_matches_manual_crop(mock_dataset_root: Path) -> None:
    df = pd.read_csv(mock_dataset_root / "df_with_bboxes.csv")
    identity = get_transforms("norm_albu", mean=(0, 0, 0), std=(1, 1, 1))
    dataset = BaseDataset(df, dataset_root=mock_dataset_root, transform=identity, f_imread=imread_cv2)
    row = int(df.index[df["x_1"].notna()][3])
    x1, x2, y1, y2 = df.loc[row, ["x_1", "x_2", "y_1", "y_2"]].astype(int)
    expected = imread_cv2(mock_dataset_root / df.loc[row, "path"])[y1:y2, x1:x2]
    item = dataset[row]
    np.testing.assert_allclose(item["input_tensors"].permute(1, 2, 0).numpy() * 255, expected, atol=1e-3)
    assert (item["x1"], item["y1"], item["x2"], item["y2"]) == (x1, y1, x2, y2)
    empty = int(df.index[df["x_1"].isna()][0])
    assert dataset[empty]["input_tensors"].shape == (3, 96, 96)
    assert (dataset[empty]["x1"], dataset[empty]["x2"]) == (0, 96)


def test_extra_data_custom_keys_and_cache(mock_dataset_dfs, mock_dataset_root: Path, transforms) -> None:
    df_train, df_val = mock_dataset_dfs
    extra = {"embeddings": torch.arange(len(df_val))[:, None].float()}
    dataset = DatasetQueryGallery(
        df_val,
        extra_data=extra,
        dataset_root=mock_dataset_root,
        transform=transforms,
        cache_size=4,
        input_tensors_key="images",
        labels_key="y",
        is_query_key="q",
    )
    item = dataset[5]
    assert item["embeddings"].item() == 5 and {"images", "y", "q", "is_gallery"} <= set(item)
    dataset[5]
    assert dataset._cache.cache_info().hits == 1
    with pytest.raises(ValueError, match="clash"):
        DatasetWithLabels(df_train, extra_data={"labels": list(range(len(df_train)))}, dataset_root=mock_dataset_root)
    with pytest.raises(ValueError, match=r"extra_data\['e'\] has 3 elements"):
        DatasetWithLabels(df_train, extra_data={"e": [1, 2, 3]}, dataset_root=mock_dataset_root)


def test_dataset_errors(mock_dataset_dfs, mock_dataset_root: Path, tmp_path: Path) -> None:
    df_train, df_val = mock_dataset_dfs
    with pytest.raises(ValueError, match=r"misses the columns \['label'\]"):
        DatasetWithLabels(df_train.drop(columns=["label"]))
    with pytest.raises(ValueError, match="is_query"):
        DatasetQueryGallery(df_train.drop(columns=["is_query"]), dataset_root=mock_dataset_root)
    broken = df_train.head(2).copy()
    broken.loc[1, "path"] = "images/not_there.jpg"
    dataset = DatasetWithLabels(broken, dataset_root=mock_dataset_root)
    with pytest.raises(ImageReadError, match="row 1: .*not_there.jpg"):
        dataset[1]


def test_list_dataset(mock_dataset_root: Path) -> None:
    paths = [mock_dataset_root / "images" / "circle_1.jpg", mock_dataset_root / "images" / "star_2.jpg"]
    dataset = ListDataset(paths, bboxes=[None, (10, 20, 50, 40)], transform=get_transforms("norm_torch"))
    assert dataset[0]["input_tensors"].shape == (3, 96, 96)
    assert dataset[1]["input_tensors"].shape == (3, 20, 40)
    assert dataset[1]["paths"] == str(paths[1]) and dataset[1]["idx"] == 1
    with pytest.raises(ValueError, match="2 paths but 1 boxes"):
        ListDataset(paths, bboxes=[None])


def test_pairs_datasets(mock_dataset_root: Path) -> None:
    e1, e2 = torch.randn(5, 4), torch.randn(5, 4)
    pairs = EmbeddingPairsDataset(e1, e2)
    assert len(pairs) == 5 and torch.equal(pairs[3]["input_tensors_2"], e2[3]) and pairs[3]["idx"] == 3
    with pytest.raises(ValueError, match="same shape"):
        EmbeddingPairsDataset(e1, torch.randn(4, 4))

    paths = [mock_dataset_root / "images" / f"square_{i}.jpg" for i in (1, 2, 3)]
    images = ImagePairsDataset(paths, paths[::-1], transform=get_transforms("norm_resize_torch", im_size=16))
    item = images[0]
    assert item["input_tensors_1"]["paths"] == str(paths[0]) and item["input_tensors_2"]["paths"] == str(paths[2])
    batch = next(iter(DataLoader(images, batch_size=3, num_workers=2)))
    assert batch["input_tensors_1"]["input_tensors"].shape == (3, 3, 16, 16)


def test_query_gallery_items_carry_their_sequence(tmp_path):
    from PIL import Image

    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(path)
        paths.append(path.name)
    df = pd.DataFrame(
        {
            "label": [0, 0, 1, 1],
            "path": paths,
            "split": "validation",
            "is_query": True,
            "is_gallery": True,
            "sequence": ["cam1", None, "cam1", 7],
        }
    )
    dataset = DatasetQueryGallery(df, dataset_root=tmp_path)
    assert dataset.sequence_key == "sequence"
    batch = next(iter(DataLoader(dataset, batch_size=4)))  # strings collate into a list
    assert batch["sequence"][0] == batch["sequence"][2] == "cam1" and batch["sequence"][3] == "7"
    assert len(set(batch["sequence"])) == 3  # the missing one is a sequence of its own
    assert isinstance(batch["input_tensors"], torch.Tensor)
    assert DatasetQueryGallery(df.drop(columns="sequence"), dataset_root=tmp_path).sequence_key is None
