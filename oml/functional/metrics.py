"""Retrieval and topological metrics (the exact definitions of OML 0.4.4), dense and scalable variants.

The dense functions (``calc_retrieval_metrics``, ``calc_distance_matrix``, ``calc_gt_mask``, ...) keep the
OML API and build ``[Q, G]`` matrices. ``EmbeddingMetrics`` does not: it finds the exact top-k with
``oml.functional.knn.exact_knn`` and calls ``calc_retrieval_metrics_on_topk`` on the per-query top-k
relevance and the per-query number of relevant galleries; FNMR@FMR is computed in bounded memory by
``calc_fnmr_at_fmr_by_embeddings`` (``oml.functional.fnmr``, re-exported here). Ties in distances are broken
by the smaller gallery index everywhere, so the dense and the scalable paths give identical results.
"""

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from oml.functional.distances import exact_cdist
from oml.functional.fnmr import calc_fnmr_at_fmr_by_embeddings
from oml.functional.ordering import topk_stable
from oml.utils.checks import check_bool_vector, check_in_range, check_ints
from oml.utils.misc import reduce_metrics  # noqa: F401  (OML 0.4.4 also exports it here)
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
    negative = (n_gt < 0).nonzero().flatten()
    if len(negative):
        raise ValueError(f"n_gt must be >= 0, got negative counts for query rows {negative[:10].tolist()}.")
    return n_gt


