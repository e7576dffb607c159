"""The single dense, obviously-correct references that the bounded-memory engine is checked against.

Everything here builds full ``[Q, G]`` matrices and loops over queries in Python: slow, simple, and
written independently of ``oml.functional`` (no shared helpers), so an error in the engine cannot hide
in the reference too.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor


def dense_distances(queries: Tensor, galleries: Tensor) -> Tensor:
    """``[Q, G]`` float64 distances rounded once to float32 (float64 for float64 inputs)."""
    dist = (queries.double()[:, None, :] - galleries.double()[None, :, :]).square().sum(-1).sqrt()
    return dist.to(torch.promote_types(queries.dtype, torch.float32))


def dense_knn(
    queries: Tensor, galleries: Tensor, k: int, query_ids: Optional[Tensor] = None, gallery_ids: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Brute force top-k: same-id pairs ``inf``, ordered by (distance, gallery index)."""
    dist = dense_distances(queries, galleries)
    if query_ids is not None:
        dist[query_ids[:, None] == gallery_ids[None, :]] = float("inf")
    order = torch.argsort(dist, dim=1, stable=True)[:, :k]
    return dist.gather(1, order), order


def ranked_relevance(distances: Tensor, mask_gt: Tensor, ignore: Optional[Tensor] = None) -> List[List[bool]]:
    """Per query, the relevance of the galleries in the order (distance, index), ignored pairs removed."""
    out = []
    for i in range(distances.shape[0]):
        columns = [j for j in range(distances.shape[1]) if ignore is None or not bool(ignore[i, j])]
        order = sorted(columns, key=lambda j: (float(distances[i, j]), j))
        out.append([bool(mask_gt[i, j]) for j in order])
    return out


def reference_metrics(
    distances: Tensor,
    mask_gt: Tensor,
    cmc_ks: Sequence[int] = (),
    precision_ks: Sequence[int] = (),
    map_ks: Sequence[int] = (),
    ignore: Optional[Tensor] = None,
    ranking_metrics: bool = False,
    mrr_width: Optional[int] = None,
) -> Dict[str, Dict[object, List[float]]]:
    """OML's definitions (and MAP@R, R-precision, MRR) with explicit loops over queries and ranks.

    A query without relevant items scores 0 everywhere. ``mrr_width``: reciprocal ranks beyond this
    position count as 0 (default: no cut).
    """
    out: Dict[str, Dict[object, List[float]]] = {
        "cmc": {k: [] for k in cmc_ks},
        "precision": {k: [] for k in precision_ks},
        "map": {k: [] for k in map_ks},
    }
    if ranking_metrics:
        out.update({"map@r": {"": []}, "r_precision": {"": []}, "mrr": {"": []}})
    for rel in ranked_relevance(distances, mask_gt, ignore):
        n_gt = sum(rel)
        n = len(rel)
        for k in cmc_ks:
            out["cmc"][k].append(float(any(rel[: min(k, n)])))
        for k in precision_ks:
            kk = min(k, n)
            out["precision"][k].append(sum(rel[:kk]) / min(kk, n_gt) if n_gt else 0.0)
        for k in map_ks:
            hits, total = 0, 0.0
            for j in range(min(k, n)):
                if rel[j]:
                    hits += 1
                    total += hits / (j + 1)
            out["map"][k].append(total / hits if hits else 0.0)
        if ranking_metrics:
            hits, total = 0, 0.0
            for j in range(n_gt):
                if rel[j]:
                    hits += 1
                    total += hits / (j + 1)
            out["map@r"][""].append(total / n_gt if n_gt else 0.0)
            out["r_precision"][""].append(sum(rel[:n_gt]) / n_gt if n_gt else 0.0)
            first = next((j for j, r in enumerate(rel) if r), None)
            cut = n if mrr_width is None else mrr_width
            out["mrr"][""].append(1.0 / (first + 1) if first is not None and first < cut else 0.0)
    return out


def reference_fnmr(distances: Tensor, mask_gt: Tensor, fmr_vals: Sequence[float], ignore: Optional[Tensor] = None):
    """FNMR@FMR from all positive and negative distances: numpy's linear quantile of the negatives, ``>=``."""
    keep = torch.ones_like(mask_gt) if ignore is None else ~ignore
    pos = distances[mask_gt & keep].numpy()
    neg = distances[~mask_gt & keep].numpy()
    thresholds = np.quantile(neg, np.asarray(fmr_vals, dtype=np.float64))
    return torch.tensor([(pos >= t).mean() for t in thresholds], dtype=torch.float32)
