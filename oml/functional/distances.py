"""Exact Euclidean distances (the one home for them): float64 arithmetic, one rounding at the end.

The "exact distance" of a pair is the square root of the float64 sum of squared float64 differences,
rounded to the output dtype: for float32 embeddings this is the correctly rounded distance in all but
astronomically rare double-rounding cases, and it is what the kNN kernel, the FNMR@FMR engine, the
search backends and the dense reference all report, so their results agree bit for bit.
"""

from typing import Optional

import torch
from torch import Tensor

__all__ = ["EXACT_BUDGET", "distance_dtype", "exact_sq_distances_of_pairs", "exact_distances_of_topk", "exact_cdist"]

EXACT_BUDGET = 2**20  # float64 values held at once by the pairwise recomputation
# values per slice of exact_sq_distances_of_pairs: its four slice buffers then stay in the CPU caches (384-d
# pairs on this project's 2-core CPU, 2026-11-28: 1.6x faster than slices of EXACT_BUDGET; 2^16 to 2^17 best)
PAIR_SLICE = 2**17


def distance_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype distances are reported in: float64 if an input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def exact_sq_distances_of_pairs(queries: Tensor, galleries: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Float64 squared distances ``[P]`` of the pairs ``(queries[rows[p]], galleries[cols[p]])``.

    Works in slices of about ``PAIR_SLICE`` values with reused buffers, so memory stays bounded whatever ``P``.

    >>> q, g = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    >>> exact_sq_distances_of_pairs(q, g, torch.tensor([0, 0]), torch.tensor([0, 1]))
    tensor([25.,  2.], dtype=torch.float64)
    """
    device, dim = queries.device, queries.shape[1]
    rows, cols = rows.to(device), cols.to(device)
    out = torch.empty(len(rows), dtype=torch.float64, device=device)
    step = max(1, min(len(rows), PAIR_SLICE // max(1, dim)))
    q_raw = torch.empty(step, dim, dtype=queries.dtype, device=device)
    g_raw = torch.empty(step, dim, dtype=galleries.dtype, device=device)
    q64 = torch.empty(step, dim, dtype=torch.float64, device=device)
    g64 = torch.empty(step, dim, dtype=torch.float64, device=device)
    for p0 in range(0, len(rows), step):
        n = min(step, len(rows) - p0)
        torch.index_select(queries, 0, rows[p0 : p0 + n], out=q_raw[:n])
        torch.index_select(galleries, 0, cols[p0 : p0 + n], out=g_raw[:n])
        q64[:n].copy_(q_raw[:n])
        g64[:n].copy_(g_raw[:n])
        torch.sum(g64[:n].sub_(q64[:n]).square_(), dim=1, out=out[p0 : p0 + n])
    return out


def exact_distances_of_topk(
    queries: Tensor, galleries: Tensor, indices: Tensor, out_dtype: Optional[torch.dtype] = None
) -> Tensor:
    """``[Q, k]`` exact distances of ``(queries[i], galleries[indices[i, j]])``; ``inf`` where ``indices`` is -1.

    >>> q, g = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    >>> exact_distances_of_topk(q, g, torch.tensor([[1, 0, -1]]))
    tensor([[1., 5., inf]])
    """
    out_dtype = out_dtype or distance_dtype(queries, galleries)
    valid = indices >= 0
    rows = torch.arange(len(indices), device=indices.device).repeat_interleave(indices.shape[1])
    squared = exact_sq_distances_of_pairs(queries, galleries, rows, indices.clamp_min(0).flatten())
    distances = squared.sqrt_().to(out_dtype).view(indices.shape)
    return distances.masked_fill_(~valid.to(distances.device), float("inf"))


def exact_cdist(queries: Tensor, galleries: Tensor) -> Tensor:
    """Dense ``[Q, G]`` exact distances (O(Q x G) memory: for references, tests and OML's dense API).

    >>> exact_cdist(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    tensor([[5., 1.]])
    """
    distances = torch.cdist(queries.double(), galleries.double(), compute_mode="donot_use_mm_for_euclid_dist")
    return distances.to(distance_dtype(queries, galleries))