def warn_about_queries_without_match(n_gt: Tensor, what: str = "queries") -> int:
    """Warn (once per call) how many queries have no relevant gallery item; return that number.

    Such queries (distractors, new products) are scored by the usual definitions: CMC@k, precision@k,
    MAP@k, MAP@R, R-precision and MRR are 0 for them.
    """
    n_without = int((torch.as_tensor(n_gt) == 0).sum())
    if n_without:
        warnings.warn(
            f"{n_without} of {len(n_gt)} {what} have no relevant gallery item (distractors): they are scored as "
            f"misses (0 for CMC@k, precision@k, MAP@k, MAP@R, R-precision and MRR).",
            stacklevel=3,
        )
    return n_without


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

    A query with fewer than k relevant items is not penalised for it; a query without any (``n_gt == 0``,
    a distractor) scores 0.

    >>> gt_tops = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    >>> calc_precision(gt_tops, n_gt=torch.tensor([2, 5]), top_k=(1, 3))
    [tensor([1., 0.]), tensor([1.0000, 0.3333])]
    """
    gt_tops, top_k = _check_gt_tops(gt_tops, top_k)
    n_gt = _check_n_gt(n_gt, gt_tops.shape[0])
    cumulative = gt_tops.float().cumsum(dim=1)
    denominators = [torch.clamp(n_gt, min=1, max=k).float() for k in top_k]
    return [cumulative[:, k - 1] / denominator for k, denominator in zip(top_k, denominators)]


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


RANKING_METRICS = ("map@r", "r_precision", "mrr")


def _check_width_for_r(gt_tops: Tensor, n_gt: Tensor, name: str) -> Tuple[Tensor, Tensor]:
    gt_tops = gt_tops.bool()
    n_gt = _check_n_gt(n_gt, gt_tops.shape[0])
    needed = int(n_gt.max()) if len(n_gt) else 0
    if needed > gt_tops.shape[1]:
        raise ValueError(
            f"{name} needs each query's first R results (R = its number of relevant items, up to {needed}), but "
            f"gt_tops has only {gt_tops.shape[1]} columns: retrieve at least {needed} items per query."
        )
    return gt_tops, n_gt


def calc_map_at_r(gt_tops: Tensor, n_gt: Tensor) -> Tensor:
    """MAP@R per query: ``(1 / R) sum_{j <= R} precision@j * rel_j`` with ``R = n_gt`` (Musgrave et al., 2020).

    ``gt_tops`` must hold at least ``max(n_gt)`` columns; a query with ``R = 0`` scores 0.

    >>> gt_tops = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    >>> calc_map_at_r(gt_tops, torch.tensor([3, 1]))
    tensor([0.5556, 0.0000])
    """
    gt_tops, n_gt = _check_width_for_r(gt_tops, n_gt, "MAP@R")
    width = gt_tops.shape[1]
    within_r = torch.arange(width)[None, :] < n_gt[:, None]
    relevance = (gt_tops & within_r).double()
    precision_at_j = relevance.cumsum(dim=1) / torch.arange(1, width + 1, dtype=torch.float64)
    total = (precision_at_j * relevance).sum(dim=1)
    return (total / n_gt.clamp_min(1)).float()


def calc_r_precision(gt_tops: Tensor, n_gt: Tensor) -> Tensor:
    """R-precision per query: relevant items among the first ``R = n_gt`` results, divided by ``R`` (0 if R = 0).

    >>> calc_r_precision(torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool), torch.tensor([3, 1]))
    tensor([0.6667, 0.0000])
    """
    gt_tops, n_gt = _check_width_for_r(gt_tops, n_gt, "R-precision")
    within_r = torch.arange(gt_tops.shape[1])[None, :] < n_gt[:, None]
    hits = (gt_tops & within_r).sum(dim=1).double()
    return (hits / n_gt.clamp_min(1)).float()


def calc_mrr(gt_tops: Tensor) -> Tensor:
    """Reciprocal rank of the first relevant result per query within the ``K`` columns of ``gt_tops`` (0 if none).

    The mean over queries is the MRR "at K"; ``EmbeddingMetrics`` uses ``K = max(largest k, largest R)``,
    which equals pytorch-metric-learning's ``k="max_bin_count"`` when no k exceeds the largest R.

    >>> calc_mrr(torch.tensor([[0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.bool))
    tensor([0.3333, 1.0000, 0.0000])
    """
    gt_tops = gt_tops.bool()
    if gt_tops.ndim != 2:
        raise ValueError(f"gt_tops must be a [Q, K] matrix, got shape {tuple(gt_tops.shape)}.")
    first = gt_tops.float().argmax(dim=1)  # the first maximum: the first relevant position
    found = gt_tops.any(dim=1)
    return torch.where(found, 1.0 / (first + 1).float(), torch.zeros(len(gt_tops)))


def calc_retrieval_metrics_on_topk(
    gt_tops: Tensor,
    n_gt: Tensor,
    cmc_top_k: Tuple[int, ...] = (5,),
    precision_top_k: Tuple[int, ...] = (5,),
    map_top_k: Tuple[int, ...] = (5,),
    n_galleries: Optional[int] = None,
    reduce: bool = True,
    ranking_metrics: Sequence[str] = (),
) -> TMetricsDict:
    """CMC, precision, MAP (and MAP@R, R-precision, MRR) from the per-query top-k relevance (no distance matrix).

    Args:
        gt_tops: ``[Q, K]`` relevance of each query's retrieved items ordered by distance, where
            ``K >= min(max(all k), n_galleries)`` (and ``K >= max(n_gt)`` for MAP@R and R-precision).
        n_gt: ``[Q]`` number of relevant gallery items of each query (0 for a distractor: it scores 0).
        cmc_top_k: values of k for CMC@k.
        precision_top_k: values of k for precision@k.
        map_top_k: values of k for MAP@k.
        n_galleries: the gallery size; larger k are clipped to it with a warning (default ``K``).
        reduce: average over the queries (else ``[Q]`` tensors).
        ranking_metrics: any of ``RANKING_METRICS``: ``"map@r"``, ``"r_precision"``, ``"mrr"`` (MRR within the
            ``K`` columns).

    Returns:
        ``{"cmc": {k: v}, "precision": {k: v}, "map": {k: v}, "map@r": v, "r_precision": v, "mrr": v}``
        (only the metrics asked for), keyed by the k that were asked for.

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
    unknown = set(ranking_metrics) - set(RANKING_METRICS)
    if unknown:
        raise ValueError(f"Unknown ranking metrics {sorted(unknown)}; choose from {RANKING_METRICS}.")
    for name in RANKING_METRICS:
        if name in ranking_metrics:
            per_query = calc_mrr(gt_tops) if name == "mrr" else RANKING_FUNCTIONS[name](gt_tops, n_gt)
            metrics[name] = per_query.mean() if reduce else per_query  # type: ignore[assignment]
    return metrics


RANKING_FUNCTIONS = {"map@r": calc_map_at_r, "r_precision": calc_r_precision}


# --------------------------------------------------------------------------------------------- dense (OML API)
def calc_distance_matrix(embeddings: Tensor, is_query: Tensor, is_gallery: Tensor) -> Tensor:
    """Dense ``[Q, G]`` Euclidean distances between the query rows and the gallery rows (O(QG) memory).

    >>> emb = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    >>> calc_distance_matrix(emb, torch.tensor([1, 1, 0]), torch.tensor([0, 1, 1]))
    tensor([[5.0000, 1.0000],
            [0.0000, 4.2426]])
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a [N, D] matrix, got shape {tuple(embeddings.shape)}.")
    is_query = check_bool_vector(is_query, "is_query", len(embeddings))
    is_gallery = check_bool_vector(is_gallery, "is_gallery", len(embeddings))
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
    is_query = check_bool_vector(is_query, "is_query", len(labels))
    is_gallery = check_bool_vector(is_gallery, "is_gallery", len(labels))
    return labels[is_query][:, None] == labels[is_gallery][None, :]


def calc_mask_to_ignore(is_query: Union[np.ndarray, Tensor], is_gallery: Union[np.ndarray, Tensor]) -> Tensor:
    """Dense bool ``[Q, G]``: True where the query and the gallery item are the same sample (dataset row).

    >>> calc_mask_to_ignore(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 1]))
    tensor([[False, False],
            [ True, False]])
    """
    is_query = _to_tensor(is_query)
    is_query = check_bool_vector(is_query, "is_query", len(is_query))
    is_gallery = check_bool_vector(is_gallery, "is_gallery", len(is_query))
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
        warn_about_queries_without_match(n_gt)
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


# --------------------------------------------------------------------------------------------- FNMR@FMR
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
