"""Interfaces of triplet miners and the contract every in-batch miner keeps."""

from abc import ABC, abstractmethod
from typing import Any, List, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor

TTriplets = Tuple[Tensor, Tensor, Tensor]
TIds = Union[Tensor, List[int]]
TTripletsIds = Tuple[TIds, TIds, TIds]
TLabels = Union[List[int], Tensor, np.ndarray]


def labels2list(labels: TLabels) -> List[int]:
    """Convert labels given as a list, a tensor or an array into a list of ints."""
    if isinstance(labels, Tensor):
        return labels.squeeze().tolist() if labels.ndim > 1 else labels.tolist()
    if isinstance(labels, np.ndarray):
        return labels.tolist()
    return list(labels)


def check_triplets_ids(
    ids: Any, batch_size: int, device: torch.device, miner_name: str
) -> Tuple[Tensor, Tensor, Tensor]:
    """The output of a miner's ``_sample`` as three ``LongTensor``s on ``device``, after checking it.

    Checked: three 1d integer index sequences of equal length, every index in ``[0, batch_size)``,
    and no anchor equal to its positive (a triplet whose positive is the anchor itself teaches nothing).

    Raises:
        RuntimeError: naming the miner and what is wrong with its output.
    """
    if not isinstance(ids, (tuple, list)) or len(ids) != 3:
        got = f"{len(ids)} values" if isinstance(ids, (tuple, list)) else type(ids).__name__
        raise RuntimeError(f"{miner_name}._sample must return (ids_anchor, ids_positive, ids_negative), got {got}.")
    tensors = []
    for name, value in zip(("anchor", "positive", "negative"), ids):
        where = f"{miner_name}._sample returned {name} indices"
        if isinstance(value, Tensor) and (value.is_floating_point() or value.dtype == torch.bool):
            raise RuntimeError(f"{where} of dtype {value.dtype}, expected integers.")
        tensor = torch.as_tensor(value, dtype=torch.long, device=device)
        if tensor.ndim != 1:
            raise RuntimeError(f"{where} of shape {tuple(tensor.shape)}, expected a 1d sequence.")
        tensors.append(tensor)
    ids_a, ids_p, ids_n = tensors
    if not len(ids_a) == len(ids_p) == len(ids_n):
        raise RuntimeError(
            f"{miner_name}._sample returned {len(ids_a)} anchors, {len(ids_p)} positives and {len(ids_n)} negatives; "
            f"the three must have the same length."
        )
    if len(ids_a):
        bounds = [bound for t in tensors for bound in torch.aminmax(t)]
        figures = torch.stack([*bounds, torch.count_nonzero(ids_a == ids_p)]).tolist()  # one sync with the device
        low, high, n_same = min(figures[0:6:2]), max(figures[1:6:2]), figures[6]
        if low < 0 or high >= batch_size:
            raise RuntimeError(
                f"{miner_name}._sample returned indices in [{low}, {high}] for a batch of {batch_size} samples."
            )
        if n_same:
            raise RuntimeError(
                f"{miner_name}._sample returned {n_same} triplet(s) whose positive is the anchor itself."
            )
    return ids_a, ids_p, ids_n


class ITripletsMiner(ABC):
    """Forms triplets ``(anchor, positive, negative)`` of features from a batch."""

    @abstractmethod
    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        raise NotImplementedError


class ITripletsMinerInBatch(ITripletsMiner):
    """A miner that selects triplets inside the current batch by their indices.

    A subclass implements the mining, ``_sample(features, labels)``; everyone else calls the public
    methods, which keep the contract (as PML's ``BaseMiner`` does for its miners):
    ``sample_ids`` turns the labels (a list, an array or a tensor) into a 1d ``LongTensor`` on the
    device of ``features``, checks that there is one label per row, calls ``_sample`` and checks its
    output (see :func:`check_triplets_ids`); ``sample`` returns the features of those triplets. The
    losses call only these, so a subclass of a built-in miner is treated exactly like it.

    Difference from OML 0.4.4: ``_sample`` receives the labels as a ``LongTensor`` (OML passed a list;
    indexing and ``==`` work the same on both) and may return tensors or lists.
    """

    @abstractmethod
    def _sample(self, features: Tensor, labels: Tensor) -> TTripletsIds:
        """Return the indices ``(ids_anchor, ids_positive, ids_negative)`` of the mined triplets."""
        raise NotImplementedError

    def sample_ids(self, features: Tensor, labels: TLabels) -> Tuple[Tensor, Tensor, Tensor]:
        """The checked indices ``(ids_anchor, ids_positive, ids_negative)`` of the mined triplets, ``LongTensor``s."""
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        return check_triplets_ids(self._sample(features, labels), len(labels), features.device, type(self).__name__)

    def sample(self, features: Tensor, labels: TLabels) -> TTriplets:
        ids_a, ids_p, ids_n = self.sample_ids(features, labels)
        return features[ids_a], features[ids_p], features[ids_n]


__all__ = [
    "TTriplets",
    "TIds",
    "TTripletsIds",
    "TLabels",
    "labels2list",
    "check_triplets_ids",
    "ITripletsMiner",
    "ITripletsMinerInBatch",
]
