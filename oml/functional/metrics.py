"""Retrieval and topological metrics (the exact definitions of OML 0.4.4), dense and scalable variants.

The dense functions (``calc_retrieval_metrics``, ``calc_distance_matrix``, ``calc_gt_mask``, ...) keep the
OML API and build ``[Q, G]`` matrices. ``EmbeddingMetrics`` does not: it finds the exact top-k with
``oml.functional.knn.exact_knn`` and calls ``calc_retrieval_metrics_on_topk`` on the per-query top-k
relevance and the per-query number of relevant galleries; FNMR@FMR is computed in bounded memory by
``calc_fnmr_at_fmr_by_embeddings``. Ties in distances are broken by the smaller gallery index everywhere,
so the dense and the scalable paths give identical results.
"""

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from oml.functional.distances import exact_cdist
from oml.functional.knn import MAX_TILE_WIDTH, QueryGalleryDistances
from oml.functional.ordering import topk_stable
from oml.utils.checks import check_in_range, check_ints
from oml.utils.labels import encode_labels
from oml.utils.misc_torch import PCA, elementwise_dist

TMetricsDict = Dict[str, Dict[Union[int, float], Union[float, Tensor]]]


# --------------------------------------------------------------------------------------------- checks
def _to_tensor(array: Union[np.ndarray, Tensor, Sequence[Any]]) -> Tensor:
    """Convert a numpy array / sequence to a tensor (tensors are returned as they are)."""
    if isinstance(array, Tensor):
        return array
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return torch.tensor(array)


def _clip_max_with_warning(arr: Sequence[int], max_el: int) -> Tuple[int, ...]:
    """Clip every k to ``max_el`` (the gallery size), warning when something is clipped."""
    if any(a > max_el for a in arr):
        warnings.warn(
            f"Some of the values in {tuple(arr)} are larger than the number of gallery items ({max_el}); "
            f"they are clipped to {max_el}. The results are still keyed by the values you asked for.",
            stacklevel=3,
        )
    return tuple(min(a, max_el) for a in arr)


def _check_gt_tops(gt_tops: Tensor, top_k: Sequence[int]) -> Tuple[Tensor, Tuple[int, ...]]:
    """The relevance as bool and the values of k clipped to its width (OML 0.4.4 clips with a warning)."""
    if gt_tops.ndim != 2:
        raise ValueError(f"gt_tops must be a [Q, K] matrix, got shape {tuple(gt_tops.shape)}.")
    top_k = check_ints(top_k, "top_k", allow_empty=True)
    return gt_tops.bool(), _clip_max_with_warning(top_k, gt_tops.shape[1])


def _check_n_gt(n_gt: Tensor, n_queries: int) -> Tensor:
    n_gt = _to_tensor(n_gt)
    if n_gt.shape != (n_queries,):
        raise ValueError(f"n_gt must have shape ({n_queries},), got {tuple(n_gt.shape)}.")
    empty = (n_gt <= 0).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"{len(empty)} of {n_queries} queries have no relevant gallery items (e.g. query rows "
            f"{empty[:10].tolist()}); precision is undefined for them. Remove such queries from the query set."
        )
    return n_gt


# --------------------------------------------------------------------------------------------- per-k metrics
def calc_cmc(gt_tops: Tensor, top_k: Tuple[int, ...]) -> List[Tensor]:
    """CMC@k per query: 1 if a relevant item is among the first k retrieved, else 0.

    Args:
        gt_tops: ``[Q, K]`` relevance of the retrieved items, ordered by distance.
        top_k: the values of k; values above ``K`` are clipped to ``K`` with a warning (as OML 0.4.4 does).

    >>> gt_tops = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    >>> calc_cmc(gt_tops, (1, 2))
    [tensor([0., 0., 1.]), tensor([1., 0., 1.])]
    """
    gt_tops, top_k = _check_gt_tops(gt_tops, top_k)
    return [gt_tops[:, :k].any(dim=1).float() for k in top_k]


def calc_precision(gt_tops: Tensor, n_gt: Tensor, top_k: Tuple[int, ...]) -> List[Tensor]:
    """Precision@k per query: relevant among the first k divided by ``min(k, n_gt)`` (OML's definition).

    A query with fewer than k relevant items is not penalised for it. ``n_gt`` must be positive.

    >>> gt_tops = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    >>> calc_precision(gt_tops, n_gt=torch.tensor([2, 5]), top_k=(1, 3))
    [tensor([1., 0.]), tensor([1.0000, 0.3333])]
    """
    gt_tops, top_k = _check_gt_tops(gt_tops, top_k)
    n_gt = _check_n_gt(n_gt, gt_tops.shape[0])
    cumulative = gt_tops.float().cumsum(dim=1)
    return [cumulative[:, k - 1] / torch.clamp(n_gt, max=k).float() for k in top_k]


