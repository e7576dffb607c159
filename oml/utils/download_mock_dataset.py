"""The built-in "figures" mock dataset, generated locally (no network), byte-for-byte reproducible.

Pictures of geometric figures (circle, square, triangle, cross, star, hexagon) in four colours, of
random size, rotation and position on a noisy 96 x 96 canvas. A label is an entity drawn as one
(figure, colour) pair: 12 labels for training and 12 other labels for validation, 6 images each.
The validation entities look like the training ones (the same 12 figure-colour pairs, new
drawings), so that a few minutes of training on a CPU show a clear gain; every validation image is
both a query and a gallery item. Files:

- ``images/<figure>_<n>.jpg`` (e.g. ``images/circle_1.jpg``),
- ``df.csv`` (the obligatory columns), ``df_with_bboxes.csv`` (+ ``x_1, x_2, y_1, y_2`` around the
  figure; a few rows left empty, meaning the whole image), ``df_with_category.csv`` (+ ``category`` =
  the figure).

OML 0.4.4 downloaded this folder from its file server or Google Drive; we draw it instead, so tests
and demos run offline. The content is a pure function of the code and of the installed Pillow (its
JPEG encoder): the expected md5 of every file is computed by drawing the dataset in memory, and
missing or corrupted files are rewritten.

CLI: ``python -m oml.utils.download_mock_dataset --dataset_root DIR``.
"""

import argparse
import hashlib
import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from oml.const import MOCK_DATASET_PATH
from oml.utils.io import write_bytes_atomic

FIGURES = ("circle", "square", "triangle", "cross", "star", "hexagon")
PALETTE: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "orange": (240, 150, 20),
}
N_IMAGES_PER_LABEL = 6
CANVAS = 96
_SUPERSAMPLE = 2
_SEED = 2023
_BBOX_EMPTY_EVERY = 9  # every 9th row of df_with_bboxes.csv has no box (= the whole image)


