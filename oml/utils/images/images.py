"""Image readers (always RGB), drawing helpers and a broken-image finder."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from oml.const import PAD_COLOR, TColor

TImage = Union[Image.Image, np.ndarray]
TImReader = Callable[[Union[Path, str, bytes]], TImage]
TBBox = Tuple[float, float, float, float]


class ImageReadError(OSError):
    """An image file is missing or cannot be decoded (the message names the file)."""


def tensor_to_numpy_image(img: torch.Tensor) -> np.ndarray:
    """Min-max scale a ``[C, H, W]`` tensor into a ``uint8`` ``H x W x C`` array."""
    img = img.detach().cpu().float()
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    return (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _read_bytes(im_src: Union[Path, str, bytes]) -> bytes:
    if isinstance(im_src, bytes):
        return im_src
    try:
        return Path(im_src).read_bytes()
    except OSError as e:
        raise ImageReadError(f"Cannot read the image file {im_src}: {e.strerror or e}") from e


def _name(im_src: Union[Path, str, bytes]) -> str:
    return "<bytes>" if isinstance(im_src, bytes) else str(im_src)


def imread_cv2(im_src: Union[Path, str, bytes]) -> np.ndarray:
    """Read an image with OpenCV as an RGB ``uint8`` array ``H x W x 3`` (grayscale and RGBA converted)."""
    buffer = np.frombuffer(_read_bytes(im_src), dtype=np.uint8)
    img = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f"Cannot decode the image {_name(im_src)}: the file is broken or not an image.")
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def imread_pillow(im_src: Union[Path, str, bytes]) -> Image.Image:
    """Read an image with Pillow as an RGB ``PIL.Image`` (grayscale and RGBA converted)."""
    import io

    try:
        with Image.open(io.BytesIO(_read_bytes(im_src))) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        if isinstance(e, ImageReadError):
            raise
        raise ImageReadError(f"Cannot decode the image {_name(im_src)}: {e}") from e


def draw_bbox(im: np.ndarray, bbox: Optional[Sequence[float]], color: TColor) -> np.ndarray:
    """Return a copy of ``im`` with the box ``(x1, y1, x2, y2)`` drawn; a None or NaN box frames the whole image."""
    im = np.ascontiguousarray(im).copy()
    h, w = im.shape[:2]
    if bbox is None or any(np.isnan(float(c)) for c in bbox):
        x1, y1, x2, y2 = 0, 0, w - 1, h - 1
    else:
        x1, y1, x2, y2 = (int(c) for c in bbox)
    thickness = max(1, round(0.02 * max(h, w)))
    return cv2.rectangle(im, (x1, y1), (x2, y2), tuple(int(c) for c in color), thickness)


def get_img_with_bbox(im_path: Union[str, Path], bbox: Optional[Sequence[float]], color: TColor) -> np.ndarray:
    """Read an image and draw a box on it."""
    return draw_bbox(imread_cv2(im_path), bbox, color)


def square_pad(img: np.ndarray) -> np.ndarray:
    """Pad an ``H x W x C`` image with white to a square, keeping it centred."""
    h, w = img.shape[:2]
    size = max(h, w)
    top, left = (size - h) // 2, (size - w) // 2
    return cv2.copyMakeBorder(img, top, size - h - top, left, size - w - left, cv2.BORDER_CONSTANT, value=PAD_COLOR)


def try_to_open_image(path: Union[str, Path], f_imread: TImReader) -> bool:
    """True if ``f_imread`` reads the image without an error."""
    try:
        f_imread(path)
    except Exception:
        return False
    return True


def find_broken_images(
    images_list: Sequence[Union[str, Path]], f_imread: TImReader = imread_cv2, num_processes: int = 10
) -> List[Union[str, Path]]:
    """Return the images of ``images_list`` that cannot be read (decoding releases the GIL: threads suffice)."""
    with ThreadPoolExecutor(max_workers=max(1, num_processes)) as pool:
        ok = list(pool.map(lambda p: try_to_open_image(p, f_imread), images_list))
    return [path for path, good in zip(images_list, ok) if not good]


__all__ = [
    "TImage",
    "TImReader",
    "ImageReadError",
    "tensor_to_numpy_image",
    "imread_cv2",
    "imread_pillow",
    "draw_bbox",
    "get_img_with_bbox",
    "square_pad",
    "try_to_open_image",
    "find_broken_images",
]