def calc_map(gt_tops: Tensor, n_gt: Optional[Tensor], top_k: Tuple[int, ...]) -> List[Tensor]:
    """MAP@k per query: ``(1 / n_k) sum_{j <= k} (n_j / j) rel_j``, ``n_k`` = relevant items among the first k.

    Normalised by the number of hits within the top k (OML's definition; 0 if there are none).
    ``n_gt`` is accepted for API compatibility and not used by the formula.

    >>> gt_tops = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    >>> calc_map(gt_tops, n_gt=None, top_k=(3,))
    [tensor([0.8333, 0.5000, 0.0000])]
    """
    gt_tops, top_k = _check_gt_tops(gt_tops, top_k)
    relevance = gt_tops.float()
    positions = torch.arange(1, gt_tops.shape[1] + 1, dtype=torch.float32)
    precision_at_j = relevance.cumsum(dim=1) / positions
    result = []
    for k in top_k:
        hits = relevance[:, :k].sum(dim=1)
        total = (precision_at_j[:, :k] * relevance[:, :k]).sum(dim=1)
        result.append(torch.where(hits > 0, total / hits.clamp_min(1), torch.zeros_like(total)))
    return result


def calc_retrieval_metrics_on_topk(
    gt_tops: Tensor,
    n_gt: Tensor,
    cmc_top_k: Tuple[int, ...] = (5,),
    precision_top_k: Tuple[int, ...] = (5,),
    map_top_k: Tuple[int, ...] = (5,),
    n_galleries: Optional[int] = None,
    reduce: bool = True,
) -> TMetricsDict:
    """CMC, precision and MAP from the per-query top-k relevance (no distance matrix needed).

    Args:
        gt_tops: ``[Q, K]`` relevance of each query's retrieved items ordered by distance, where
            ``K >= min(max(all k), n_galleries)``.
        n_gt: ``[Q]`` number of relevant gallery items of each query (all > 0).
        cmc_top_k: values of k for CMC@k.
        precision_top_k: values of k for precision@k.
        map_top_k: values of k for MAP@k.
        n_galleries: the gallery size; larger k are clipped to it with a warning (default ``K``).
        reduce: average over the queries (else ``[Q]`` tensors).

    Returns:
        ``{"cmc": {k: v}, "precision": {k: v}, "map": {k: v}}`` (only the metrics with values of k),
        keyed by the k that were asked for.

    >>> gt_tops = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    >>> calc_retrieval_metrics_on_topk(gt_tops, torch.tensor([2, 1]), (1,), (2,), (3,))
    {'cmc': {1: tensor(0.5000)}, 'precision': {2: tensor(0.7500)}, 'map': {3: tensor(0.6667)}}
    """
    for name, top_k in (("cmc_top_k", cmc_top_k), ("precision_top_k", precision_top_k), ("map_top_k", map_top_k)):
        check_ints(top_k, name, allow_empty=True)
    n_galleries = gt_tops.shape[1] if n_galleries is None else n_galleries
    metrics: TMetricsDict = {}
    for name, top_k in (("cmc", cmc_top_k), ("precision", precision_top_k), ("map", map_top_k)):
        if not top_k:
            continue
        clipped = _clip_max_with_warning(top_k, n_galleries)
        if name == "cmc":
            values = calc_cmc(gt_tops, clipped)
        elif name == "precision":
            values = calc_precision(gt_tops, n_gt, clipped)
        else:
            values = calc_map(gt_tops, n_gt, clipped)
        metrics[name] = {k: (v.mean() if reduce else v) for k, v in zip(top_k, values)}
    return metrics


# --------------------------------------------------------------------------------------------- dense (OML API)
def _select(mask: Union[Tensor, np.ndarray, Sequence[Any]], name: str, n: int) -> Tensor:
    mask = _to_tensor(mask)
    if mask.ndim != 1 or len(mask) != n:
        raise ValueError(f"{name} must be a vector of length {n}, got shape {tuple(mask.shape)}.")
    if mask.dtype != torch.bool:
        if not torch.isin(mask, torch.tensor([0, 1], dtype=mask.dtype)).all():
            raise ValueError(f"{name} must contain only 0/1 or bool values.")
        mask = mask.bool()
    return mask


