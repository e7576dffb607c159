"""Tensor helpers shared by the miners: labels as tensors, distance matrices for mining, masks."""

import inspect
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from oml.interfaces.miners import TLabels


def labels_to_tensor(
    labels: TLabels, device: Union[str, torch.device, None] = None, allow_non_integer: bool = True
) -> Tensor:
    """Labels (a list, an array or a tensor of ints, or any list of hashable values) as a 1d ``LongTensor``.

    Non-integer labels (e.g. strings) are replaced by their index among the sorted distinct values of
    this call (so only where labels are compared inside one batch; ``allow_non_integer=False`` raises).
    """
    if isinstance(labels, Tensor):
        tensor = labels.detach().reshape(-1)
        if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
            raise TypeError("labels must be integers, got a tensor with non-integer values.")
        return tensor.long().to(device) if device is not None else tensor.long()
    array = np.asarray(labels).reshape(-1)
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.array_equal(array, np.round(array)):
            array = array.astype(np.int64)
        elif allow_non_integer:
            array = np.unique(array, return_inverse=True)[1].reshape(-1)
        else:
            raise TypeError(f"labels must be integers here, got values of type {array.dtype}.")
    return torch.as_tensor(array.astype(np.int64), device=device)


def check_features_and_labels(features: Tensor, labels: Tensor) -> None:
    """Raise ``ValueError`` unless ``features`` is ``[B, D]`` and there is one label per row."""
    if features.ndim != 2:
        raise ValueError(f"features must be a matrix [batch_size, dim], got shape {tuple(features.shape)}.")
    if labels.shape[0] != features.shape[0]:
        raise ValueError(f"Got {features.shape[0]} feature vectors but {labels.shape[0]} labels.")


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


def n_hard_triplets(
    dist: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    pos_range: Tuple[int, int],
    neg_range: Tuple[int, int],
) -> Tuple[Tensor, Tensor, Tensor]:
    """For every anchor (row), the positives ranked ``pos_range`` and negatives ranked ``neg_range`` by hardness.

    Hardness rank 0 is the hardest: the farthest positive, the nearest negative. Every selected positive
    is combined with every selected negative of the same anchor. Anchors with fewer candidates use the
    ones they have; anchors without a positive or a negative in range give no triplets.

    Args:
        dist: ``[A, C]`` distances from anchors to candidates.
        pos_mask: ``[A, C]`` valid positives.
        neg_mask: ``[A, C]`` valid negatives.
        pos_range: ``(min, max)`` hardness ranks of the positives, ``max`` excluded.
        neg_range: the same for the negatives.

    Returns:
        ``(ids_anchor, ids_positive, ids_negative)``: row indices and column indices, ``LongTensor``s.
    """
    n_cols = dist.shape[1]
    k_pos, k_neg = min(pos_range[1], n_cols), min(neg_range[1], n_cols)
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    val_p, idx_p = torch.topk(torch.where(pos_mask, dist, -inf), k=k_pos, dim=1, largest=True)
    val_n, idx_n = torch.topk(torch.where(neg_mask, dist, inf), k=k_neg, dim=1, largest=False)
    val_p, idx_p = val_p[:, pos_range[0] :], idx_p[:, pos_range[0] :]
    val_n, idx_n = val_n[:, neg_range[0] :], idx_n[:, neg_range[0] :]
    valid = torch.isfinite(val_p).unsqueeze(2) & torch.isfinite(val_n).unsqueeze(1)
    ids_a, slot_p, slot_n = valid.nonzero(as_tuple=True)
    return ids_a, idx_p[ids_a, slot_p], idx_n[ids_a, slot_n]


def check_range(value: Union[int, Tuple[int, int]], name: str) -> Tuple[int, int]:
    """``n`` -> ``(0, n)``; ``(min, max)`` is checked (``0 <= min < max``) and returned as a tuple."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a (min, max) pair, got {value!r}.")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}.")
        return 0, int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
        low, high = int(value[0]), int(value[1])
        if not 0 <= low < high:
            raise ValueError(f"{name} as a range (min, max) needs 0 <= min < max, got {tuple(value)}.")
        return low, high
    raise TypeError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}.")


class RingBank:
    """A fixed-size memory of detached features and their labels, overwritten oldest first."""

    def __init__(self, size_in_batches: int):
        if isinstance(size_in_batches, bool) or not isinstance(size_in_batches, (int, np.integer)):
            raise TypeError(f"bank_size_in_batches must be an integer, got {size_in_batches!r}.")
        if size_in_batches < 1:
            raise ValueError(f"bank_size_in_batches must be positive, got {size_in_batches}.")
        self.size_in_batches = int(size_in_batches)
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
    "labels_to_tensor",
    "check_features_and_labels",
    "mining_distances",
    "same_label_masks",
    "n_hard_triplets",
    "check_range",
    "RingBank",
    "TLogs",
    "ReprMixin",
]
