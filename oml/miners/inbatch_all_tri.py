"""All valid triplets of a batch (optionally a random subset of them)."""

import sys
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMinerInBatch, TLabels
from oml.miners._utils import ReprMixin, TLogs
from oml.utils.checks import check_int
from oml.utils.misc_torch import labels_to_tensor

TIds = Tuple[Tensor, Tensor, Tensor]


def _sample_distinct(total: int, n: int, device: torch.device) -> Tensor:
    """``n`` distinct integers drawn uniformly from ``[0, total)``; memory ``O(n)`` for any ``total``.

    Draws are repeated only for the deficit left by collisions with earlier draws (rejection of
    repeats = sampling without replacement), so the result is a uniform ``n``-subset.
    """
    if total <= 4 * n:
        return torch.randperm(total, device=device)[:n]
    chosen = [torch.unique(torch.randint(total, (n,), device=device))]  # sorted blocks
    n_chosen = len(chosen[0])
    while n_chosen < n:
        draw = torch.unique(torch.randint(total, (n - n_chosen,), device=device))
        for block in chosen:
            position = torch.searchsorted(block, draw).clamp_max(len(block) - 1)
            draw = draw[block[position] != draw]
        if len(draw):
            chosen.append(draw)
            n_chosen += len(draw)
    return torch.cat(chosen)


def get_available_triplets(
    labels: TLabels, max_out_triplets: int = sys.maxsize, device: Union[str, torch.device] = "cpu"
) -> TIds:
    """All triplets ``(a, p, n)`` of a batch: ``a != p``, ``label[a] == label[p]``, ``label[a] != label[n]``.

    Vectorised: the ``B x B`` label mask gives the positive pairs, every pair is combined with the
    negatives of its anchor. If there are more than ``max_out_triplets`` triplets, a uniformly random
    subset of that size is returned; it is sampled directly, without listing all triplets first (so
    memory is ``O(B^2 + max_out_triplets)`` rather than ``O(B^3)``). When all triplets are returned, they
    come sorted by anchor, then positive, then negative.

    Args:
        labels: ``[B]`` labels of the batch.
        max_out_triplets: the maximal number of returned triplets.
        device: where to compute and return the indices.

    Returns:
        ``(ids_anchor, ids_positive, ids_negative)`` as ``LongTensor``s.

    >>> get_available_triplets([0, 0, 1])
    (tensor([0, 1]), tensor([1, 0]), tensor([2, 2]))
    """
    max_out_triplets = check_int(max_out_triplets, "max_out_triplets", minimum=0)
    labels = labels_to_tensor(labels, device=device)
    n = len(labels)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    n_negatives = n - same.sum(dim=1)
    ids_a, ids_p = (same & ~eye).nonzero(as_tuple=True)
    per_pair = n_negatives[ids_a]
    ends = per_pair.cumsum(0)
    total = int(ends[-1]) if len(ends) else 0
    empty = torch.empty(0, dtype=torch.long, device=labels.device)
    if total == 0 or max_out_triplets == 0:
        return empty, empty.clone(), empty.clone()
    # row a lists the negatives of anchor a first (in increasing order): a stable sort of the "same" mask
    negatives_table = torch.sort(same.to(torch.uint8), dim=1, stable=True).indices
    starts = ends - per_pair
    if total <= max_out_triplets:
        pair_of_tri = torch.repeat_interleave(torch.arange(len(ids_a), device=labels.device), per_pair)
        flat = torch.arange(total, device=labels.device)
    else:
        flat = _sample_distinct(total, int(max_out_triplets), labels.device)
        pair_of_tri = torch.searchsorted(ends, flat, right=True)
    offsets = flat - starts[pair_of_tri]
    anchors = ids_a[pair_of_tri]
    return anchors, ids_p[pair_of_tri], negatives_table.reshape(-1).index_select(0, anchors * n + offsets)


def get_available_triplets_naive(labels: TLabels, max_out_triplets: int = sys.maxsize) -> TIds:
    """Reference implementation of :func:`get_available_triplets` with explicit loops (slow, for tests).

    >>> get_available_triplets_naive([0, 0, 1])
    (tensor([0, 1]), tensor([1, 0]), tensor([2, 2]))
    """
    labels = labels_to_tensor(labels).tolist()
    triplets = [
        (a, p, n)
        for a, label_a in enumerate(labels)
        for p, label_p in enumerate(labels)
        for n, label_n in enumerate(labels)
        if a != p and label_a == label_p and label_a != label_n
    ]
    if len(triplets) > max_out_triplets:
        keep = torch.randperm(len(triplets))[:max_out_triplets].sort().values.tolist()
        triplets = [triplets[i] for i in keep]
    if not triplets:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty.clone(), empty.clone()
    ids = torch.tensor(triplets, dtype=torch.long)
    return ids[:, 0], ids[:, 1], ids[:, 2]


class AllTripletsMiner(ReprMixin, ITripletsMinerInBatch):
    """All valid triplets of the batch, randomly subsampled to at most ``max_output_triplets``.

    A P x K batch has ``P*K * (K-1) * (P-1)*K`` triplets (15.5M for 64 x 16): bound
    ``max_output_triplets`` for big batches.

    Args:
        max_output_triplets: the maximal number of triplets per batch.
        device: kept for compatibility with OML; mining runs on the device of the features.

    >>> miner = AllTripletsMiner()
    >>> anchor, positive, negative = miner.sample(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
    >>> anchor.shape
    torch.Size([8, 8])
    """

    def __init__(self, max_output_triplets: int = sys.maxsize, device: Optional[str] = "cpu"):
        self.max_output_triplets = check_int(max_output_triplets, "max_output_triplets")
        self.device = device
        self.last_logs: TLogs = {}

    def _sample(self, features: Tensor, labels: Tensor) -> TIds:
        return get_available_triplets(labels, self.max_output_triplets, device=features.device)


__all__ = ["AllTripletsMiner", "get_available_triplets", "get_available_triplets_naive"]
