"""Torchvision pipelines: augmentations for training and normalisation for validation."""

import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from oml.const import MEAN, MEAN_CLIP, STD, STD_CLIP, TNormParam


def get_augs_torch(im_size: int, mean: TNormParam = MEAN, std: TNormParam = STD) -> T.Compose:
    """Square resize, horizontal flip, colour jitter, normalise."""
    return T.Compose(
        [
            T.Resize(size=(im_size, im_size), antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            T.ToTensor(),
            T.Normalize(mean=mean, std=std),
        ]
    )


def get_augs_hypvit(
    im_size: int = 224, min_scale: float = 0.2, mean: TNormParam = MEAN, std: TNormParam = STD
) -> T.Compose:
    """Augmentations of Hyp-ViT: random resized crop (bicubic) and horizontal flip."""
    return T.Compose(
        [
            T.RandomResizedCrop(
                im_size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True
            ),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=mean, std=std),
        ]
    )


def get_normalisation_resize_hypvit(
    im_size: int = 224, crop_size: int = 224, mean: TNormParam = MEAN, std: TNormParam = STD
) -> T.Compose:
    """Bicubic resize of the shorter side to ``im_size``, centre crop ``crop_size``, normalise."""
    return T.Compose(
        [
            T.Resize(im_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(crop_size),
            T.ToTensor(),
            T.Normalize(mean=mean, std=std),
        ]
    )


def get_normalisation_torch(mean: TNormParam = MEAN, std: TNormParam = STD) -> T.Compose:
    """Only conversion to a tensor and normalisation."""
    return T.Compose([T.ToTensor(), T.Normalize(mean=mean, std=std)])


def get_normalisation_resize_torch(im_size: int, mean: TNormParam = MEAN, std: TNormParam = STD) -> T.Compose:
    """Square resize to ``(im_size, im_size)`` with antialiasing, normalise."""
    return T.Compose([T.Resize(size=(im_size, im_size), antialias=True), T.ToTensor(), T.Normalize(mean=mean, std=std)])


def get_unicom_transforms(im_size: int = 224) -> T.Compose:
    """Preprocessing of the Unicom models (CLIP style): bicubic resize, centre crop, CLIP normalisation."""
    return T.Compose(
        [
            T.Resize(im_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(im_size),
            T.ToTensor(),
            T.Normalize(mean=MEAN_CLIP, std=STD_CLIP),
        ]
    )


__all__ = [
    "get_augs_torch",
    "get_augs_hypvit",
    "get_normalisation_resize_hypvit",
    "get_normalisation_torch",
    "get_normalisation_resize_torch",
    "get_unicom_transforms",
]
