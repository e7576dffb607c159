"""Cross-batch memory: extra triplets whose negatives come from a bank of previous batches."""

from typing import Optional, Tuple

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMiner, TLabels
from oml.miners._utils import ReprMixin, RingBank, TLogs
from oml.miners.inbatch_all_tri import get_available_triplets
from oml.utils.checks import check_int
from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor


class TripletMinerWithMemory(ReprMixin, ITripletsMiner):
    """All triplets of the batch plus ``(tri_expand_k - 1)`` times as many with negatives from a memory bank.

    The bank keeps the (detached) features and labels of the last ``bank_size_in_batches`` batches
    (`Cross-batch memory, Wang et al. 2020 <https://arxiv.org/abs/1912.06798>`_). Original triplets are
    all the valid triplets of the batch; each extra triplet takes a random positive pair of the
    batch and a random bank sample of another label as the negative. ``tri_expand_k = 1`` means no
    extra triplets. The bank is updated with the batch after mining.

    Difference from OML 0.4.4: OML mined from a zero-initialised bank (fake samples of label 0)
    until it was full; here only the filled part is used, and on the very first batch the bank is
    seeded with that batch (so the number of triplets is always ``tri_expand_k * n_original``, as
    long as some other label exists). Labels must be integers (they are compared across batches).

    Args:
        bank_size_in_batches: the bank holds this many batches (of the size of the first batch).
        tri_expand_k: the total number of triplets is ``tri_expand_k`` x the number of original ones.

    >>> miner = TripletMinerWithMemory(bank_size_in_batches=2, tri_expand_k=3)
    >>> anchor, positive, negative, is_original = miner.sample(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
    >>> anchor.shape[0], int(is_original.sum())
    (24, 8)
    """

    def __init__(self, bank_size_in_batches: int, tri_expand_k: int):
        self.tri_expand_k = check_int(tri_expand_k, "tri_expand_k")
        self.bank = RingBank(bank_size_in_batches)
        self.bank_size_in_batches = self.bank.size_in_batches
        self.last_logs: TLogs = {}

    @property
    def bank_features(self) -> Optional[Tensor]:
        return None if self.bank.features is None else self.bank.get()[0]

    @property
    def bank_labels(self) -> Optional[Tensor]:
        return None if self.bank.labels is None else self.bank.get()[1]

    def update_bank(self, features: Tensor, labels: TLabels) -> None:
        """Write a batch into the bank (its features detached)."""
        self.bank.update(features, labels_to_tensor(labels, features.device, allow_non_integer=False))

    @staticmethod
    def get_pos_pairs(labels: Tensor, n: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """Positive pairs ``(i, j)``, ``i != j``, of a batch: all of them, or ``n`` drawn uniformly with replacement."""
        same = labels.unsqueeze(1) == labels.unsqueeze(0)
        same.fill_diagonal_(False)
        ids_1, ids_2 = same.nonzero(as_tuple=True)
        if n is None or len(ids_1) == 0:
            return ids_1, ids_2
        chosen = torch.randint(len(ids_1), (n,), device=labels.device)
        return ids_1[chosen], ids_2[chosen]

    @staticmethod
    def sample_negatives(anchor_labels: Tensor, bank_labels: Tensor) -> Tuple[Tensor, Tensor]:
        """For every anchor label, a uniformly random bank position with another label.

        Returns:
            ``(bank_ids, found)``: positions and whether the bank had any sample of another label.
        """
        sorted_labels, order = torch.sort(bank_labels, stable=True)
        start = torch.searchsorted(sorted_labels, anchor_labels, right=False)
        count_same = torch.searchsorted(sorted_labels, anchor_labels, right=True) - start
        n_other = len(bank_labels) - count_same
        found = n_other > 0
        offset = torch.floor(torch.rand(len(anchor_labels), device=bank_labels.device) * n_other).long()
        offset = torch.minimum(offset, (n_other - 1).clamp_min(0))
        position = torch.where(offset < start, offset, offset + count_same).clamp_max(max(len(bank_labels) - 1, 0))
        return order[position], found

    @staticmethod
    def take_tri_by_mask(ids_a: Tensor, ids_p: Tensor, mask_neg: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """For every pair ``(ids_a[i], ids_p[i])``, a uniformly random negative among the ``True`` columns of
        ``mask_neg[i]``; pairs without any allowed negative are dropped."""
        scores = torch.rand(mask_neg.shape, device=mask_neg.device).masked_fill_(~mask_neg, -1.0)
        found = mask_neg.any(dim=1)
        return ids_a[found], ids_p[found], scores.argmax(dim=1)[found]

    def sample(self, features: Tensor, labels: TLabels) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        """Mine triplets.

        Returns:
            ``(anchor, positive, negative, is_original_tri)``: features ``[T, D]`` and a boolean ``[T]``
            which is ``True`` for the triplets made of batch samples only.
        """
        labels = labels_to_tensor(labels, device=features.device, allow_non_integer=False)
        check_features_and_labels(features, labels)
        self.bank.check_dim(features)
        seeded = self.bank.n_filled == 0
        if seeded:
            self.update_bank(features, labels)
        ids_a, ids_p, ids_n = get_available_triplets(labels, device=features.device)
        n_extra = (self.tri_expand_k - 1) * len(ids_a)
        bank_features, bank_labels = self.bank.get()
        extra_a, extra_p = self.get_pos_pairs(labels, n_extra) if n_extra else (ids_a[:0], ids_a[:0])
        extra_n, found = self.sample_negatives(labels[extra_a], bank_labels)
        extra_a, extra_p, extra_n = extra_a[found], extra_p[found], extra_n[found]
        anchor = torch.cat([features[ids_a], features[extra_a]])
        positive = torch.cat([features[ids_p], features[extra_p]])
        negative = torch.cat([features[ids_n], bank_features[extra_n].to(features.dtype)])
        is_original = torch.zeros(len(anchor), dtype=torch.bool, device=features.device)
        is_original[: len(ids_a)] = True
        if not seeded:
            self.update_bank(features, labels)
        return anchor, positive, negative, is_original


__all__ = ["TripletMinerWithMemory"]
