"""Torchvision pipelines: augmentations for training and normalisation for validation."""

from typing import Any, Callable, List

import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from oml.const import MEAN, MEAN_CLIP, STD, STD_CLIP, TNormParam


def _to_normalised_tensor(mean: TNormParam, std: TNormParam) -> List[Callable[[Any], Any]]:
    """The last two steps of every pipeline here: a PIL image to a ``[3, H, W]`` float tensor, normalised."""
    return [T.ToTensor(), T.Normalize(mean=mean, std=std)]


def get_augs_torch(im_size: int, mean: TNormParam = MEAN, std: TNormParam = STD) -> T.Compose:
    """Square resize, horizontal flip, colour jitter, normalise."""
    flip_and_jitter = [T.RandomHorizontalFlip(), T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
    resize = T.Resize(size=(im_size, im_size), antialias=True)
    return T.Compose([resize, *flip_and_jitter, *_to_normalised_tensor(mean, std)])


def get_augs_hypvit(
    im_size: int = 224, min_scale: float = 0.2, mean: TNormParam = MEAN, std: TNormParam = STD
) -> T.Compose:
    """Augmentations of Hyp-ViT: random resized crop (bicubic) and horizontal flip."""
    crop = T.RandomResizedCrop(im_size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True)
    return T.Compose([crop, T.RandomHorizontalFlip(), *_to_normalised_tensor(mean, std)])


def get_normalisation_resize_crop_torch(
    im_size: int,
    crop_size: int,
    mean: TNormParam = MEAN,
    std: TNormParam = STD,
    interpolation: str = "bicubic",
    keep_ratio: bool = True,
) -> T.Compose:
    """Resize, centre crop ``crop_size``, normalise: the evaluation pipeline of timm's pretrained configs.

    Args:
        im_size: the side of the resize: the shorter side with ``keep_ratio`` (timm's ``crop_mode="center"``),
            else both sides (``crop_mode="squash"``).
        crop_size: the side of the centre crop.
        mean: normalisation mean.
        std: normalisation standard deviation.
        interpolation: a ``torchvision.transforms.InterpolationMode`` value (``"bicubic"``, ``"bilinear"``, ...).
        keep_ratio: keep the aspect ratio when resizing.
    """
    size = im_size if keep_ratio else (im_size, im_size)
    resize = T.Resize(size, interpolation=InterpolationMode(interpolation), antialias=True)
    return T.Compose([resize, T.CenterCrop(crop_size), *_to_normalised_tensor(mean, std)])


def get_normalisation_resize_hypvit(
    im_size: int = 224, crop_size: int = 224, mean: TNormParam = MEAN, std: TNormParam = STD
) -> T.Compose:
    """Bicubic resize of the shorter side to ``im_size``, centre crop ``crop_size``, normalise."""
    return get_normalisation_resize_crop_torch(im_size, crop_size, mean=mean, std=std)


def get_normalisation_torch(mean: TNormParam = MEAN, std: TNormParam = STD) -> T.Compose:
    """Only conversion to a tensor and normalisation."""
    return T.Compose(_to_normalised_tensor(mean, std))


def get_normalisation_resize_torch(im_size: int, mean: TNormParam = MEAN, std: TNormParam = STD) -> T.Compose:
    """Square resize to ``(im_size, im_size)`` with antialiasing, normalise."""
    return T.Compose([T.Resize(size=(im_size, im_size), antialias=True), *_to_normalised_tensor(mean, std)])


def get_unicom_transforms(im_size: int = 224) -> T.Compose:
    """Preprocessing of the Unicom models (CLIP style): bicubic resize, centre crop, CLIP normalisation."""
    return get_normalisation_resize_crop_torch(im_size, im_size, mean=MEAN_CLIP, std=STD_CLIP)


__all__ = [
    "get_augs_torch",
    "get_augs_hypvit",
    "get_normalisation_resize_crop_torch",
    "get_normalisation_resize_hypvit",
    "get_normalisation_torch",
    "get_normalisation_resize_torch",
    "get_unicom_transforms",
]