def _figure_polygon(figure: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    def rotate(points: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    def regular(n: int, radius: float, phase: float = 0.0) -> List[Tuple[float, float]]:
        return [
            (radius * math.cos(phase + 2 * math.pi * i / n), radius * math.sin(phase + 2 * math.pi * i / n))
            for i in range(n)
        ]

    if figure == "circle":
        return rotate(regular(64, r))
    if figure == "square":
        return rotate(regular(4, r, math.pi / 4))
    if figure == "triangle":
        return rotate(regular(3, r, -math.pi / 2))
    if figure == "hexagon":
        return rotate(regular(6, r))
    if figure == "star":
        outer, inner = regular(5, r, -math.pi / 2), regular(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return rotate([p for pair in zip(outer, inner) for p in pair])
    if figure == "cross":
        a, b = r, r * 0.33
        return rotate(
            [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        )
    raise ValueError(f"Unknown figure {figure!r}; expected one of {FIGURES}.")


def _draw(
    figure: str, colour: Tuple[int, int, int], rng: np.random.RandomState
) -> Tuple[bytes, Tuple[int, int, int, int]]:
    """One JPEG image and the integer box (x1, y1, x2, y2) of the figure on it."""
    radius = rng.uniform(12, 30)
    angle = rng.uniform(0, 2 * math.pi)
    cx = rng.uniform(radius + 2, CANVAS - radius - 2)
    cy = rng.uniform(radius + 2, CANVAS - radius - 2)
    jitter = rng.randint(-25, 26, size=3)
    fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
    background = (235 + rng.randint(-12, 13, size=(CANVAS, CANVAS, 3))).clip(0, 255).astype(np.uint8)

    s = _SUPERSAMPLE
    img = Image.fromarray(background).resize((CANVAS * s, CANVAS * s), Image.NEAREST)
    polygon = _figure_polygon(figure, cx * s, cy * s, radius * s, angle)
    ImageDraw.Draw(img).polygon(polygon, fill=fill)
    img = img.resize((CANVAS, CANVAS), Image.LANCZOS)

    xs, ys = [p[0] / s for p in polygon], [p[1] / s for p in polygon]
    bbox = (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(CANVAS, math.ceil(max(xs))),
        min(CANVAS, math.ceil(max(ys))),
    )
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), bbox


@lru_cache(maxsize=1)
def _generate() -> Dict[str, bytes]:
    """All files of the dataset (relative posix path -> content), drawn in memory."""
    rng = np.random.RandomState(_SEED)
    colours = list(PALETTE)
    files: Dict[str, bytes] = {}
    rows = []
    label = 0
    n_per_figure = dict.fromkeys(FIGURES, 0)
    for split in ("train", "validation"):
        for f_idx, figure in enumerate(FIGURES):
            for offset in (0, 1):  # two colours per figure
                colour = colours[(f_idx + offset) % len(colours)]
                for _ in range(N_IMAGES_PER_LABEL):
                    n_per_figure[figure] += 1
                    path = f"images/{figure}_{n_per_figure[figure]}.jpg"
                    files[path], (x1, y1, x2, y2) = _draw(figure, PALETTE[colour], rng)
                    is_val = split == "validation"
                    rows.append(
                        {
                            "label": label,
                            "path": path,
                            "split": split,
                            "is_query": True if is_val else None,
                            "is_gallery": True if is_val else None,
                            "x_1": x1,
                            "x_2": x2,
                            "y_1": y1,
                            "y_2": y2,
                            "category": figure,
                        }
                    )
                label += 1

    df = pd.DataFrame(rows)
    obligatory = ["label", "path", "split", "is_query", "is_gallery"]
    df_bboxes = df[obligatory + ["x_1", "x_2", "y_1", "y_2"]].astype(
        dict.fromkeys(("x_1", "x_2", "y_1", "y_2"), "Int64")
    )
    df_bboxes.loc[df_bboxes.index % _BBOX_EMPTY_EVERY == _BBOX_EMPTY_EVERY - 1, ["x_1", "x_2", "y_1", "y_2"]] = pd.NA
    files["df.csv"] = df[obligatory].to_csv(index=False).encode()
    files["df_with_bboxes.csv"] = df_bboxes.to_csv(index=False).encode()
    files["df_with_category.csv"] = df[obligatory + ["category"]].to_csv(index=False).encode()
    return files


def get_mock_dataset_md5() -> str:
    """Folder md5 (as ``oml.utils.io.calc_folder_hash`` computes it) of a freshly generated mock dataset."""
    files = _generate()
    md5 = hashlib.md5()
    for name in sorted(files):
        md5.update(name.encode())
    for name in sorted(files):
        md5.update(hashlib.md5(files[name]).hexdigest().encode())
    return md5.hexdigest()


def download_mock_dataset(
    dataset_root: Union[str, Path] = MOCK_DATASET_PATH, check_md5: bool = True
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Make sure the mock dataset is in ``dataset_root`` and return its ``(df_train, df_val)``.

    Files that are missing are written; with ``check_md5`` every file is also compared with its
    expected content and rewritten if it differs (other files in the folder are left alone).
    ``df_val`` has boolean ``is_query`` and ``is_gallery`` columns.

    >>> import tempfile
    >>> df_train, df_val = download_mock_dataset(tempfile.mkdtemp())
    >>> df_train["label"].nunique(), df_val["label"].nunique(), bool(df_val["is_query"].all())
    (12, 12, True)
    """
    root = Path(dataset_root)
    for name, content in _generate().items():
        path = root / name
        if not path.is_file() or (
            check_md5 and hashlib.md5(path.read_bytes()).digest() != hashlib.md5(content).digest()
        ):
            write_bytes_atomic(path, content)

    df = pd.read_csv(root / "df.csv")
    df_train = df[df["split"] == "train"].reset_index(drop=True)
    df_val = df[df["split"] == "validation"].reset_index(drop=True)
    df_val["is_query"] = df_val["is_query"].astype(bool)
    df_val["is_gallery"] = df_val["is_gallery"].astype(bool)
    return df_train, df_val


def get_argparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Generate the oml mock dataset (geometric figures) locally.")
    parser.add_argument("--dataset_root", type=Path, default=MOCK_DATASET_PATH, help="output folder")
    parser.add_argument("--no_check_md5", action="store_true", help="only write missing files")
    return parser


def main() -> None:
    args = get_argparser().parse_args()
    df_train, df_val = download_mock_dataset(args.dataset_root, check_md5=not args.no_check_md5)
    print(
        f"Mock dataset is ready in {args.dataset_root}: {len(df_train)} train images "
        f"({df_train['label'].nunique()} labels), {len(df_val)} validation images ({df_val['label'].nunique()} labels)."
    )


if __name__ == "__main__":
    main()


__all__ = ["download_mock_dataset", "get_mock_dataset_md5", "get_argparser", "main", "FIGURES", "PALETTE"]
