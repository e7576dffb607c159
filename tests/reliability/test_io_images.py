"""One reader contract for both image backends (issue #17, finding 7).

``imread_cv2`` (numpy, for albumentations) and ``imread_pillow`` (PIL, for torchvision) must give the same
RGB pixels for every format generated here, apply EXIF orientation, scale 16-bit images by their bit
depth (not by each image's range) and name the file when it cannot be read. Expectations are computed
independently (numpy rotations, ``value >> 8``, palette look-ups), not by the code under test.
"""

import io
from pathlib import Path
from typing import Callable, Dict

import cv2
import numpy as np
import pytest
from PIL import Image

from oml.utils.images.images import ImageReadError, imread_cv2, imread_pillow

H, W = 6, 10
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
RGB16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)


def _both(path: Path) -> np.ndarray:
    """What both readers return; they must agree exactly."""
    from_cv2, from_pillow = imread_cv2(path), np.asarray(imread_pillow(path))
    assert from_cv2.dtype == np.uint8 and from_cv2.shape[2] == 3
    np.testing.assert_array_equal(from_cv2, from_pillow)
    return from_cv2


def _stored_rgb(path: Path) -> np.ndarray:
    """The 8-bit pixels as stored in a file of an 8-bit RGB format (no orientation applied)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _gray_png(p: Path) -> np.ndarray:
    Image.fromarray(RGB[..., 0]).save(p)
    return np.repeat(RGB[..., :1], 3, axis=2)


def _rgba_png(p: Path) -> np.ndarray:
    Image.fromarray(np.dstack([RGB, RGB[..., 1]]), mode="RGBA").save(p)
    return RGB  # alpha dropped, as OML did


def _la_png(p: Path) -> np.ndarray:
    Image.fromarray(np.dstack([RGB[..., 2], RGB[..., 0]]), mode="LA").save(p)
    return np.repeat(RGB[..., 2:], 3, axis=2)


def _palette_png(p: Path) -> np.ndarray:
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    indices = RGB[..., 0]
    img = Image.fromarray(indices, mode="L").convert("P")
    img.putpalette(palette.flatten().tolist())
    img.save(p, transparency=int(indices[0, 0]))  # a transparent colour keeps its RGB value
    return palette[indices]


def _bilevel_png(p: Path) -> np.ndarray:
    bits = RGB[..., 0] > 127
    Image.fromarray(bits).convert("1").save(p)
    return np.repeat((bits * 255).astype(np.uint8)[..., None], 3, axis=2)


def _gray16_png(p: Path) -> np.ndarray:
    cv2.imwrite(str(p), GRAY16)
    return np.repeat((GRAY16 >> 8).astype(np.uint8)[..., None], 3, axis=2)


def _rgb16_png(p: Path) -> np.ndarray:
    cv2.imwrite(str(p), RGB16[..., ::-1])  # OpenCV writes BGR
    return (RGB16 >> 8).astype(np.uint8)


def _rgba16_png(p: Path) -> np.ndarray:
    cv2.imwrite(str(p), np.dstack([RGB16[..., ::-1], GRAY16]))
    return (RGB16 >> 8).astype(np.uint8)


def _gray16_tiff(p: Path) -> np.ndarray:
    cv2.imwrite(str(p), GRAY16)
    return np.repeat((GRAY16 >> 8).astype(np.uint8)[..., None], 3, axis=2)


def _gray16_pgm(p: Path) -> np.ndarray:
    p.write_bytes(f"P5\n{W} {H}\n65535\n".encode() + GRAY16.astype(">u2").tobytes())
    return np.repeat((GRAY16 >> 8).astype(np.uint8)[..., None], 3, axis=2)


def _rgb_formats(fmt: str) -> Callable[[Path], np.ndarray]:
    def write(p: Path) -> np.ndarray:
        Image.fromarray(RGB).save(p, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        return RGB

    return write


FORMATS: Dict[str, Callable[[Path], np.ndarray]] = {
    "rgb.png": _rgb_formats("PNG"),
    "rgb.bmp": _rgb_formats("BMP"),
    "rgb.tiff": _rgb_formats("TIFF"),
    "rgb.webp": _rgb_formats("WEBP"),
    "gray.png": _gray_png,
    "rgba.png": _rgba_png,
    "la.png": _la_png,
    "palette.png": _palette_png,
    "bilevel.png": _bilevel_png,
    "gray16.png": _gray16_png,
    "rgb16.png": _rgb16_png,
    "rgba16.png": _rgba16_png,
    "gray16.tiff": _gray16_tiff,
    "gray16.pgm": _gray16_pgm,
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_both_readers_give_the_expected_pixels(tmp_path: Path, name: str) -> None:
    expected = FORMATS[name](tmp_path / name)
    np.testing.assert_array_equal(_both(tmp_path / name), expected)
    np.testing.assert_array_equal(_both((tmp_path / name).read_bytes()), expected)  # bytes, as the cache passes


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_modes_agree(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.jpg"
    Image.fromarray(RGB).convert(mode).save(path, quality=95)
    result = _both(path)
    if mode == "CMYK":  # the independent formula of CMYK -> RGB on the stored (decoded) CMYK values
        with Image.open(path) as img:
            cmyk = np.asarray(img).astype(int)
        expected = (255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255
        assert np.abs(result - expected).max() <= 2
    else:
        np.testing.assert_array_equal(result, _stored_rgb(path))


def test_jpeg_with_bytes_after_its_end_and_truncated_jpeg(tmp_path: Path) -> None:
    """Bytes after the end marker (some cameras append data) are ignored; a cut file is an error, not grey rows."""
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format="JPEG", quality=95)
    (tmp_path / "intact.jpg").write_bytes(buffer.getvalue())
    (tmp_path / "tail.jpg").write_bytes(buffer.getvalue() + b"camera data")
    np.testing.assert_array_equal(_both(tmp_path / "tail.jpg"), _both(tmp_path / "intact.jpg"))
    assert imread_cv2(tmp_path / "tail.jpg").flags.writeable and imread_cv2(tmp_path / "intact.jpg").flags.writeable


def test_flat_16_bit_grey_stays_grey(tmp_path: Path) -> None:
    """OML: the OpenCV path stretched each image's own range (black), the Pillow path clipped it (white)."""
    cv2.imwrite(str(tmp_path / "grey16.png"), np.full((4, 4), 0x8080, dtype=np.uint16))
    cv2.imwrite(str(tmp_path / "two16.png"), np.array([[0x1000, 0x2000]], dtype=np.uint16))
    assert (_both(tmp_path / "grey16.png") == 0x80).all()
    # scaled by the bit depth, not per image: a dark image stays dark
    assert _both(tmp_path / "two16.png")[0, :, 0].tolist() == [0x10, 0x20]


