from pathlib import Path

import pytest
import torch

from oml.registry.transforms import TRANSFORMS_REGISTRY, get_transforms, get_transforms_by_cfg
from oml.transforms.images.utils import apply_transforms, get_im_reader_for_transforms
from oml.utils.images.images import imread_cv2, imread_pillow

SIZE = 40
ARGS = {
    "norm_albu": {},
    "norm_torch": {},
    "norm_resize_hypvit_torch": {"im_size": 48, "crop_size": SIZE},
    "norm_resize_crop_torch": {"im_size": 48, "crop_size": SIZE, "interpolation": "bilinear", "keep_ratio": False},
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS_REGISTRY))
def test_every_registered_transform_maps_a_mock_image_to_a_tensor(name: str, mock_dataset_root: Path) -> None:
    args = ARGS.get(name, {"im_size": SIZE})
    transforms = get_transforms_by_cfg({"name": name, "args": args})
    image = get_im_reader_for_transforms(transforms)(mock_dataset_root / "images" / "circle_1.jpg")
    for _ in range(3):  # random augmentations: several draws
        tensor = apply_transforms(transforms, image)
        expected = 96 if name in ("norm_albu", "norm_torch") else SIZE
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
        assert tuple(tensor.shape) == (3, expected, expected)
        assert torch.isfinite(tensor).all() and tensor.std() > 0


def test_reader_matches_library() -> None:
    assert get_im_reader_for_transforms(get_transforms("norm_albu")) is imread_cv2
    assert get_im_reader_for_transforms(get_transforms("norm_torch")) is imread_pillow


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(KeyError, match="norm_resize_torch"):
        get_transforms("resize_magic")
    with pytest.raises(ValueError, match="'name'"):
        get_transforms_by_cfg({"args": {}})
