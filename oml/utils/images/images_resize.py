"""Keep-aspect-ratio resize with padding ("karesize") for images and their boxes, and its inverse."""

from typing import Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from oml.const import PAD_COLOR

TSize = Union[int, Tuple[int, int]]
# scale, pad_top, pad_bottom, pad_left, pad_right
TKaresizeParam = Tuple[float, int, int, int, int]


def _as_hw(size: TSize) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def get_image_hw(image: Union[np.ndarray, torch.Tensor]) -> Tuple[int, int]:
    """Height and width of an ``H x W x C`` array or a ``C x H x W`` tensor."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    return int(image.shape[0]), int(image.shape[1])


def get_karesize_param(hw: Tuple[int, int], new_size: TSize) -> TKaresizeParam:
    """The scale and the paddings that fit an ``hw`` image into ``new_size`` keeping its aspect ratio."""
    h, w = hw
    new_h, new_w = _as_hw(new_size)
    scale = min(new_h / h, new_w / w)
    resized_h, resized_w = round(h * scale), round(w * scale)
    pad_h, pad_w = new_h - resized_h, new_w - resized_w
    return scale, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2


def resize_ndarray(image: np.ndarray, size: TSize) -> np.ndarray:
    """Resize an ``H x W x C`` array to ``size`` (h, w)."""
    h, w = _as_hw(size)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_tensor(image: torch.Tensor, size: TSize) -> torch.Tensor:
    """Resize a ``C x H x W`` (or ``B x C x H x W``) tensor to ``size`` (h, w), bilinearly."""
    batched = image.ndim == 4
    out = F.interpolate(image[None] if not batched else image, size=_as_hw(size), mode="bilinear", align_corners=False)
    return out if batched else out[0]


def karesize_image(image: np.ndarray, new_size: TSize) -> np.ndarray:
    """Resize an ``H x W x C`` image into ``new_size`` keeping the aspect ratio, padding with white."""
    scale, top, bottom, left, right = get_karesize_param(get_image_hw(image), new_size)
    h, w = get_image_hw(image)
    resized = resize_ndarray(image, (round(h * scale), round(w * scale)))
    return cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=PAD_COLOR)


def inverse_karesize_image(image: np.ndarray, original_hw: Tuple[int, int]) -> np.ndarray:
    """Undo ``karesize_image``: crop the padding and resize back to ``original_hw``."""
    scale, top, bottom, left, right = get_karesize_param(original_hw, get_image_hw(image))
    h, w = get_image_hw(image)
    cropped = image[top : h - bottom, left : w - right]
    return resize_ndarray(cropped, original_hw)


def karesize_bboxes(bboxes: np.ndarray, hw: Tuple[int, int], new_size: TSize) -> np.ndarray:
    """Map boxes ``[N, 4]`` (x1, y1, x2, y2) of an ``hw`` image into its karesized version."""
    scale, top, _, left, _ = get_karesize_param(hw, new_size)
    out = np.asarray(bboxes, dtype=np.float64) * scale
    out[:, [0, 2]] += left
    out[:, [1, 3]] += top
    return out


def inverse_karesize_bboxes(bboxes: np.ndarray, hw: Tuple[int, int], new_size: TSize) -> np.ndarray:
    """Undo ``karesize_bboxes``."""
    scale, top, _, left, _ = get_karesize_param(hw, new_size)
    out = np.asarray(bboxes, dtype=np.float64).copy()
    out[:, [0, 2]] -= left
    out[:, [1, 3]] -= top
    return out / scale


__all__ = [
    "get_image_hw",
    "get_karesize_param",
    "resize_ndarray",
    "resize_tensor",
    "karesize_image",
    "inverse_karesize_image",
    "karesize_bboxes",
    "inverse_karesize_bboxes",
]
