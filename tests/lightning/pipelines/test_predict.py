import json
from pathlib import Path

import pytest
import torch

from oml.lightning.pipelines.parser import ConfigError
from oml.lightning.pipelines.predict import extractor_prediction_pipeline
from oml.registry.models import get_extractor_by_cfg
from oml.registry.transforms import get_transforms_by_cfg
from oml.utils.images.images import imread_pillow

EXTRACTOR = {"name": "timm", "args": {"arch": "mobilenetv3_small_050", "weights": None, "normalise_features": True}}
TRANSFORMS = {"name": "norm_resize_torch", "args": {"im_size": 32}}


def _cfg(data_dir: Path, save_dir: Path, **kwargs) -> dict:
    return {
        "data_dir": str(data_dir),
        "save_dir": str(save_dir),
        "bs": 5,
        "num_workers": 0,
        "accelerator": "cpu",
        "transforms_predict": TRANSFORMS,
        "extractor": EXTRACTOR,
        **kwargs,
    }


def test_predict_embeds_every_image_once(mock_dataset_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    predictions = extractor_prediction_pipeline(_cfg(mock_dataset_root / "images", tmp_path))
    saved = json.loads((tmp_path / "predictions.json").read_text())
    paths = sorted((mock_dataset_root / "images").glob("*.jpg"))
    assert sorted(saved) == sorted(map(str, paths)) == sorted(predictions)

    torch.manual_seed(0)
    extractor = get_extractor_by_cfg(EXTRACTOR).eval()
    transforms = get_transforms_by_cfg(TRANSFORMS)
    with torch.no_grad():
        expected = extractor(torch.stack([transforms(imread_pillow(p)) for p in paths[:3]]))
    got = torch.tensor([saved[str(p)] for p in paths[:3]])
    assert torch.allclose(got, expected, atol=1e-5)


def test_broken_images_are_listed(tmp_path: Path, mock_dataset_root: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "good.jpg").write_bytes((mock_dataset_root / "images" / "circle_1.jpg").read_bytes())
    (tmp_path / "imgs" / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"(?s)1 images cannot be read.*bad.png"):
        extractor_prediction_pipeline(_cfg(tmp_path / "imgs", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="No images"):
        extractor_prediction_pipeline(_cfg(tmp_path / "empty", tmp_path / "out2"))
    with pytest.raises(ConfigError, match="data_dir=.*nowhere' is not an existing folder"):
        extractor_prediction_pipeline(_cfg(tmp_path / "nowhere", tmp_path / "out2"))
    with pytest.raises(ConfigError, match=r"misses the required keys \['extractor'\]"):
        extractor_prediction_pipeline({k: v for k, v in _cfg(tmp_path, tmp_path).items() if k != "extractor"})
