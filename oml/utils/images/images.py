"""Image readers (always RGB), drawing helpers and a broken-image finder."""

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from oml.const import PAD_COLOR, TColor

TImage = Union[Image.Image, np.ndarray]
TImReader = Callable[[Union[Path, str, bytes]], TImage]
TBBox = Tuple[float, float, float, float]
_EXIF_ORIENTATION = 0x0112
_PNM_MAGICS = (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")
# 3 channels (gray, palette and alpha images converted), EXIF orientation applied, 16 bits kept
_CV2_GIVES_RGB = hasattr(cv2, "IMREAD_COLOR_RGB")  # OpenCV >= 4.10
_CV2_FLAGS = (cv2.IMREAD_COLOR_RGB if _CV2_GIVES_RGB else cv2.IMREAD_COLOR) | cv2.IMREAD_ANYDEPTH


class ImageReadError(OSError):
    """An image file is missing, empty or cannot be decoded (the message names the file)."""


def tensor_to_numpy_image(img: torch.Tensor) -> np.ndarray:
    """Min-max scale a ``[C, H, W]`` tensor into a ``uint8`` ``H x W x C`` array."""
    img = img.detach().cpu().float()
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    return (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def read_image_bytes(path: Union[Path, str]) -> bytes:
    """The raw bytes of an image file; ``ImageReadError`` naming the file if it cannot be read or is empty."""
    try:
        content = Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(f"Cannot read the image file {path}: {e.strerror or e}") from e
    if not content:
        raise ImageReadError(f"The image file {path} is empty (0 bytes).")
    return content


def _name(im_src: Union[Path, str, bytes]) -> str:
    return "<bytes>" if isinstance(im_src, bytes) else str(im_src)


def _bit_depth(img: Image.Image) -> Optional[int]:
    """Bits per sample of a single-channel integer image that is not 8-bit, or None if unknown."""
    if img.mode.startswith("I;16"):
        return 16
    if img.mode == "I":
        if img.format in ("PNG", "PPM"):  # 16-bit PNG; PGM with maxval > 255 (Pillow scales it to 16 bits)
            return 16
        if img.format == "TIFF":
            bits = img.tag_v2.get(258, ())  # BitsPerSample
            bits = bits if isinstance(bits, tuple) else (bits,)
            if bits and all(b == 16 for b in bits):
                return 16
    return None


def _to_rgb(img: Image.Image, bit_depth: Optional[int], name: str) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: high bit depths scaled by their depth, alpha dropped, palettes expanded."""
    if img.mode == "RGB":
        return img
    if bit_depth is not None:
        # scaled by the depth of the format, not by each image's range: a flat grey stays that grey.
        # ">> 8" is also what Pillow does for 16-bit RGB(A) files, so every 16-bit layout agrees.
        values = np.asarray(img).astype(np.int64) >> (bit_depth - 8)
        return Image.fromarray(values.clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        raise ImageReadError(
            f"Cannot read the image {name}: its pixels are {'floats' if img.mode == 'F' else '32-bit integers'} "
            f"(Pillow mode {img.mode!r}), which have no standard range; save it with 8 or 16 bits per channel."
        )
    # "1", "L", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr", ...: alpha is dropped (as OML did), palettes expanded
    return img.convert("RGB")


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))  # an in-memory buffer: no file handle to close
        img.load()  # decode now, inside the try: a truncated file fails here
        bit_depth = _bit_depth(img)
        if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
        return np.array(_to_rgb(img, bit_depth, name))  # writable, as OpenCV gives
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"Cannot decode the image {name}: the file is broken or not an image ({e}).") from e


def _opencv_can_decode(data: bytes) -> bool:
    if data[:2] in _PNM_MAGICS:  # OpenCV keeps PGM/PPM values as they are; Pillow scales maxval to 16 bits
        return False
    # OpenCV before 5.0 returned the decoded part of a truncated JPEG without an error; Pillow raises
    return not data.startswith(b"\xff\xd8") or data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _decode_rgb(im_src: Union[Path, str, bytes]) -> np.ndarray:
    """The one decoder behind both readers: ``H x W x 3`` RGB ``uint8``, EXIF orientation applied.

    OpenCV decodes (it is the faster decoder on small images) with EXIF orientation and 16 bits kept;
    what it cannot read, or reads differently (PGM/PPM bit depths, truncated JPEGs), goes to Pillow with
    the same conversions, so the result does not depend on the reader that asked.
    """
    data = im_src if isinstance(im_src, bytes) else read_image_bytes(im_src)
    name = _name(im_src)
    if not data:
        raise ImageReadError(f"Cannot decode the image {name}: it is empty (0 bytes).")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _CV2_FLAGS) if _opencv_can_decode(data) else None
    if img is None:
        return _decode_with_pillow(data, name)
    if not _CV2_GIVES_RGB:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.dtype == np.uint16:  # scaled by the bit depth (as Pillow does for 16-bit RGB), not by the image's range
        return (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise ImageReadError(
            f"Cannot read the image {name}: its pixels are {img.dtype} values, which have no standard range; save "
            f"it with 8 or 16 bits per channel."
        )
    return img


def imread_cv2(im_src: Union[Path, str, bytes]) -> np.ndarray:
    """Read an image as an RGB ``uint8`` array ``H x W x 3`` (for albumentations).

    Both readers share one decoder and give the same pixels: EXIF orientation applied; grayscale, palette,
    LA, RGBA and CMYK images converted to RGB (alpha dropped, as in OML); 16-bit images scaled by their bit
    depth (``value >> 8``) for every image alike. OML's OpenCV reader ignored EXIF orientation and stretched
    every 16-bit image over its own range (a flat grey became black), while its Pillow reader clipped 16-bit
    greys to white: the two readers disagreed.

    Raises:
        ImageReadError: naming the file, if it is missing, empty, broken or not an image.
    """
    return _decode_rgb(im_src)


def imread_pillow(im_src: Union[Path, str, bytes]) -> Image.Image:
    """Read an image as an RGB ``PIL.Image`` (for torchvision); the same pixels as ``imread_cv2``."""
    return Image.fromarray(_decode_rgb(im_src))


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
    "read_image_bytes",
    "imread_cv2",
    "imread_pillow",
    "draw_bbox",
    "get_img_with_bbox",
    "square_pad",
    "try_to_open_image",
    "find_broken_images",
]