# where the pixel stored at the top-left ends up for each EXIF orientation, as numpy operations
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("fmt", ["jpg", "png"])
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path: Path, fmt: str, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.{fmt}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(RGB).save(path, exif=exif.tobytes(), **({"quality": 95} if fmt == "jpg" else {}))
    np.testing.assert_array_equal(_both(path), ORIENTATIONS[orientation](_stored_rgb(path)))
    if orientation in (5, 6, 7, 8):
        assert _both(path).shape[:2] == (W, H)


def test_float_image_is_refused_with_the_reason(tmp_path: Path) -> None:
    Image.fromarray(RNG.random((H, W)).astype(np.float32), mode="F").save(tmp_path / "depth.tiff")
    for reader in (imread_cv2, imread_pillow):
        with pytest.raises(ImageReadError, match=r"depth\.tiff: its pixels are floats .*no standard range"):
            reader(tmp_path / "depth.tiff")


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format="JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


BROKEN = {
    "empty.jpg": (b"", r"empty.jpg is empty \(0 bytes\)"),
    "text.jpg": (b"not an image at all", r"text.jpg: the file is broken or not an image"),
    "cut.jpg": (_truncated_jpeg(), r"cut.jpg: the file is broken or not an image \(Truncated"),
}


@pytest.mark.parametrize("reader", [imread_cv2, imread_pillow])
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_name_the_file(tmp_path: Path, reader, name: str) -> None:
    """OML: a zero-byte file gave a raw cv2.error naming no file."""
    content, message = BROKEN[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        reader(tmp_path / name)
    with pytest.raises(ImageReadError, match="missing.png"):
        reader(tmp_path / "missing.png")
