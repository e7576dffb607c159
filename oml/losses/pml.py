"""Use a pytorch-metric-learning (PML) loss as an OML criterion."""

import re
from typing import Any, Dict, Optional, Tuple

from torch import Tensor, nn

from oml.interfaces.miners import ITripletsMiner, ITripletsMinerInBatch, TLabels
from oml.miners.pml import PMLMiner, pml_indices_logs
from oml.utils.misc_torch import check_features_and_labels, labels_to_tensor


def _snake_case(name: str) -> str:
    name = re.sub(r"Loss$", "", name) or name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class PMLCriterion(nn.Module):
    """A PML loss with an optional miner, called like every OML criterion: ``criterion(embeddings, labels)``.

    The miner may be a PML miner (raw PML indices, pairs or triplets, go to the loss) or an OML
    in-batch miner (its triplets go to the loss). ``criterion_name`` is the snake-case name of the
    loss, e.g. ``multi_similarity`` for ``MultiSimilarityLoss`` (so training logs
    ``multi_similarity_loss``); ``last_logs`` holds the size of the mined set when there is a miner.
    Classification losses of PML (``ArcFaceLoss``, ``ProxyAnchorLoss``, ...) keep their weights as
    parameters of this module, so the optimizer of the pipeline trains them.

    Args:
        loss: an instance of a PML loss.
        miner: a PML miner, a ``PMLMiner`` or an OML ``ITripletsMinerInBatch``; or None.
        need_logs: fill ``last_logs``.

    >>> import torch
    >>> from pytorch_metric_learning.losses import MultiSimilarityLoss
    >>> from pytorch_metric_learning.miners import MultiSimilarityMiner
    >>> criterion = PMLCriterion(MultiSimilarityLoss(), miner=MultiSimilarityMiner())
    >>> criterion.criterion_name
    'multi_similarity'
    >>> criterion(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).ndim
    0
    """

    def __init__(self, loss: nn.Module, miner: Optional[Any] = None, need_logs: bool = True):
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(f"loss must be a PML loss (an nn.Module), got {type(loss).__name__}.")
        if miner is not None and not isinstance(miner, (PMLMiner, ITripletsMiner)):
            if not isinstance(miner, nn.Module):
                raise TypeError(f"miner must be a PML or an OML miner, got {type(miner).__name__}.")
            miner = PMLMiner(miner)
        if isinstance(miner, ITripletsMiner) and not isinstance(miner, ITripletsMinerInBatch):
            raise TypeError(
                f"{type(miner).__name__} does not return indices of the batch, so it cannot feed a PML loss; "
                f"use an in-batch miner (all/hard/n-hard triplets) or a PML miner."
            )
        self.loss = loss
        self.pml_miner = miner
        self.need_logs = need_logs
        self.criterion_name = _snake_case(type(loss).__name__)
        self.last_logs: Dict[str, float] = {}

    def _mine(self, features: Tensor, labels: Tensor) -> Optional[Tuple[Tensor, ...]]:
        if self.pml_miner is None:
            return None
        if isinstance(self.pml_miner, PMLMiner):
            return self.pml_miner.mine(features, labels)
        return self.pml_miner.sample_ids(features, labels)

    def forward(self, features: Tensor, labels: TLabels) -> Tensor:
        labels = labels_to_tensor(labels, device=features.device)
        check_features_and_labels(features, labels)
        indices = self._mine(features, labels)
        loss = self.loss(features, labels, indices)
        if self.need_logs and indices is not None:
            self.last_logs = pml_indices_logs(indices)
        return loss

    def extra_repr(self) -> str:
        return f"miner={self.pml_miner!r}" if self.pml_miner is not None else ""


__all__ = ["PMLCriterion"]
