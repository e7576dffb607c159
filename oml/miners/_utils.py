"""Tensor helpers shared by the miners: distance matrices for mining, masks, hardness ranks, a memory bank."""

import inspect
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from oml.utils.checks import InvalidArgumentError, check_int, is_int


@torch.no_grad()
def mining_distances(x: Tensor, y: Optional[Tensor] = None) -> Tensor:
    """Squared Euclidean distances ``[N, M]`` for mining (one GEMM, no gradient).

    Squaring keeps the order of distances, so the hardest pairs are the same as for ``torch.cdist``.
    """
    x = x.detach()
    y = x if y is None else y.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    sq_x = (x * x).sum(dim=1)
    sq_y = sq_x if y is x else (y * y).sum(dim=1)
    dist = torch.addmm(sq_y.unsqueeze(0), x, y.T, alpha=-2.0).add_(sq_x.unsqueeze(1))
    return dist.clamp_min_(0)


def same_label_masks(labels_a: Tensor, labels_c: Tensor, self_ids: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Positive and negative masks ``[A, C]`` between anchors and candidates.

    Args:
        labels_a: ``[A]`` labels of the anchors.
        labels_c: ``[C]`` labels of the candidates.
        self_ids: ``[A]`` the column of every anchor among the candidates (excluded from its positives),
            or ``None`` if the anchors are not among the candidates.
    """
    pos = labels_a.unsqueeze(1) == labels_c.unsqueeze(0)
    neg = ~pos
    if self_ids is not None:
        pos[torch.arange(len(labels_a), device=pos.device), self_ids] = False
    return pos, neg


@torch.no_grad()
def batch_distances_and_masks(features: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Mining distances ``[B, B]`` of a batch, its positive masks (the sample itself excluded) and negative masks."""
    dist = mining_distances(features)
    ids = torch.arange(len(labels), device=features.device)
    pos_mask, neg_mask = same_label_masks(labels, labels, self_ids=ids)
    return dist, pos_mask, neg_mask


def n_hard_triplets(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    pos_range: Tuple[int, int],
    neg_range: Tuple[int, int],
) -> Tuple[Tensor, Tensor, Tensor]:
    """For every anchor (row), the positives ranked ``pos_range`` and negatives ranked ``neg_range`` by hardness.

    Ranks are 1-based and both ends are included, as in OML 0.4.4: rank 1 is the hardest (the farthest
    positive, the nearest negative), ``(2, 5)`` means the 2nd to the 5th hardest. Every selected positive
    is combined with every selected negative of the same anchor. Anchors with fewer candidates use the
    ones they have; anchors without a positive or a negative in range give no triplets.

    Args:
        dist: ``[A, C]`` distances from anchors to candidates.
        pos_mask: ``[A, C]`` valid positives.
        neg_mask: ``[A, C]`` valid negatives.
        pos_range: ``(first, last)`` hardness ranks of the positives (see :func:`check_range`).
        neg_range: the same for the negatives.

    Returns:
        ``(ids_anchor, ids_positive, ids_negative)``: row indices and column indices, ``LongTensor``s.
    """
    n_cols = dist.shape[1]
    k_pos, k_neg = min(pos_range[1], n_cols), min(neg_range[1], n_cols)
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    val_p, idx_p = torch.topk(torch.where(pos_mask, dist, -inf), k=k_pos, dim=1, largest=True)
    val_n, idx_n = torch.topk(torch.where(neg_mask, dist, inf), k=k_neg, dim=1, largest=False)
    skip_p, skip_n = pos_range[0] - 1, neg_range[0] - 1
    val_p, idx_p = val_p[:, skip_p:], idx_p[:, skip_p:]
    val_n, idx_n = val_n[:, skip_n:], idx_n[:, skip_n:]
    valid = torch.isfinite(val_p).unsqueeze(2) & torch.isfinite(val_n).unsqueeze(1)
    ids_a, slot_p, slot_n = valid.nonzero(as_tuple=True)
    return ids_a, idx_p[ids_a, slot_p], idx_n[ids_a, slot_n]


def check_range(value: Any, name: str) -> Tuple[int, int]:
    """Hardness ranks as OML 0.4.4 reads them: ``n`` -> ``(1, n)``, the n hardest; ``(first, last)``, 1-based and
    inclusive (``(2, 5)``: from the 2nd hardest to the 5th one), checked and returned as a tuple.

    >>> check_range(3, "n_negative"), check_range([2, 5], "n_negative")
    ((1, 3), (2, 5))
    """
    if is_int(value):
        return 1, check_int(value, name)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        first, last = int(value[0]), int(value[1])
        if not 1 <= first <= last:
            raise InvalidArgumentError(
                f"{name} as a range (first, last) of hardness ranks needs 1 <= first <= last (1 is the hardest, "
                f"both ends included), got {tuple(value)}."
            )
        return first, last
    raise InvalidArgumentError(f"{name} must be a positive integer or a (first, last) pair of them, got {value!r}.")


class RingBank:
    """A fixed-size memory of detached features and their labels, overwritten oldest first."""

    def __init__(self, size_in_batches: int):
        self.size_in_batches = check_int(size_in_batches, "bank_size_in_batches")
        self.features: Optional[Tensor] = None
        self.labels: Optional[Tensor] = None
        self.ptr = 0
        self.n_filled = 0

    @property
    def capacity(self) -> int:
        return 0 if self.features is None else self.features.shape[0]

    def update(self, features: Tensor, labels: Tensor) -> None:
        """Write a batch (the capacity is ``size_in_batches`` x the size of the first batch)."""
        features = features.detach()
        if self.features is None:
            capacity = self.size_in_batches * features.shape[0]
            self.features = torch.zeros((capacity, features.shape[1]), dtype=features.dtype, device=features.device)
            self.labels = torch.zeros(capacity, dtype=torch.long, device=features.device)
        self.check_dim(features)
        if features.shape[0] > self.capacity:
            features, labels = features[-self.capacity :], labels[-self.capacity :]
        positions = (self.ptr + torch.arange(features.shape[0], device=self.features.device)) % self.capacity
        self.features[positions] = features.to(self.features)
        self.labels[positions] = labels.to(self.labels.device)
        self.ptr = int((self.ptr + features.shape[0]) % self.capacity)
        self.n_filled = min(self.capacity, self.n_filled + features.shape[0])

    def check_dim(self, features: Tensor) -> None:
        """Raise ``ValueError`` if ``features`` have another dimension than the stored ones."""
        if self.features is not None and features.shape[1] != self.features.shape[1]:
            raise ValueError(
                f"The bank stores features of dim {self.features.shape[1]}, got a batch of dim {features.shape[1]}."
            )

    def get(self) -> Tuple[Tensor, Tensor]:
        """The filled part of the bank: ``(features [M, D], labels [M])``."""
        if self.features is None:
            raise RuntimeError("The bank is empty.")
        return self.features[: self.n_filled], self.labels[: self.n_filled]


TLogs = Dict[str, float]


class ReprMixin:
    """``ClassName(arg=value, ...)`` built from the constructor arguments stored under the same names."""

    def __repr__(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))
        return f"{type(self).__name__}({args})"


__all__ = [
    "mining_distances",
    "same_label_masks",
    "batch_distances_and_masks",
    "n_hard_triplets",
    "check_range",
    "RingBank",
    "TLogs",
    "ReprMixin",
]
