import copy
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

from oml.lightning.pipelines.parser import ConfigError
from oml.lightning.pipelines.train import extractor_training_pipeline
from oml.lightning.pipelines.validate import extractor_validation_pipeline


def _weights(checkpoint: Path) -> Dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]


def test_triplet_with_miner_saves_best_and_last(train_cfg: Dict[str, Any], tmp_path: Path) -> None:
    trainer = extractor_training_pipeline(train_cfg)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    logged = trainer.logged_metrics
    assert 0 <= float(logged["OVERALL/cmc/1"]) <= 1 and "triplet_loss_epoch" in logged and "active_tri_epoch" in logged
    assert trainer.current_epoch == 2


def test_arcface_with_mlp_and_no_sampler(train_cfg: Dict[str, Any]) -> None:
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
            "criterion": {"name": "arcface", "args": {"in_features": 16, "num_classes": 12, "m": 0.4, "s": 30}},
        }
    )
    trainer = extractor_training_pipeline(train_cfg)
    assert "arcface_loss_epoch" in trainer.logged_metrics


def test_categories_sampler_and_missing_categories(train_cfg: Dict[str, Any]) -> None:
    cfg = copy.deepcopy(train_cfg)
    cfg["sampler"] = {"name": "category_balance", "args": {"n_categories": 2, "n_labels": 2, "n_instances": 2}}
    with pytest.raises(ConfigError, match="needs categories, but the table 'df.csv' has no 'category' column"):
        extractor_training_pipeline(cfg)
    cfg["dataframe_name"] = "df_with_category.csv"
    cfg["metric_args"]["categories_key"] = "categories"
    trainer = extractor_training_pipeline(cfg)
    assert "OVERALL/cmc/1" in trainer.logged_metrics


def test_bboxes_and_validation_pipeline(train_cfg: Dict[str, Any], tmp_path: Path) -> None:
    train_cfg["dataframe_name"] = "df_with_bboxes.csv"
    trainer = extractor_training_pipeline(train_cfg)
    best = trainer.checkpoint_callback.best_model_path
    val_cfg = {
        "dataset_root": train_cfg["dataset_root"],
        "dataframe_name": "df_with_bboxes.csv",
        "accelerator": "cpu",
        "bs_val": 20,
        "num_workers": 0,
        "transforms_val": train_cfg["transforms_val"],
        "extractor": {**train_cfg["extractor"], "args": {**train_cfg["extractor"]["args"], "weights": best}},
        "metric_args": train_cfg["metric_args"],
    }
    _, logs = extractor_validation_pipeline(val_cfg)
    # the best checkpoint reproduces the metric it was saved for
    assert logs["OVERALL/cmc/1"] == pytest.approx(float(trainer.checkpoint_callback.best_model_score), abs=1e-6)


def test_resume_gives_the_same_weights(train_cfg: Dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    train_cfg["max_epochs"] = 2
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    extractor_training_pipeline(copy.deepcopy(train_cfg))
    straight = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt")

    monkeypatch.chdir(tmp_path / "resumed")
    extractor_training_pipeline({**copy.deepcopy(train_cfg), "max_epochs": 1})
    extractor_training_pipeline(
        {**copy.deepcopy(train_cfg), "ckpt_path": str(tmp_path / "resumed" / "checkpoints" / "last.ckpt")}
    )
    resumed = _weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], msg=key)


def test_missing_keys_and_unknown_names(train_cfg: Dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"misses the required keys \['criterion'\]"):
        extractor_training_pipeline({k: v for k, v in train_cfg.items() if k != "criterion"})
    bad = copy.deepcopy(train_cfg)
    bad["criterion"]["name"] = "tripletloss"
    with pytest.raises(Exception, match="triplet_with_miner"):
        extractor_training_pipeline(bad)
    bad = copy.deepcopy(train_cfg)
    del bad["optimizer"]["args"]["lr"]
    with pytest.raises(ConfigError, match="args.lr"):
        extractor_training_pipeline(bad)
