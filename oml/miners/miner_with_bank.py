"""N-hard mining over the batch plus a memory bank of previous batches."""

from typing import Union

import torch
from torch import Tensor

from oml.interfaces.miners import ITripletsMiner, TLabels, TTriplets
from oml.miners._utils import ReprMixin, RingBank, TLogs, mining_distances, n_hard_triplets, same_label_masks
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor


class MinerWithBank(ReprMixin, ITripletsMiner):
    """Anchors from the batch; their hard positives and negatives from the batch and a memory bank.

    The bank keeps the detached features and labels of the last ``bank_size_in_batches`` batches.
    Hardness ranks follow ``miner`` (an ``NHardTripletsMiner``, or ``HardTripletsMiner`` = ranks
    ``(1, 1)``), over the candidates "batch + bank". Gradients flow through the batch samples only.
    The bank is updated with the batch after mining. Labels must be integers.

    ``last_logs`` (if ``need_logs``) has OML 0.4.4's keys: ``positives_from_bank``,
    ``positives_from_batch``, ``negatives_from_bank`` and ``negatives_from_batch``, the shares of the
    mined positives / negatives taken from each (0 when nothing was mined).

    Args:
        bank_size_in_batches: the bank holds this many batches (of the size of the first batch).
        miner: defines how many hardest positives and negatives are taken per anchor.
        need_logs: fill ``last_logs``.

    >>> miner = MinerWithBank(bank_size_in_batches=2, miner=NHardTripletsMiner(1, 2))
    >>> anchor, positive, negative = miner.sample(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
    >>> anchor.shape
    torch.Size([12, 4])
    """

    def __init__(
        self,
        bank_size_in_batches: int,
        miner: Union[NHardTripletsMiner, HardTripletsMiner, None] = None,
        need_logs: bool = True,
    ):
        miner = NHardTripletsMiner() if miner is None else miner
        if isinstance(miner, HardTripletsMiner):
            self.positive_range, self.negative_range = (1, 1), (1, 1)
        elif isinstance(miner, NHardTripletsMiner):
            self.positive_range, self.negative_range = miner.positive_range, miner.negative_range
        else:
            raise TypeError(f"miner must be an NHardTripletsMiner or a HardTripletsMiner, got {type(miner).__name__}.")
        self.miner = miner
        self.bank = RingBank(bank_size_in_batches)
        self.bank_size_in_batches = self.bank.size_in_batches
        self.need_logs = need_logs
        self.last_logs: TLogs = {}

    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        labels = labels_to_tensor(labels, device=features.device, allow_non_integer=False)
        check_features_and_labels(features, labels)
        self.bank.check_dim(features)
        batch_size = len(labels)
        if self.bank.n_filled:
            bank_features, bank_labels = self.bank.get()
            candidates = torch.cat([features, bank_features.to(features.dtype)])
            candidate_labels = torch.cat([labels, bank_labels])
        else:
            candidates, candidate_labels = features, labels
        with torch.no_grad():
            dist = mining_distances(features, candidates)
            ids = torch.arange(batch_size, device=features.device)
            pos_mask, neg_mask = same_label_masks(labels, candidate_labels, self_ids=ids)
            ids_a, ids_p, ids_n = n_hard_triplets(dist, pos_mask, neg_mask, self.positive_range, self.negative_range)
        if self.need_logs:
            self.last_logs = {}
            for name, chosen in (("positives", ids_p), ("negatives", ids_n)):
                in_bank = (chosen >= batch_size).float()
                self.last_logs[f"{name}_from_bank"] = float(in_bank.mean()) if len(chosen) else 0.0
                self.last_logs[f"{name}_from_batch"] = float(1.0 - in_bank.mean()) if len(chosen) else 0.0
        self.bank.update(features, labels)
        return features[ids_a], candidates[ids_p], candidates[ids_n]


__all__ = ["MinerWithBank"]