def calc_distance_matrix(embeddings: Tensor, is_query: Tensor, is_gallery: Tensor) -> Tensor:
    """Dense ``[Q, G]`` Euclidean distances between the query rows and the gallery rows (O(QG) memory).

    >>> emb = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    >>> calc_distance_matrix(emb, torch.tensor([1, 1, 0]), torch.tensor([0, 1, 1]))
    tensor([[5.0000, 1.0000],
            [0.0000, 4.2426]])
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a [N, D] matrix, got shape {tuple(embeddings.shape)}.")
    is_query = _select(is_query, "is_query", len(embeddings))
    is_gallery = _select(is_gallery, "is_gallery", len(embeddings))
    queries, galleries = embeddings[is_query], embeddings[is_gallery]
    if len(queries) == 0 or len(galleries) == 0:
        raise ValueError(f"Empty query ({len(queries)}) or gallery ({len(galleries)}) set.")
    return exact_cdist(queries, galleries)


def calc_gt_mask(
    labels: Union[np.ndarray, Tensor], is_query: Union[np.ndarray, Tensor], is_gallery: Union[np.ndarray, Tensor]
) -> Tensor:
    """Dense bool ``[Q, G]``: whether a query and a gallery item have the same label.

    >>> calc_gt_mask(torch.tensor([0, 1, 0]), torch.tensor([1, 1, 0]), torch.tensor([1, 1, 1]))
    tensor([[ True, False,  True],
            [False,  True, False]])
    """
    labels = _to_tensor(labels)
    is_query = _select(is_query, "is_query", len(labels))
    is_gallery = _select(is_gallery, "is_gallery", len(labels))
    return labels[is_query][:, None] == labels[is_gallery][None, :]


def calc_mask_to_ignore(is_query: Union[np.ndarray, Tensor], is_gallery: Union[np.ndarray, Tensor]) -> Tensor:
    """Dense bool ``[Q, G]``: True where the query and the gallery item are the same sample (dataset row).

    >>> calc_mask_to_ignore(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 1]))
    tensor([[False, False],
            [ True, False]])
    """
    is_query = _to_tensor(is_query)
    is_query = _select(is_query, "is_query", len(is_query))
    is_gallery = _select(is_gallery, "is_gallery", len(is_query))
    ids = torch.arange(len(is_query))
    return ids[is_query][:, None] == ids[is_gallery][None, :]


def apply_mask_to_ignore(distances: Tensor, mask_gt: Tensor, mask_to_ignore: Tensor) -> Tuple[Tensor, Tensor]:
    """In place: ``distances[ignore] = inf`` and ``mask_gt[ignore] = False``; returns both."""
    if not (distances.shape == mask_gt.shape == mask_to_ignore.shape):
        raise ValueError(
            f"distances, mask_gt and mask_to_ignore must have the same shape, got {tuple(distances.shape)}, "
            f"{tuple(mask_gt.shape)} and {tuple(mask_to_ignore.shape)}."
        )
    distances[mask_to_ignore] = float("inf")
    mask_gt[mask_to_ignore] = False
    return distances, mask_gt


def extract_pos_neg_dists(
    distances: Tensor, mask_gt: Tensor, mask_to_ignore: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Flat distances of the positive (same label) and the negative pairs, without the ignored pairs.

    >>> d = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    >>> mask_gt, ignore = torch.tensor([[True, False], [False, True]]), torch.tensor([[True, False], [False, False]])
    >>> extract_pos_neg_dists(d, mask_gt, ignore)
    (tensor([3.]), tensor([1., 2.]))
    """
    if distances.shape != mask_gt.shape:
        raise ValueError(f"distances {tuple(distances.shape)} and mask_gt {tuple(mask_gt.shape)} differ in shape.")
    keep = torch.ones_like(mask_gt, dtype=torch.bool) if mask_to_ignore is None else ~mask_to_ignore
    return distances[mask_gt & keep], distances[~mask_gt & keep]


