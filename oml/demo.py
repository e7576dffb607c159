"""``make demo``: the main job on the built-in mock dataset.

Generates the mock dataset, checks its format, embeds the validation images with a randomly
initialised extractor and prints a summary (the training pipeline replaces the last step once it lands).
"""

import argparse
import time
from pathlib import Path

import torch
import torchvision

from oml.const import MOCK_DATASET_PATH
from oml.datasets.base import get_retrieval_datasets
from oml.registry.transforms import get_transforms
from oml.utils.dataframe_format import check_retrieval_dataframe_format
from oml.utils.download_mock_dataset import download_mock_dataset
from oml.utils.misc import set_global_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_root", type=Path, default=MOCK_DATASET_PATH)
    args = parser.parse_args()

    set_global_seed(42)
    start = time.perf_counter()
    df_train, df_val = download_mock_dataset(args.dataset_root)
    for name in ("df.csv", "df_with_bboxes.csv", "df_with_category.csv"):
        check_retrieval_dataframe_format(args.dataset_root / name, dataset_root=args.dataset_root)
    print(
        f"Mock dataset in {args.dataset_root}: {len(df_train)} train images ({df_train['label'].nunique()} labels), "
        f"{len(df_val)} validation images ({df_val['label'].nunique()} labels); all 3 tables pass the format check."
    )

    transforms = get_transforms("norm_resize_torch", im_size=64)
    _, val_dataset = get_retrieval_datasets(args.dataset_root, transforms, transforms)
    loader = torch.utils.data.DataLoader(val_dataset, batch_size=16, num_workers=0)
    extractor = torchvision.models.resnet18(num_classes=128).eval()
    with torch.no_grad():
        embeddings = torch.cat([extractor(batch["input_tensors"]) for batch in loader])

    labels = torch.tensor(val_dataset.df["label"].to_numpy())
    distances = torch.cdist(embeddings, embeddings).fill_diagonal_(float("inf"))
    cmc1 = (labels[distances.argmin(dim=1)] == labels).float().mean().item()
    print(
        f"Embedded {len(embeddings)} validation images with a random resnet18 into {embeddings.shape[1]}-d vectors; "
        f"CMC@1 of the untrained model = {cmc1:.3f} (chance ~ {5 / (len(labels) - 1):.3f}). "
        f"Done in {time.perf_counter() - start:.1f} s."
    )


if __name__ == "__main__":
    main()
