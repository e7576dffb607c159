from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from oml.utils.images.images import (
    ImageReadError,
    draw_bbox,
    find_broken_images,
    imread_cv2,
    imread_pillow,
    square_pad,
)
from oml.utils.images.images_resize import (
    inverse_karesize_bboxes,
    inverse_karesize_image,
    karesize_bboxes,
    karesize_image,
)

RGB = np.zeros((6, 8, 3), dtype=np.uint8)
RGB[..., 0] = 200  # red
RGB[:, :4, 2] = 100  # some blue on the left


# JPEG has no alpha channel, so RGBA is tested with PNG only
@pytest.mark.parametrize("fmt, mode", [("png", "L"), ("png", "RGB"), ("png", "RGBA"), ("jpg", "L"), ("jpg", "RGB")])
@pytest.mark.parametrize("reader", [imread_cv2, imread_pillow])
def test_readers_return_rgb(tmp_path: Path, fmt: str, mode: str, reader) -> None:
    image = Image.fromarray(RGB).convert(mode)
    path = tmp_path / f"img.{fmt}"
    image.save(path)
    with Image.open(path) as saved:  # what the file holds (JPEG is lossy)
        expected = np.asarray(saved.convert("RGB"))
    for source in (path, str(path), path.read_bytes()):
        result = np.asarray(reader(source))
        assert result.shape == (6, 8, 3) and result.dtype == np.uint8
        tolerance = 0 if fmt == "png" else 8  # two JPEG decoders may differ slightly
        assert np.abs(result.astype(int) - expected.astype(int)).max() <= tolerance


@pytest.mark.parametrize("reader", [imread_cv2, imread_pillow])
def test_missing_and_broken_images_name_the_path(tmp_path: Path, reader) -> None:
    with pytest.raises(ImageReadError, match="missing.jpg"):
        reader(tmp_path / "missing.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        reader(tmp_path / "broken.jpg")


def test_find_broken_images(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(RGB).save(good)
    (tmp_path / "bad.png").write_bytes(b"xx")
    assert find_broken_images([good, tmp_path / "bad.png", tmp_path / "none.png"], imread_cv2, 2) == [
        tmp_path / "bad.png",
        tmp_path / "none.png",
    ]


def test_draw_bbox_and_square_pad() -> None:
    canvas = np.zeros((40, 60, 3), dtype=np.uint8)
    boxed = draw_bbox(canvas, (10, 5, 30, 20), (0, 255, 0))
    assert boxed[5, 20].tolist() == [0, 255, 0] and boxed[12, 20].tolist() == [0, 0, 0]
    assert canvas.sum() == 0  # the input is not changed
    framed = draw_bbox(canvas, (np.nan,) * 4, (255, 0, 0))
    assert framed[0, 0].tolist() == [255, 0, 0]
    padded = square_pad(canvas)
    assert padded.shape == (60, 60, 3) and padded[0, 0].tolist() == [255, 255, 255] and padded[30, 30].sum() == 0


def test_karesize_round_trip() -> None:
    image = cv2.resize(np.arange(30 * 50 * 3, dtype=np.uint8).reshape(30, 50, 3), (50, 30))
    resized = karesize_image(image, 64)
    assert resized.shape == (64, 64, 3) and resized[0, 0].tolist() == [255, 255, 255]
    restored = inverse_karesize_image(resized, (30, 50))
    assert restored.shape == image.shape
    boxes = np.array([[0, 0, 50, 30], [10, 5, 20, 25]], dtype=float)
    mapped = karesize_bboxes(boxes, (30, 50), 64)
    assert mapped[0, 0] == 0 and mapped[0, 2] == 64 and 0 < mapped[0, 1] < mapped[0, 3] < 64
    np.testing.assert_allclose(inverse_karesize_bboxes(mapped, (30, 50), 64), boxes, atol=1e-9)
