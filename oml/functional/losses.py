"""Loss-related tensor functions: reductions and the differentiable surrogate of precision@k."""

from typing import Literal

import torch
from torch import Tensor

TReduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``"mean"``, ``"sum"``, ``"none"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}.")


def get_reduced(tensor: Tensor, reduction: str) -> Tensor:
    """Reduce per-element losses.

    Args:
        tensor: losses of the elements.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (returned as is).

    >>> get_reduced(torch.tensor([1.0, 2.0, 6.0]), "mean")
    tensor(3.)
    >>> get_reduced(torch.tensor([1.0, 2.0, 6.0]), "sum")
    tensor(9.)
    """
    check_reduction(reduction)
    if reduction == "mean":
        return tensor.mean()
    if reduction == "sum":
        return tensor.sum()
    return tensor


def surrogate_precision(
    distances: Tensor,
    mask_gt: Tensor,
    k: int,
    t1: float = 1.0,
    t2: float = 0.01,
    reduction: str = "mean",
) -> Tensor:
    """A smooth (differentiable) version of precision@k.

    The hard rank of a gallery item ``j`` for query ``i`` is replaced by the soft rank
    ``rank_ij = sum_l sigmoid((d_ij - d_il) / t2)`` (which includes ``l = j``: a term ``0.5``),
    and the indicator ``rank_ij <= k`` by ``sigmoid((k - rank_ij) / t1)``:

    ``precision_i = sum_j sigmoid((k - rank_ij) / t1) * gt_ij / min(n_gt_i, k)``.

    Queries without any ground truth item would divide by zero; their precision is set to 0.

    Args:
        distances: ``[Q, G]`` distances between queries and gallery items.
        mask_gt: ``[Q, G]`` boolean mask of the relevant gallery items.
        k: the ``k`` of precision@k.
        t1: temperature of the "is in top k" sigmoid.
        t2: temperature of the pairwise comparison sigmoid (small = closer to the hard rank).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the queries.

    Returns:
        The (reduced) soft precision of every query.

    Memory is ``O(Q * G * G)`` (one sigmoid per query and pair of gallery items).

    >>> d = torch.tensor([[0.1, 0.2, 0.9], [0.8, 0.1, 0.2]])
    >>> gt = torch.tensor([[True, False, False], [False, False, True]])
    >>> surrogate_precision(d, gt, k=1, t2=0.001, t1=0.01, reduction="none").round(decimals=2)
    tensor([1., 0.])
    """
    if distances.ndim != 2 or distances.shape != mask_gt.shape:
        raise ValueError(
            f"distances and mask_gt must be matrices [Q, G] of the same shape, "
            f"got {tuple(distances.shape)} and {tuple(mask_gt.shape)}."
        )
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    if t1 <= 0 or t2 <= 0:
        raise ValueError(f"Temperatures must be positive, got t1={t1}, t2={t2}.")
    check_reduction(reduction)
    # diff[i, j, l] = d_ij - d_il
    diff = distances.unsqueeze(2) - distances.unsqueeze(1)
    rank = torch.sigmoid(diff / t2).sum(dim=2)
    in_top_k = torch.sigmoid((k - rank) / t1)
    mask = mask_gt.to(distances.dtype)
    n_gt = mask.sum(dim=1)
    denominator = torch.clamp(n_gt, max=k).clamp_min(1)
    precision = (in_top_k * mask).sum(dim=1) / denominator
    return get_reduced(precision, reduction)


__all__ = ["TReduction", "REDUCTIONS", "check_reduction", "get_reduced", "surrogate_precision"]
