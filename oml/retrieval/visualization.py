"""Viewers of search results: a PNG mosaic (matplotlib) and a self-contained HTML page.

Each row shows a query and its retrieved gallery images; with labels, correct results are framed green
and wrong ones red (gray without labels), and the distance is written under each image.
"""

import base64
import html
import io
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from matplotlib.figure import Figure
from PIL import Image, ImageOps

from oml.metrics.plotting import plot_retrieval_rows
from oml.metrics.retrieval_results import RetrievalResults
from oml.retrieval.index import SearchResult

TPath = Union[str, Path]


def _check(result: SearchResult, query_paths: Sequence[TPath], query_labels: Optional[Sequence[Any]]) -> None:
    if len(query_paths) != len(result):
        raise ValueError(f"Got {len(query_paths)} query paths for {len(result)} queries in the result.")
    if query_labels is not None and len(query_labels) != len(result):
        raise ValueError(f"Got {len(query_labels)} query labels for {len(result)} queries in the result.")


def _result_paths(result: SearchResult, gallery_paths: Optional[Sequence[TPath]]) -> List[List[Any]]:
    """The image of every result (None where there is no match): from ``gallery_paths`` or the results' ids
    (which a ``ShardedSearchIndex`` gathers with its results)."""
    if gallery_paths is None:
        return result.ids
    if len(gallery_paths) != len(result.index):
        raise ValueError(f"Got {len(gallery_paths)} gallery paths for an index of {len(result.index)} items.")
    return [[gallery_paths[i] if i >= 0 else None for i in row] for row in result.indices.tolist()]


def plot_search_results(
    result: SearchResult,
    query_paths: Sequence[TPath],
    query_labels: Sequence[Any],
    gallery_paths: Optional[Sequence[TPath]] = None,
    n_instances: Optional[int] = None,
) -> Figure:
    """A figure with one row per query: the query (blue) and its results (green: same label, red: another).

    Args:
        result: ``SearchIndex.search`` output (its index needs labels).
        query_paths: image of every query.
        query_labels: label of every query.
        gallery_paths: image of every gallery item (default: the index ids, e.g. from ``SearchIndex.from_images``).
        n_instances: results per row (default: all).

    Save it with ``fig.savefig("results.png")``.
    """
    _check(result, query_paths, query_labels)
    labels = result.labels
    if labels is None:
        raise ValueError("plot_search_results marks correct results by labels: the index has none.")
    paths = _result_paths(result, gallery_paths)
    n_instances = result.indices.shape[1] if n_instances is None else n_instances
    retrieved = []
    for row, query_label in enumerate(query_labels):
        items = []
        for i, d, path, label in zip(
            result.indices[row].tolist(), result.distances[row].tolist(), paths[row], labels[row]
        ):
            if i >= 0:
                items.append((path, None, label == query_label, d))
        retrieved.append(items)
    queries = [(p, None) for p in query_paths]
    return plot_retrieval_rows(queries, retrieved, [[] for _ in queries], n_instances=n_instances, n_gt=0)


def _thumbnail(path: TPath, size: int) -> str:
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((size, size))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


#: one row of a page: the query's image and caption, then its results as (image or None, frame colour, caption)
THtmlRow = Tuple[TPath, str, List[Tuple[Optional[TPath], str, str]]]
QUERY_COLOR, GREEN, RED, GRAY = "#1f4fd6", "#1e9e3a", "#d62828", "#999999"


