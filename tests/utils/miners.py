"""Shared helpers of the miner and triplet-loss tests: random batches and slow loop references."""

import itertools
from typing import List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import Tensor

TTriplet = Tuple[int, int, int]
TRange = Union[int, Tuple[int, int]]


def pk_batch(p: int, k: int, seed: int, dim: int = 6, shuffle: bool = True) -> Tuple[Tensor, Tensor]:
    """Random float64 features of ``p`` labels x ``k`` samples (labels shuffled unless ``shuffle=False``)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)
    if shuffle:
        labels = labels[torch.randperm(p * k, generator=g)]
    return torch.randn(p * k, dim, generator=g, dtype=torch.float64), labels


def dist(x: Tensor, i: int, j: int, y: Optional[Tensor] = None) -> float:
    """Euclidean distance between row ``i`` of ``x`` and row ``j`` of ``y`` (default ``x``), by a python loop."""
    y = x if y is None else y
    return sum((float(x[i, d]) - float(y[j, d])) ** 2 for d in range(x.shape[1])) ** 0.5


def as_ranks(value: TRange) -> Tuple[int, int]:
    """OML 0.4.4 reads ``n_positive`` / ``n_negative`` so: ``n`` = the n hardest, ``(a, b)`` = the a-th to b-th."""
    return (1, value) if isinstance(value, int) else (value[0], value[1])


def n_hard_reference(
    x: Tensor, labels: Sequence[int], n_pos: TRange, n_neg: TRange, n_anchors: Optional[int] = None
) -> Set[TTriplet]:
    """Triplets of the n-hard miner by loops: for every anchor (the first ``n_anchors`` rows), its positives
    sorted from the farthest and its negatives from the nearest, ranks counted from 1, both ends included."""
    (p_first, p_last), (n_first, n_last) = as_ranks(n_pos), as_ranks(n_neg)
    triplets = set()
    for a in range(len(labels) if n_anchors is None else n_anchors):
        positives = sorted(
            (j for j in range(len(labels)) if j != a and labels[j] == labels[a]), key=lambda j: -dist(x, a, j)
        )
        negatives = sorted((j for j in range(len(labels)) if labels[j] != labels[a]), key=lambda j: dist(x, a, j))
        chosen_p, chosen_n = positives[p_first - 1 : p_last], negatives[n_first - 1 : n_last]
        triplets.update((a, p, n) for p, n in itertools.product(chosen_p, chosen_n))
    return triplets


def all_triplets_reference(labels: Sequence[int]) -> Set[TTriplet]:
    """Every valid triplet of a batch, by loops."""
    n = len(labels)
    return {
        (a, p, ng)
        for a, p, ng in itertools.product(range(n), repeat=3)
        if a != p and labels[a] == labels[p] and labels[a] != labels[ng]
    }


def as_set(ids: Sequence[Tensor]) -> Set[TTriplet]:
    """Index tensors ``(ids_a, ids_p, ids_n)`` as a set of triplets (checking there are no repeats)."""
    triplets = list(zip(*(t.tolist() for t in ids)))
    assert len(triplets) == len(set(triplets)), "the miner returned a triplet twice"
    return set(triplets)


def row_ids(rows: Tensor, table: Tensor) -> List[int]:
    """The position in ``table`` of every row of ``rows`` (rows are random floats, so unique)."""
    return [int((table == row).all(dim=1).nonzero()[0]) for row in rows]


__all__ = ["pk_batch", "dist", "as_ranks", "n_hard_reference", "all_triplets_reference", "as_set", "row_ids"]