def calc_retrieval_metrics(
    distances: Tensor,
    mask_gt: Tensor,
    mask_to_ignore: Optional[Tensor] = None,
    cmc_top_k: Tuple[int, ...] = (5,),
    precision_top_k: Tuple[int, ...] = (5,),
    map_top_k: Tuple[int, ...] = (5,),
    fmr_vals: Tuple[float, ...] = (1,),
    reduce: bool = True,
) -> TMetricsDict:
    """Retrieval metrics from a dense distance matrix (OML's API).

    Args:
        distances: ``[Q, G]`` query-gallery distances.
        mask_gt: ``[Q, G]`` bool, True for relevant (same label) pairs.
        mask_to_ignore: ``[Q, G]`` bool, True for pairs to exclude (e.g. the query itself); inputs are not modified.
        cmc_top_k: values of k for CMC@k.
        precision_top_k: values of k for precision@k.
        map_top_k: values of k for MAP@k.
        fmr_vals: false match rates in ``[0, 1]`` for FNMR@FMR.
        reduce: average the per-query metrics over the queries.

    Returns:
        ``{"cmc": {k: v}, "precision": {k: v}, "map": {k: v}, "fnmr@fmr": {fmr: v}}`` (only requested ones).
        Ties are broken by the smaller gallery index (OML left them to ``torch.topk``).

    >>> distances = torch.tensor([[0.1, 0.5, 0.3], [0.4, 0.2, 0.6]])
    >>> mask_gt = torch.tensor([[False, True, True], [True, False, False]])
    >>> calc_retrieval_metrics(distances, mask_gt, cmc_top_k=(1, 2), precision_top_k=(2,), map_top_k=(), fmr_vals=())
    {'cmc': {1: tensor(0.), 2: tensor(1.)}, 'precision': {2: tensor(0.7500)}}
    """
    if not (cmc_top_k or precision_top_k or map_top_k or fmr_vals):
        raise ValueError("All of cmc_top_k, precision_top_k, map_top_k and fmr_vals are empty: nothing to compute.")
    if distances.ndim != 2 or distances.shape != mask_gt.shape:
        raise ValueError(f"distances {tuple(distances.shape)} and mask_gt {tuple(mask_gt.shape)} must be equal [Q, G].")
    if mask_to_ignore is not None and mask_to_ignore.shape != distances.shape:
        raise ValueError(f"mask_to_ignore {tuple(mask_to_ignore.shape)} must have shape {tuple(distances.shape)}.")
    if distances.numel() == 0:
        raise ValueError(f"Empty query or gallery set: distances have shape {tuple(distances.shape)}.")
    if torch.isnan(distances).any():
        raise ValueError(f"distances contain {int(torch.isnan(distances).sum())} NaN values.")
    for name, top_k in (("cmc_top_k", cmc_top_k), ("precision_top_k", precision_top_k), ("map_top_k", map_top_k)):
        check_ints(top_k, name, allow_empty=True)
    if fmr_vals:
        check_in_range(fmr_vals, 0, 1, "fmr_vals")

    mask_gt = mask_gt.bool()
    if mask_to_ignore is not None:
        distances, mask_gt = apply_mask_to_ignore(distances.clone(), mask_gt.clone(), mask_to_ignore.bool())

    n_galleries = distances.shape[1]
    metrics: TMetricsDict = {}
    all_k = (*cmc_top_k, *precision_top_k, *map_top_k)
    if all_k:
        max_k = min(max(all_k), n_galleries)
        gt_tops = torch.gather(mask_gt, 1, topk_stable(distances, max_k))
        n_gt = mask_gt.sum(dim=1)
        if precision_top_k:
            _check_n_gt(n_gt, len(n_gt))
        metrics.update(
            calc_retrieval_metrics_on_topk(
                gt_tops, n_gt, cmc_top_k, precision_top_k, map_top_k, n_galleries=n_galleries, reduce=reduce
            )
        )
    if fmr_vals:
        pos_dist, neg_dist = extract_pos_neg_dists(distances, mask_gt, mask_to_ignore)
        fnmr = calc_fnmr_at_fmr(pos_dist, neg_dist, fmr_vals)
        metrics["fnmr@fmr"] = dict(zip(fmr_vals, fnmr))
    return metrics


def reduce_metrics(metrics_to_reduce: Dict[Any, Any]) -> Dict[Any, Any]:
    """Recursively replace every tensor by its mean (other values are kept).

    >>> reduce_metrics({"OVERALL": {"cmc": {1: torch.tensor([0.0, 1.0])}}, "x": 2})
    {'OVERALL': {'cmc': {1: tensor(0.5000)}}, 'x': 2}
    """
    output: Dict[Any, Any] = {}
    for key, value in metrics_to_reduce.items():
        if isinstance(value, dict):
            output[key] = reduce_metrics(value)
        elif isinstance(value, Tensor):
            output[key] = value.float().mean() if value.numel() else value
        elif isinstance(value, np.ndarray):  # reduced like tensors, as OML 0.4.4 does
            output[key] = value.mean() if value.size else value
        else:
            output[key] = value
    return output


# --------------------------------------------------------------------------------------------- FNMR@FMR
def _numpy_linear_quantile(values_at: Any, n: int, fmr: float) -> float:
    """``np.quantile(x, fmr)`` ("linear") of ``n`` sorted values, reading only the 1-2 needed order statistics.

    ``values_at(rank)`` returns the float32 order statistic of ``rank``. The interpolation itself is done by
    numpy on the two neighbours, which reproduces ``np.quantile`` on the full array bit for bit.
    """
    virtual = (n - 1) * np.asarray([fmr], dtype=np.float64)
    if virtual[0] >= n - 1:
        last = values_at(n - 1)
        return float(np.quantile(np.array([last, last], dtype=np.float32), [0.0])[0])
    previous = int(np.floor(virtual[0]))
    gamma = float(virtual[0] - previous)
    pair = np.array([values_at(previous), values_at(previous + 1)], dtype=np.float32)
    return float(np.quantile(pair, [gamma])[0])


