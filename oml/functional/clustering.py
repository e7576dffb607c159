"""Clustering quality of embeddings: k-means with as many clusters as labels, then NMI and AMI.

* ``kmeans``: Lloyd's algorithm with k-means++ seeding, seeded and deterministic, on torch (bounded memory:
  distances to the centroids in chunks). With faiss installed, ``backend="auto"`` uses ``faiss.Kmeans``
  instead (faster on large sets; seeded, but its clusters differ from the torch ones).
* ``normalized_mutual_info`` / ``adjusted_mutual_info``: the definitions of scikit-learn's
  ``normalized_mutual_info_score`` and ``adjusted_mutual_info_score`` with the arithmetic mean (their
  defaults, used by pytorch-metric-learning's ``AccuracyCalculator``), computed from the contingency
  table; the expected mutual information of AMI is summed in closed form over the hypergeometric model.
"""

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from oml.utils.checks import check_embeddings, check_int
from oml.utils.labels import encode_labels

CLUSTERING_METRICS = ("nmi", "ami")
KMEANS_ITERATIONS = 100
_CHUNK = 2**22  # (sample, centroid) distances computed at once


def _nearest_centroid(x: Tensor, centroids: Tensor) -> Tensor:
    step = max(1, _CHUNK // max(1, len(centroids)))
    c_norms = centroids.square().sum(dim=1)
    out = []
    for i in range(0, len(x), step):
        block = x[i : i + step]
        out.append((c_norms[None, :] - 2 * block @ centroids.T).argmin(dim=1))
    return torch.cat(out)


def _kmeans_torch(x: Tensor, n_clusters: int, n_iter: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = x.double()
    n = len(x)
    centroids = torch.empty(n_clusters, x.shape[1], dtype=x.dtype)
    centroids[0] = x[torch.randint(n, (1,), generator=generator)]
    closest = (x - centroids[0]).square().sum(dim=1)
    for c in range(1, n_clusters):  # k-means++: the next centre with probability proportional to D^2
        total = float(closest.sum())
        if total > 0:
            pick = torch.multinomial(closest / total, 1, generator=generator)
        else:
            pick = torch.randint(n, (1,), generator=generator)
        centroids[c] = x[pick]
        closest = torch.minimum(closest, (x - centroids[c]).square().sum(dim=1))
    assignment = _nearest_centroid(x, centroids)
    for _ in range(n_iter):
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=n_clusters)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        new_assignment = _nearest_centroid(x, centroids)
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
    return assignment


def kmeans(x: Tensor, n_clusters: int, n_iter: int = KMEANS_ITERATIONS, seed: int = 0, backend: str = "auto") -> Tensor:
    """Cluster ids ``[N]`` of k-means on ``x``.

    Args:
        x: ``[N, D]`` embeddings.
        n_clusters: the number of clusters (``<= N``).
        n_iter: at most this many Lloyd iterations.
        seed: seed of the initialisation.
        backend: ``"torch"``, ``"faiss"`` or ``"auto"`` (faiss if installed).

    >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    >>> ids = kmeans(x, 2, backend="torch")
    >>> bool(ids[0] == ids[1]) and bool(ids[2] == ids[3]) and bool(ids[0] != ids[2])
    True
    """
    x = check_embeddings(x, "x").detach().cpu()
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1, maximum=max(1, len(x)))
    if backend not in ("auto", "torch", "faiss"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'faiss', got {backend!r}.")
    if backend in ("auto", "faiss"):
        try:
            import faiss
        except ImportError:
            if backend == "faiss":
                raise
        else:
            data = np.ascontiguousarray(x.float().numpy())
            model = faiss.Kmeans(data.shape[1], n_clusters, niter=n_iter, seed=seed, verbose=False)
            model.train(data)
            _, ids = model.index.search(data, 1)
            return torch.from_numpy(ids.ravel().astype(np.int64))
    return _kmeans_torch(x, n_clusters, n_iter, seed)


def _contingency(labels_true: Any, labels_pred: Any) -> np.ndarray:
    _, (a, b) = encode_labels(labels_true, labels_pred)
    _, a = np.unique(a.numpy(), return_inverse=True)
    _, b = np.unique(b.numpy(), return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    n = counts.sum()
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def _mutual_info(table: np.ndarray) -> float:
    n = table.sum()
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    i, j = table.nonzero()
    nij = table[i, j].astype(np.float64)
    return float(max(0.0, (nij / n * (np.log(nij * n) - np.log(rows[i] * cols[j].astype(np.float64)))).sum()))


def _expected_mutual_info(table: np.ndarray) -> float:
    """E[MI] under the hypergeometric model of tables with the same margins (Vinh et al., 2010).

    Rows (and columns) with the same margin contribute equally, so the sum runs over distinct margins,
    vectorised over the column margins and the cell values.
    """
    n = int(table.sum())
    row_sizes, row_mult = np.unique(table.sum(axis=1), return_counts=True)
    col_sizes, col_mult = np.unique(table.sum(axis=0), return_counts=True)
    log_fact = np.array([math.lgamma(v + 1) for v in range(n + 1)])
    b = col_sizes[:, None].astype(np.int64)
    total = 0.0
    for ai, a_mult in zip(row_sizes.tolist(), row_mult.tolist()):
        nij = np.arange(1, min(ai, int(col_sizes.max())) + 1, dtype=np.int64)[None, :]
        valid = (nij >= ai + b - n) & (nij <= b)
        nij_v = np.where(valid, nij, 1)
        b_v = np.broadcast_to(b, nij_v.shape)
        term = nij_v / n * (np.log(n * nij_v) - np.log(ai * b_v.astype(np.float64)))
        log_p = (
            log_fact[ai]
            + log_fact[b_v]
            + log_fact[n - ai]
            + log_fact[n - b_v]
            - log_fact[n]
            - log_fact[nij_v]
            - log_fact[np.clip(ai - nij_v, 0, None)]
            - log_fact[np.clip(b_v - nij_v, 0, None)]
            - log_fact[np.clip(n - ai - b_v + nij_v, 0, None)]
        )
        contributions = np.where(valid, term * np.exp(log_p), 0.0).sum(axis=1)
        total += a_mult * float((contributions * col_mult).sum())
    return total


def _table_and_entropies(labels_true: Any, labels_pred: Any) -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
    """The contingency table and the two entropies, or None for them when both partitions are trivial and
    identical (one cluster each, or one sample per cluster each), where both scores are 1 by convention."""
    table = _contingency(labels_true, labels_pred)
    if table.shape[0] == table.shape[1] == 1 or table.shape[0] == table.shape[1] == table.sum():
        return table, None
    return table, (_entropy(table.sum(axis=1)), _entropy(table.sum(axis=0)))


def _mutual_info_score(labels_true: Any, labels_pred: Any, adjusted: bool) -> float:
    """``(MI - E) / (mean(H(true), H(pred)) - E)`` with ``E = E[MI]`` when ``adjusted``, else ``E = 0``."""
    table, entropies = _table_and_entropies(labels_true, labels_pred)
    if entropies is None:
        return 1.0
    expected = _expected_mutual_info(table) if adjusted else 0.0
    denominator = sum(entropies) / 2 - expected
    eps = np.finfo(np.float64).eps
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    return (_mutual_info(table) - expected) / denominator


def normalized_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """``MI / mean(H(true), H(pred))`` (1 for identical partitions up to renaming, 1 when both are one cluster).

    >>> round(normalized_mutual_info([0, 0, 1, 1], [5, 5, 7, 7]), 12)
    1.0
    """
    return _mutual_info_score(labels_true, labels_pred, adjusted=False)


def adjusted_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """``(MI - E[MI]) / (mean(H(true), H(pred)) - E[MI])``: 0 for chance, 1 for identical partitions.

    >>> round(adjusted_mutual_info([0, 0, 1, 1], [1, 1, 0, 0]), 12)
    1.0
    """
    return _mutual_info_score(labels_true, labels_pred, adjusted=True)


def calc_clustering_metrics(
    embeddings: Tensor, labels: Any, metrics: Sequence[str] = CLUSTERING_METRICS, seed: int = 0, backend: str = "auto"
) -> Dict[str, Tensor]:
    """``{"nmi": v, "ami": v}`` of k-means (as many clusters as labels) against the labels.

    >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    >>> calc_clustering_metrics(x, [0, 0, 1, 1], backend="torch")
    {'nmi': tensor(1.), 'ami': tensor(1.)}
    """
    unknown = set(metrics) - set(CLUSTERING_METRICS)
    if unknown:
        raise ValueError(f"Unknown clustering metrics {sorted(unknown)}; choose from {CLUSTERING_METRICS}.")
    if not metrics:
        return {}
    _, (codes,) = encode_labels(labels)
    n_clusters = len(torch.unique(codes))
    clusters = kmeans(embeddings, n_clusters, seed=seed, backend=backend)
    functions = {"nmi": normalized_mutual_info, "ami": adjusted_mutual_info}
    return {
        name: torch.tensor(functions[name](codes, clusters), dtype=torch.float32)
        for name in CLUSTERING_METRICS
        if name in metrics
    }


__all__ = [
    "CLUSTERING_METRICS",
    "adjusted_mutual_info",
    "calc_clustering_metrics",
    "kmeans",
    "normalized_mutual_info",
]
