"""Configs of the pipeline tests: the mock pipeline config, shrunk to seconds on a CPU."""

import copy
from pathlib import Path
from typing import Any, Dict, List

import pytest

from oml.const import PROJECT_ROOT

TINY_EXTRACTOR = {"name": "timm", "args": {"arch": "resnet10t", "weights": None, "normalise_features": True}}


def compose_mock_config(name: str, overrides: List[str] = ()) -> Dict[str, Any]:
    """A config of ``pipelines/mock`` composed by Hydra (``defaults`` resolved), without its ``hydra`` part."""
    from oml.demo import compose_config

    return compose_config(PROJECT_ROOT / "pipelines" / "mock" / f"{name}.yaml", list(overrides))


def tiny_train_config(dataset_root: Path, log_dir: Path) -> Dict[str, Any]:
    """The mock training config shrunk to seconds: 32 px, resnet10t, 2 epochs validated each, logs in ``log_dir``."""
    cfg = compose_mock_config("train", [f"dataset_root={dataset_root}"])
    cfg.update(
        {
            "max_epochs": 2,
            "valid_period": 1,
            "transforms_train": {"name": "norm_resize_torch", "args": {"im_size": 32}},
            "transforms_val": {"name": "norm_resize_torch", "args": {"im_size": 32}},
            "extractor": copy.deepcopy(TINY_EXTRACTOR),
            "metric_args": {
                "cmc_top_k": [1],
                "map_top_k": [5],
                "precision_top_k": [5],
                "fmr_vals": [],
                "pfc_variance": [],
            },
            "logger": {"name": "tensorboard", "args": {"save_dir": str(log_dir)}},
            "lightning_trainer_extra_args": {"enable_progress_bar": False, "enable_model_summary": False},
        }
    )
    return cfg


@pytest.fixture()
def train_cfg(mock_dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    return tiny_train_config(mock_dataset_root, tmp_path)