def calc_fnmr_at_fmr(
    pos_dist: Union[Tensor, np.ndarray], neg_dist: Union[Tensor, np.ndarray], fmr_vals: Tuple[float, ...] = (0.1,)
) -> Tensor:
    """False non-match rate at the given false match rates.

    The threshold for an FMR ``f`` is the linear-interpolation quantile ``np.quantile(neg_dist, f)``; the FNMR
    is the fraction of ``pos_dist >= threshold``. ``fmr_vals`` are fractions in ``[0, 1]``.

    >>> pos = torch.tensor([0, 0, 1, 1, 2, 2, 5, 5, 9, 9], dtype=torch.float)
    >>> neg = torch.tensor([3, 3, 4, 4, 6, 6, 7, 7, 8, 8], dtype=torch.float)
    >>> calc_fnmr_at_fmr(pos, neg, fmr_vals=(0.1, 0.5))
    tensor([0.4000, 0.2000])
    """
    check_in_range(fmr_vals, 0, 1, "fmr_vals")
    pos = np.asarray(pos_dist.detach().cpu() if isinstance(pos_dist, Tensor) else pos_dist).ravel()
    neg = np.asarray(neg_dist.detach().cpu() if isinstance(neg_dist, Tensor) else neg_dist).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"FNMR@FMR needs positive and negative distances, got {len(pos)} and {len(neg)}.")
    thresholds = np.quantile(neg, np.asarray(fmr_vals, dtype=np.float64))
    fnmr = (pos[None, :] >= thresholds[:, None]).sum(axis=1) / len(pos)
    return torch.from_numpy(fnmr).float()


FNMR_BUFFER_SIZE = 2**22  # exact squared distances held at once by calc_fnmr_at_fmr_by_embeddings (32 MB)
FNMR_TILE_ELEMENTS = 2**22  # smaller tiles than the kNN's: each pass makes several integer copies of a tile
_N_TOP = 1 << 15  # bins of the upper 16 bits of a non-negative float32
_RELATIVE_MARGIN = 2.0**-20


def _f32_down(x: float) -> float:
    return float(np.nextafter(np.float32(x), np.float32(-np.inf))) if np.float32(x) > x else float(np.float32(x))


def _f32_up(x: float) -> float:
    return float(np.nextafter(np.float32(x), np.float32(np.inf))) if np.float32(x) < x else float(np.float32(x))


