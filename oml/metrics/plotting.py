"""Figures of retrieval results: one row per query (query, retrieved items, ground-truth items)."""

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from matplotlib.figure import Figure

from oml.const import BLUE, GRAY, GREEN, RED
from oml.utils.images.images import draw_bbox, imread_cv2, square_pad

TPath = Union[str, Path]
TBox = Optional[Sequence[float]]
TItem = Tuple[TPath, TBox]  # an image path and its bbox (x1, y1, x2, y2) or None
TRetrieved = Tuple[TPath, TBox, bool, float]  # + is it correct, distance

IMAGE_SIZE = 160


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

    The figure is a ``matplotlib.figure.Figure`` not registered in pyplot (nothing to close).
    """
    if not (len(queries) == len(retrieved) == len(ground_truth)):
        raise ValueError("queries, retrieved and ground_truth must have the same length.")
    n_rows, n_cols = max(1, len(queries)), 1 + n_instances + n_gt
    fig = Figure(figsize=(2 * n_cols, 2.2 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (query, items, gts) in enumerate(zip(queries, retrieved, ground_truth)):
        axes[row, 0].imshow(_image(query[0], query[1], BLUE))
        axes[row, 0].set_title("Query", fontsize=8)
        for col, (path, bbox, correct, dist) in enumerate(items[:n_instances], start=1):
            axes[row, col].imshow(_image(path, bbox, GREEN if correct else RED))
            axes[row, col].set_title(f"{dist:.3f}", fontsize=8)
        for col, (path, bbox) in enumerate(gts[:n_gt], start=1 + n_instances):
            axes[row, col].imshow(_image(path, bbox, GRAY))
            axes[row, col].set_title("GT", fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["plot_retrieval_rows"]