def rows_to_html(rows: Sequence[THtmlRow], thumbnail_size: int = 128, title: str = "Search results") -> str:
    """A self-contained HTML page (thumbnails embedded as base64) with one row per query."""
    cache: dict = {}

    def img(path: TPath, color: str, caption: str) -> str:
        key = str(path)
        if key not in cache:
            cache[key] = _thumbnail(path, thumbnail_size)
        return (
            f'<figure style="border:4px solid {color}"><img src="{cache[key]}" alt="{html.escape(key)}" '
            f'title="{html.escape(key)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )

    blocks: List[str] = []
    for query_path, query_caption, results in rows:
        cells = [img(query_path, QUERY_COLOR, query_caption)]
        for path, color, caption in results:
            if path is None:
                cells.append(f'<figure class="empty"><figcaption>{html.escape(caption)}</figcaption></figure>')
            else:
                cells.append(img(path, color, caption))
        blocks.append('<div class="row">' + "".join(cells) + "</div>")
    style = (
        "body{font-family:sans-serif}.row{display:flex;gap:6px;margin:8px 0}"
        f"figure{{margin:0;padding:2px;width:{thumbnail_size}px;text-align:center}}"
        "figure img{max-width:100%}figcaption{font-size:11px;word-break:break-all}"
        f".empty{{border:4px dashed #ccc;height:{thumbnail_size}px}}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>{''.join(blocks)}</body></html>"
    )


def search_results_to_html(
    result: SearchResult,
    query_paths: Sequence[TPath],
    query_labels: Optional[Sequence[Any]] = None,
    gallery_paths: Optional[Sequence[TPath]] = None,
    thumbnail_size: int = 128,
    title: str = "Search results",
) -> str:
    """A self-contained HTML page (thumbnails embedded as base64) with one row per query.

    Results are framed green / red when ``query_labels`` are given and the index has labels, gray otherwise;
    "no match" results (after ``apply_threshold``) are shown as an empty cell.
    """
    _check(result, query_paths, query_labels)
    paths = _result_paths(result, gallery_paths)
    labels = result.labels
    rows: List[THtmlRow] = []
    for row, query_path in enumerate(query_paths):
        query_label = query_labels[row] if query_labels is not None else None
        results: List[Tuple[Optional[TPath], str, str]] = []
        for column, (i, d) in enumerate(zip(result.indices[row].tolist(), result.distances[row].tolist())):
            if i < 0:
                results.append((None, GRAY, "no match"))
                continue
            label = None if labels is None else labels[row][column]
            color = GRAY if labels is None or query_labels is None else (GREEN if label == query_label else RED)
            extra = "" if labels is None else f" ({label})"
            results.append((paths[row][column], color, f"{d:.3f}{extra}"))
        rows.append((query_path, "query" if query_label is None else f"query ({query_label})", results))
    return rows_to_html(rows, thumbnail_size, title)


def retrieval_results_to_html(
    results: RetrievalResults,
    query_paths: Sequence[TPath],
    gallery_paths: Sequence[TPath],
    query_positions: Optional[Sequence[int]] = None,
    n_instances: int = 5,
    thumbnail_size: int = 128,
    title: str = "Retrieval results",
) -> str:
    """The page of ``search_results_to_html`` for evaluation results (``RetrievalResults``): each chosen query
    with its first ``n_instances`` results, framed green when relevant and red otherwise."""
    if len(query_paths) != len(results) or len(gallery_paths) != results.n_galleries:
        raise ValueError(
            f"Expected {len(results)} query paths and {results.n_galleries} gallery paths, "
            f"got {len(query_paths)} and {len(gallery_paths)}."
        )
    positions = range(len(results)) if query_positions is None else query_positions
    rows: List[THtmlRow] = []
    for q in positions:
        width = min(n_instances, results.retrieved.shape[1])
        cells = [
            (gallery_paths[int(g)], GREEN if bool(hit) else RED, f"{float(d):.3f}")
            for g, hit, d in zip(results.retrieved[q, :width], results.gt_tops[q, :width], results.distances[q, :width])
        ]
        rows.append((query_paths[q], f"query {q}", cells))
    return rows_to_html(rows, thumbnail_size, title)


def save_search_results_html(result: SearchResult, query_paths: Sequence[TPath], path: TPath, **kwargs: Any) -> Path:
    """Write ``search_results_to_html(result, query_paths, **kwargs)`` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(search_results_to_html(result, query_paths, **kwargs), encoding="utf-8")
    return path


__all__ = [
    "plot_search_results",
    "retrieval_results_to_html",
    "rows_to_html",
    "save_search_results_html",
    "search_results_to_html",
]