class _BoundedBuffer:
    """Collects float64 values until ``capacity``; then it only remembers that it overflowed."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.parts, self.overflow = capacity, 0, [], False

    def add(self, values: Tensor) -> None:
        if self.overflow or not len(values):
            return
        if self.size + len(values) > self.capacity:
            self.overflow, self.parts = True, []
            return
        self.parts.append(values.cpu())
        self.size += len(values)

    def values(self) -> Tensor:
        return torch.cat(self.parts) if self.parts else torch.empty(0, dtype=torch.float64)


def calc_fnmr_at_fmr_by_embeddings(
    queries: Tensor,
    galleries: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    fmr_vals: Tuple[float, ...] = (0.1,),
    query_ids: Optional[Tensor] = None,
    gallery_ids: Optional[Tensor] = None,
    buffer_size: int = FNMR_BUFFER_SIZE,
    tile_size: Optional[int] = None,
) -> Tensor:
    """FNMR@FMR over all query-gallery pairs without materialising the distances (bounded memory).

    Equal to ``calc_fnmr_at_fmr(pos, neg, fmr_vals)`` on the exact (correctly rounded float32) distances of all
    positive and negative pairs, pairs of the same sample (equal ids) excluded. Three passes over the
    distance tiles (each a GEMM over Q x G):

    1. count the pairs and histogram the upper 16 bits of the negatives' GEMM squared distances;
    2. histogram the lower 16 bits inside the bins that hold the needed ranks: the order statistics of the
       GEMM values are then known exactly;
    3. the exact order statistic lies within the GEMM error bound ``delta`` of the GEMM one, so the pairs whose
       GEMM value is within ``2 delta`` of it are recomputed exactly and the pairs below it are counted:
       this yields the exact order statistics; positives near the threshold are recomputed the same way.

    **Accuracy.** The result is exact whenever the pairs recomputed in pass 3 fit into ``buffer_size`` (always the
    case unless tens of millions of pairs lie within ``2 delta`` of a threshold). Otherwise the value computed
    from the GEMM distances is returned with a warning; then the squared threshold is within ``delta`` of the
    exact one and the FNMR lies between the exact FNMR at the squared thresholds ``t^2 + 2 delta`` and
    ``t^2 - 2 delta``, where ``delta = max_q gamma_{D+2} (|q| + max |g|)^2`` (``~1e-4`` for unit vectors, D=384).

    Args:
        queries: ``[Q, D]`` embeddings.
        galleries: ``[G, D]`` embeddings.
        query_labels: ``[Q]`` labels.
        gallery_labels: ``[G]`` labels.
        fmr_vals: false match rates in ``[0, 1]``.
        query_ids: optional ``[Q]`` sample ids (pairs with equal ids are excluded).
        gallery_ids: optional ``[G]`` sample ids.
        buffer_size: the most exact values held at once.
        tile_size: square distance tiles of this size (default: the kNN tiling).

    Returns:
        ``[len(fmr_vals)]`` FNMR values.

    >>> queries = torch.tensor([[0.0], [1.0], [5.0]])
    >>> labels = torch.tensor([0, 0, 1])
    >>> ids = torch.arange(3)
    >>> calc_fnmr_at_fmr_by_embeddings(queries, queries, labels, labels, (0.5,), ids, ids)
    tensor([0.])
    """
    check_in_range(fmr_vals, 0, 1, "fmr_vals")
    dists = QueryGalleryDistances(queries, galleries, query_ids, gallery_ids)
    query_labels, gallery_labels = _label_codes(query_labels, gallery_labels, dists.n_queries, dists.n_galleries)
    query_labels, gallery_labels = query_labels.to(dists.device), gallery_labels.to(dists.device)
    width = tile_size or max(1, min(dists.n_galleries, MAX_TILE_WIDTH))
    height = tile_size or max(1, FNMR_TILE_ELEMENTS // width)
    all_rows = torch.arange(dists.n_queries, device=dists.device)
    delta = float(dists.error_bound.max()) if dists.n_queries else 0.0

    def tiles() -> Any:
        for _, rows, c0, tile in dists.tiles(all_rows, height, width):
            same = query_labels[rows][:, None] == gallery_labels[c0 : c0 + tile.shape[1]][None, :]
            valid = torch.isfinite(tile)
            yield rows, c0, tile.clamp_(min=0), same & valid, ~same & valid

    # pass 1: counts and the histogram of the upper bits of the negatives
    n_pos, n_neg = 0, 0
    hist_top = torch.zeros(_N_TOP + 1, dtype=torch.long)
    for _, _, tile, pos, neg in tiles():
        n_pos += int(torch.count_nonzero(pos))
        n_neg += int(torch.count_nonzero(neg))
        top = torch.where(neg, tile.view(torch.int32) >> 16, _N_TOP)
        hist_top += torch.bincount(top.flatten(), minlength=_N_TOP + 1).cpu()
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"FNMR@FMR needs positive and negative pairs, got {n_pos} and {n_neg}.")

    ranks = sorted({r for f in fmr_vals for r in _needed_ranks(n_neg, f)})
    cumulative = hist_top[:-1].cumsum(0)
    top_bin = {r: int(torch.searchsorted(cumulative, r, right=True)) for r in ranks}
    slots = sorted(set(top_bin.values()))
    lut = torch.full((_N_TOP + 1,), -1, dtype=torch.int32, device=dists.device)
    lut[torch.tensor(slots, dtype=torch.long)] = torch.arange(len(slots), dtype=torch.int32, device=dists.device)

    # pass 2: the lower bits inside the selected upper bins -> exact order statistics of the GEMM values
    hist_low = torch.zeros(len(slots) << 16, dtype=torch.long)
    for _, _, tile, _, neg in tiles():
        bits = tile.view(torch.int32)
        slot = lut[torch.where(neg, bits >> 16, _N_TOP)]  # int32 throughout: no int64 copies of the tile
        selected = slot >= 0
        keys = (slot[selected] << 16) | (bits[selected] & 0xFFFF)
        hist_low += torch.bincount(keys, minlength=len(slots) << 16).cpu()
    approx = {}
    for r in ranks:
        b = top_bin[r]
        below = int(cumulative[b - 1]) if b > 0 else 0
        low = int(torch.searchsorted(hist_low[slots.index(b) << 16 :][: 1 << 16].cumsum(0), r - below, right=True))
        approx[r] = float(torch.tensor([(b << 16) | low], dtype=torch.int32).view(torch.float32))

    def approx_value(r: int) -> np.float32:
        return np.float32(math.sqrt(approx[r]))

    approx_thresholds = [_numpy_linear_quantile(approx_value, n_neg, f) for f in fmr_vals]

    # pass 3: exact resolution of the order statistics and of the positives near the thresholds
    capacity = max(1, buffer_size // (len(ranks) + len(fmr_vals)))
    neg_below = dict.fromkeys(ranks, 0)
    neg_band = {r: _BoundedBuffer(capacity) for r in ranks}
    neg_bounds = {r: (_f32_down(approx[r] - 2 * delta), _f32_up(approx[r] + 2 * delta)) for r in ranks}
    pos_above = [0] * len(fmr_vals)
    pos_approx = [0] * len(fmr_vals)
    pos_band = [_BoundedBuffer(capacity) for _ in fmr_vals]
    pos_bounds = []
    for f in fmr_vals:
        r_lo, r_hi = _needed_ranks(n_neg, f)[0], _needed_ranks(n_neg, f)[-1]
        lo = (approx[r_lo] - delta) * (1 - _RELATIVE_MARGIN) - delta
        hi = (approx[r_hi] + delta) * (1 + _RELATIVE_MARGIN) + delta
        pos_bounds.append((_f32_down(lo), _f32_up(hi)))

    def count(mask: Tensor, condition: Tensor) -> int:
        return int(torch.count_nonzero(condition.logical_and_(mask)))

    def band(mask: Tensor, lo: float, hi: float) -> Tuple[Tensor, Tensor]:
        return (tile >= lo).logical_and_(tile <= hi).logical_and_(mask).nonzero(as_tuple=True)

    for rows, c0, tile, pos, neg in tiles():
        for r in ranks:
            lo, hi = neg_bounds[r]
            neg_below[r] += count(neg, tile < lo)
            band_r, band_c = band(neg, lo, hi)
            neg_band[r].add(dists.exact_sq_distances(rows[band_r], band_c + c0))
        for i, (lo, hi) in enumerate(pos_bounds):
            pos_approx[i] += count(pos, tile >= _f32_up(approx_thresholds[i] ** 2))
            pos_above[i] += count(pos, tile > hi)
            band_r, band_c = band(pos, lo, hi)
            pos_band[i].add(dists.exact_sq_distances(rows[band_r], band_c + c0))

    exact_stats: Dict[int, Optional[np.float32]] = {}
    for r in ranks:
        exact_stats[r] = _resolve_rank(r, approx[r], delta, neg_below[r], neg_band[r])

    fnmr = []
    for i, f in enumerate(fmr_vals):
        needed = _needed_ranks(n_neg, f)
        if all(exact_stats[r] is not None for r in needed) and not pos_band[i].overflow:
            threshold = _numpy_linear_quantile(lambda r: exact_stats[r], n_neg, f)
            band = pos_band[i].values().sqrt().float().double()
            n_ge = pos_above[i] + int((band >= threshold).sum())
        else:
            warnings.warn(
                f"FNMR@FMR={f}: too many pairs lie within the GEMM error bound ({delta:.2e} in squared distance) of "
                f"the threshold to resolve them exactly with buffer_size={buffer_size}; returning the value computed "
                f"from the GEMM distances (see the accuracy note of calc_fnmr_at_fmr_by_embeddings).",
                stacklevel=2,
            )
            n_ge = pos_approx[i]
        fnmr.append(n_ge / n_pos)
    return torch.tensor(fnmr, dtype=torch.float32)


def _needed_ranks(n: int, fmr: float) -> List[int]:
    """Ranks (0-based) of the order statistics that ``np.quantile(x, fmr)`` reads from ``n`` values."""
    virtual = (n - 1) * float(np.float64(fmr))
    if virtual >= n - 1:
        return [n - 1]
    previous = int(math.floor(virtual))
    return [previous, previous + 1]


def _resolve_rank(rank: int, approx: float, delta: float, n_below: int, band: _BoundedBuffer) -> Optional[np.float32]:
    """The exact float32 distance of ``rank`` from the exact squared distances near the GEMM value, or None."""
    if band.overflow:
        return None
    values = torch.sort(band.values()).values
    lo, hi = approx - delta, approx + delta
    n_below += int((values < lo).sum())
    middle = values[(values >= lo) & (values <= hi)]
    position = rank - n_below
    if not 0 <= position < len(middle):  # cannot happen if the error bound holds; fall back to the GEMM value
        return None
    return np.float32(torch.tensor(float(middle[position]), dtype=torch.float64).sqrt().float().item())


def _label_codes(query_labels: Any, gallery_labels: Any, n_queries: int, n_galleries: int) -> Tuple[Tensor, Tensor]:
    """Shared integer codes of the query and the gallery labels (checked against the set sizes)."""
    _, (q, g) = encode_labels(query_labels, gallery_labels)
    if q.shape != (n_queries,) or g.shape != (n_galleries,):
        raise ValueError(
            f"Expected {n_queries} query labels and {n_galleries} gallery labels, got {len(q)} and {len(g)}."
        )
    return q, g


# --------------------------------------------------------------------------------------------- topology
PCA_DENSE_MAX_ELEMENTS = 2**23  # above this the explained variance is computed chunk by chunk (TSQR)


def _explained_variance_ratio_chunked(embeddings: Tensor, chunk: int = 8192) -> Tensor:
    """PCA's explained variance ratio in O(chunk x D + D^2): mean, then a tall-skinny QR of the centred data."""
    n, dim = embeddings.shape
    mean = torch.zeros(dim, dtype=torch.float64)
    for i in range(0, n, chunk):
        mean += embeddings[i : i + chunk].double().sum(dim=0)
    mean /= n
    r = torch.zeros(0, dim, dtype=torch.float64)
    for i in range(0, n, chunk):
        block = embeddings[i : i + chunk].double() - mean
        r = torch.linalg.qr(torch.cat([r, block]), mode="r").R
    singular = torch.linalg.svdvals(r)[: min(n, dim)]
    eigenvalues = singular**2 / max(n - 1, 1)
    total = eigenvalues.sum()
    return eigenvalues / total if total > 0 else torch.zeros_like(eigenvalues)


