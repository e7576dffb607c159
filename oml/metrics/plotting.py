"""Figures of retrieval results: one row per query (query, retrieved items, ground-truth items)."""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from matplotlib.figure import Figure

from oml.const import BLUE, GRAY, GREEN, PAD_COLOR, RED
from oml.utils.images.images import draw_bbox, imread_cv2, square_pad

TPath = Union[str, Path]
TBox = Optional[Sequence[float]]
TItem = Tuple[TPath, TBox]  # an image path and its bbox (x1, y1, x2, y2) or None
TRetrieved = Tuple[TPath, TBox, bool, float]  # + is it correct, distance

IMAGE_SIZE = 128
GAP = 14


def _image(path: TPath, bbox: TBox, color: Tuple[int, int, int]) -> np.ndarray:
    img = draw_bbox(imread_cv2(path), bbox, color)
    return cv2.resize(square_pad(img), (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def plot_retrieval_rows(
    queries: Sequence[TItem],
    retrieved: Sequence[Sequence[TRetrieved]],
    ground_truth: Sequence[Sequence[TItem]],
    n_instances: int,
    n_gt: int,
) -> Figure:
    """One row per query: the query (blue frame), its ``n_instances`` nearest galleries (green if correct, red
    otherwise, distance in the title) and up to ``n_gt`` ground-truth galleries (gray).

    The images are composed into one mosaic drawn on a single axes (fast, unlike a grid of subplots). The figure
    is a ``matplotlib.figure.Figure`` not registered in pyplot: nothing to close.
    """
    if not (len(queries) == len(retrieved) == len(ground_truth)):
        raise ValueError("queries, retrieved and ground_truth must have the same length.")
    n_rows, n_cols = max(1, len(queries)), 1 + n_instances + n_gt
    cell = IMAGE_SIZE + GAP
    mosaic = np.full((n_rows * cell, n_cols * cell, 3), PAD_COLOR, dtype=np.uint8)
    titles: List[Tuple[int, int, str]] = []

    def put(row: int, col: int, img: np.ndarray, title: str) -> None:
        top, left = row * cell + GAP, col * cell + GAP // 2
        mosaic[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE] = img
        titles.append((row, col, title))

    for row, (query, items, gts) in enumerate(zip(queries, retrieved, ground_truth)):
        put(row, 0, _image(query[0], query[1], BLUE), "query")
        for col, (path, bbox, correct, dist) in enumerate(items[:n_instances], start=1):
            put(row, col, _image(path, bbox, GREEN if correct else RED), f"{dist:.3f}")
        for col, (path, bbox) in enumerate(gts[:n_gt], start=1 + n_instances):
            put(row, col, _image(path, bbox, GRAY), "GT")

    fig = Figure(figsize=(1.3 * n_cols, 1.4 * n_rows))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic)
    ax.axis("off")
    for row, col, title in titles:
        ax.text(col * cell + GAP // 2 + IMAGE_SIZE / 2, row * cell + GAP, title, ha="center", va="bottom", fontsize=7)
    return fig


__all__ = ["plot_retrieval_rows"]
