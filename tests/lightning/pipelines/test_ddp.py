"""Pipelines with 2 CPU processes (DDP over gloo) agree with one process."""

import copy
from pathlib import Path
from typing import Any, Dict

import pandas as pd
import pytest
import torch

from oml.lightning.pipelines.train import extractor_training_pipeline
from oml.lightning.pipelines.validate import extractor_validation_pipeline

pytestmark = [pytest.mark.ddp, pytest.mark.timeout(400)]


def _parameters(checkpoint: Path, names) -> Dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    return {name: state[name] for name in names}


def test_ddp_training_equals_one_process_accumulating_gradients(
    train_cfg: Dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 12 labels / 2 per batch = 6 batches: process r of 2 takes batches r, r + 2, r + 4, and one
    # process accumulating 2 batches per step sees the same pairs of batches
    train_cfg["sampler"]["args"].update({"n_labels": 2, "n_instances": 4})
    train_cfg["max_epochs"] = 1
    runs = {
        "ddp": {"devices": 2},
        "single": {"devices": 1, "lightning_trainer_extra_args": {"accumulate_grad_batches": 2}},
    }
    for name, changes in runs.items():
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        cfg = copy.deepcopy(train_cfg)
        extra = {**cfg["lightning_trainer_extra_args"], **changes.pop("lightning_trainer_extra_args", {})}
        cfg.update({**changes, "lightning_trainer_extra_args": extra})
        extractor_training_pipeline(cfg)

    state = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # parameters only: BatchNorm running statistics are per process in DDP
    names = [n for n in state if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    ddp = _parameters(tmp_path / "ddp" / "checkpoints" / "last.ckpt", names)
    single = _parameters(tmp_path / "single" / "checkpoints" / "last.ckpt", names)
    for name in names:
        torch.testing.assert_close(ddp[name], single[name], atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("drop_rows", [0, 1])
def test_ddp_validation_equals_one_process(
    mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop_rows: int
) -> None:
    df = pd.read_csv(mock_dataset_root / "df.csv")
    df = df.drop(index=df.index[df["split"] == "validation"][:drop_rows])  # 72 or 71 validation rows
    df["path"] = df["path"].map(lambda p: str(mock_dataset_root / p))
    df.to_csv(tmp_path / "df.csv", index=False)
    monkeypatch.chdir(tmp_path)
    cfg = {
        "dataset_root": str(tmp_path),
        "dataframe_name": "df.csv",
        "accelerator": "cpu",
        "bs_val": 10,
        "num_workers": 0,
        "transforms_val": {"name": "norm_resize_torch", "args": {"im_size": 32}},
        "extractor": {"name": "timm", "args": {"arch": "resnet10t", "weights": None, "normalise_features": True}},
        "metric_args": {"cmc_top_k": [1, 5], "map_top_k": [5], "precision_top_k": [5], "fmr_vals": [0.1]},
    }
    logs = {}
    for devices in (1, 2):
        torch.manual_seed(0)  # the same random extractor in both runs
        _, logs[devices] = extractor_validation_pipeline({**cfg, "devices": devices})
    assert set(logs[1]) == set(logs[2]) and "OVERALL/cmc/1" in logs[1]
    # gathered samples are put back in dataset order, so every number is the same to the bit
    assert logs[2] == logs[1]


def test_ddp_prediction_embeds_each_image_once_in_order(mock_dataset_root: Path, tmp_path: Path) -> None:
    from oml.lightning.pipelines.predict import extractor_prediction_pipeline

    cfg = {
        "data_dir": str(mock_dataset_root / "images"),
        "bs": 7,  # 144 images: uneven batches per process
        "num_workers": 0,
        "accelerator": "cpu",
        "transforms_predict": {"name": "norm_resize_torch", "args": {"im_size": 32}},
        "extractor": {"name": "timm", "args": {"arch": "resnet10t", "weights": None, "normalise_features": True}},
    }
    results = {}
    for devices in (1, 2):
        torch.manual_seed(0)
        results[devices] = extractor_prediction_pipeline(
            {**cfg, "devices": devices, "save_dir": str(tmp_path / str(devices))}
        )
    assert list(results[1]) == list(results[2]) and len(results[1]) == 144
    for path in results[1]:
        torch.testing.assert_close(torch.tensor(results[2][path]), torch.tensor(results[1][path]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["arcface_with_mlp", "category_sampler"])
def test_ddp_training_variants(train_cfg: Dict[str, Any], variant: str) -> None:
    train_cfg.update({"devices": 2, "max_epochs": 1})
    if variant == "arcface_with_mlp":
        train_cfg.update(
            {
                "sampler": None,
                "bs_train": 12,
                "extractor": {
                    "name": "extractor_with_mlp",
                    "args": {
                        "mlp_features": [16],
                        "train_backbone": True,
                        "weights": None,
                        "extractor": train_cfg["extractor"],
                    },
                },
                "criterion": {"name": "arcface", "args": {"in_features": 16, "num_classes": 12}},
            }
        )
    else:
        train_cfg["dataframe_name"] = "df_with_category.csv"
        train_cfg["sampler"] = {
            "name": "category_balance",
            "args": {"n_categories": 2, "n_labels": 2, "n_instances": 2},
        }
    extractor_training_pipeline(train_cfg)
    assert (Path.cwd() / "checkpoints" / "best.ckpt").is_file()
