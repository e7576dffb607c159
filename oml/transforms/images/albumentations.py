"""Albumentations pipelines: augmentations for training and normalisation for validation."""

from typing import List

import albumentations as albu
import cv2
from albumentations.pytorch import ToTensorV2

from oml.const import MEAN, MEAN_CLIP, PAD_COLOR, STD, STD_CLIP, TNormParam


def get_spatials() -> albu.OneOf:
    """One of: a mild affine transform, a perspective warp, or a grid distortion."""
    return albu.OneOf(
        [
            albu.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-15, 15),
                border_mode=cv2.BORDER_CONSTANT,
                fill=PAD_COLOR,
            ),
            albu.Perspective(scale=(0.03, 0.08), fill=PAD_COLOR),
            albu.GridDistortion(distort_limit=0.2, border_mode=cv2.BORDER_CONSTANT),
        ],
        p=0.5,
    )


def get_blurs() -> albu.OneOf:
    return albu.OneOf(
        [albu.MotionBlur(blur_limit=(3, 5)), albu.MedianBlur(blur_limit=(3, 5)), albu.Blur(blur_limit=(3, 5))], p=0.3
    )


def get_colors_level() -> albu.OneOf:
    return albu.OneOf(
        [
            albu.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=20),
            albu.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2),
            albu.RandomGamma(gamma_limit=(80, 120)),
        ],
        p=0.8,
    )


def get_noise_channels() -> albu.OneOf:
    return albu.OneOf([albu.ChannelShuffle(), albu.ToGray(), albu.ChannelDropout()], p=0.2)


def get_noises() -> albu.OneOf:
    return albu.OneOf([albu.GaussNoise(std_range=(0.02, 0.1)), albu.ISONoise()], p=0.25)


def _resize_pad(im_size: int) -> List[albu.BasicTransform]:
    return [
        albu.LongestMaxSize(max_size=im_size),
        albu.PadIfNeeded(min_height=im_size, min_width=im_size, border_mode=cv2.BORDER_CONSTANT, fill=PAD_COLOR),
    ]


def get_augs_albu(im_size: int, mean: TNormParam = MEAN, std: TNormParam = STD) -> albu.Compose:
    """Training augmentations: keep-ratio resize + white pad, flips, spatial, blur, colour and noise."""
    return albu.Compose(
        [
            *_resize_pad(im_size),
            albu.HorizontalFlip(),
            get_spatials(),
            get_blurs(),
            get_colors_level(),
            get_noise_channels(),
            get_noises(),
            albu.Normalize(mean=mean, std=std),
            ToTensorV2(),
        ]
    )


def get_normalisation_albu(mean: TNormParam = MEAN, std: TNormParam = STD) -> albu.Compose:
    """Only normalisation and conversion to a ``C x H x W`` float tensor."""
    return albu.Compose([albu.Normalize(mean=mean, std=std), ToTensorV2()])


def get_normalisation_resize_albu(im_size: int, mean: TNormParam = MEAN, std: TNormParam = STD) -> albu.Compose:
    """Keep-ratio resize to ``im_size``, white pad to a square, normalise."""
    return albu.Compose([*_resize_pad(im_size), albu.Normalize(mean=mean, std=std), ToTensorV2()])


def get_normalisation_resize_albu_clip(im_size: int) -> albu.Compose:
    """As ``get_normalisation_resize_albu`` with CLIP's mean and std."""
    return get_normalisation_resize_albu(im_size=im_size, mean=MEAN_CLIP, std=STD_CLIP)


__all__ = [
    "get_spatials",
    "get_blurs",
    "get_colors_level",
    "get_noise_channels",
    "get_noises",
    "get_augs_albu",
    "get_normalisation_albu",
    "get_normalisation_resize_albu",
    "get_normalisation_resize_albu_clip",
]
