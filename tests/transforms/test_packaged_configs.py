from pathlib import Path

import pytest
import torch
import yaml

from oml.const import CONFIGS_PATH
from oml.registry.loggers import LOGGERS_REGISTRY
from oml.registry.transforms import TRANSFORMS_REGISTRY, get_transforms_by_cfg
from oml.transforms.images.utils import apply_transforms, get_im_reader_for_transforms


def test_every_transforms_name_has_a_packaged_config() -> None:
    assert {p.stem for p in (CONFIGS_PATH / "transforms").glob("*.yaml")} == set(TRANSFORMS_REGISTRY)
    assert {p.stem for p in (CONFIGS_PATH / "logger").glob("*.yaml")} == set(LOGGERS_REGISTRY)


@pytest.mark.parametrize("path", sorted((CONFIGS_PATH / "transforms").glob("*.yaml")), ids=lambda p: p.stem)
def test_packaged_transforms_configs_build(path: Path, mock_dataset_root: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    assert cfg["name"] == path.stem
    transforms = get_transforms_by_cfg(cfg)
    image = get_im_reader_for_transforms(transforms)(mock_dataset_root / "images" / "square_1.jpg")
    tensor = apply_transforms(transforms, image)
    assert isinstance(tensor, torch.Tensor) and tensor.shape[0] == 3
    if "im_size" in cfg["args"]:
        assert tensor.shape[1:] == (cfg["args"].get("crop_size", cfg["args"]["im_size"]),) * 2