def calc_pcf(embeddings: Tensor, pfc_variance: Tuple[float, ...]) -> Tensor:
    """Principal components fraction: the smallest number of principal axes explaining more than each share of
    the variance, divided by the dimension.

    Follows sklearn's ``searchsorted(cumsum, v, side="right") + 1`` (not clipped), as OML did.

    >>> calc_pcf(torch.eye(4, 10), (0.5, 1))
    tensor([0.2000, 0.5000])
    """
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] matrix, got shape {tuple(embeddings.shape)}.")
    check_in_range(pfc_variance, 0, 1, "pfc_variance")
    embeddings = embeddings.detach().cpu()
    if embeddings.numel() <= PCA_DENSE_MAX_ELEMENTS:
        n_axes = PCA(embeddings).calc_principal_axes_number(pfc_variance)
    else:
        cumulative = torch.cumsum(_explained_variance_ratio_chunked(embeddings), dim=0)
        thresholds = torch.tensor([float(v) for v in pfc_variance], dtype=torch.float64)
        n_axes = torch.searchsorted(cumulative, thresholds, right=True) + 1
    return n_axes.float() / embeddings.shape[1]


def calc_topological_metrics(embeddings: Tensor, pfc_variance: Tuple[float, ...]) -> TMetricsDict:
    """``{"pcf": {v: value}}`` (empty dict if ``pfc_variance`` is empty).

    >>> calc_topological_metrics(torch.eye(4, 10), (0.5,))
    {'pcf': {0.5: tensor(0.2000)}}
    """
    if not pfc_variance:
        return {}
    return {"pcf": dict(zip(pfc_variance, calc_pcf(embeddings, pfc_variance)))}


# --------------------------------------------------------------------------------------------- triplets
def calculate_accuracy_on_triplets(embeddings: Tensor, reduce_mean: bool = True) -> Tensor:
    """Share of triplets with ``d(anchor, positive) < d(anchor, negative)``; rows are ``a, p, n, a, p, n, ...``.

    >>> emb = torch.tensor([[0.0], [1.0], [3.0], [0.0], [2.0], [1.0]])
    >>> calculate_accuracy_on_triplets(emb), calculate_accuracy_on_triplets(emb, reduce_mean=False)
    (tensor(0.5000), tensor([1., 0.]))
    """
    if embeddings.ndim != 2 or len(embeddings) % 3 != 0:
        raise ValueError(
            f"Expected [3 * n_triplets, D] embeddings (anchor, positive, negative, ...), got {tuple(embeddings.shape)}."
        )
    anchors, positives, negatives = embeddings[0::3], embeddings[1::3], embeddings[2::3]
    correct = (elementwise_dist(anchors, positives) < elementwise_dist(anchors, negatives)).float()
    return correct.mean() if reduce_mean else correct


__all__ = [
    "TMetricsDict",
    "calc_retrieval_metrics",
    "calc_retrieval_metrics_on_topk",
    "calc_cmc",
    "calc_precision",
    "calc_map",
    "calc_fnmr_at_fmr",
    "calc_fnmr_at_fmr_by_embeddings",
    "calc_pcf",
    "calc_topological_metrics",
    "calc_gt_mask",
    "calc_mask_to_ignore",
    "calc_distance_matrix",
    "apply_mask_to_ignore",
    "extract_pos_neg_dists",
    "calculate_accuracy_on_triplets",
    "reduce_metrics",
]
