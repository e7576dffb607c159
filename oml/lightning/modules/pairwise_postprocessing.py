"""LightningModule that trains a pairwise model (a re-ranker) on pairs mined from precomputed embeddings."""

from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.optim import Optimizer

from oml.const import EMBEDDINGS_KEY, INPUT_TENSORS_KEY, LABELS_KEY
from oml.interfaces.models import IPairwiseModel
from oml.lightning.modules.base import TrainableModule, TScheduler
from oml.lightning.modules.ddp import ModuleDDP
from oml.miners.pairs import PairsMiner


class PairwiseModule(TrainableModule):
    """Trains ``pairwise_model`` to tell negative pairs from positive ones.

    Every training batch holds the images (``input_tensors_key``), their labels and their embeddings from a
    frozen extractor (``embeddings_key``). ``pairs_miner`` picks pairs by those embeddings, the model scores the
    image pairs and ``criterion(scores, is_negative)`` is minimised (``BCEWithLogitsLoss`` in the pipeline).
    Validation returns the batch unchanged: ``EmbeddingMetrics`` applies the re-ranker to the embeddings.
    Logs ``loss``, ``lr`` and the miner's pair counts. With ``freeze_n_epochs > 0`` an ``IFreezable`` model
    trains only its head for the first epochs.
    """

    def __init__(
        self,
        pairwise_model: IPairwiseModel,
        pairs_miner: PairsMiner,
        criterion: nn.Module,
        optimizer: Optimizer,
        scheduler: Optional[TScheduler] = None,
        scheduler_interval: str = "step",
        scheduler_frequency: int = 1,
        input_tensors_key: str = INPUT_TENSORS_KEY,
        labels_key: str = LABELS_KEY,
        embeddings_key: str = EMBEDDINGS_KEY,
        scheduler_monitor_metric: Optional[str] = None,
        freeze_n_epochs: int = 0,
    ):
        super().__init__()
        self.set_model(pairwise_model, criterion, freeze_n_epochs, (input_tensors_key, labels_key, embeddings_key))
        self.set_optimization(optimizer, scheduler, scheduler_interval, scheduler_frequency, scheduler_monitor_metric)
        self.miner = pairs_miner

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.model(x1, x2)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        embeddings = batch[self.embeddings_key]
        ids1, ids2, is_negative = self.miner.sample(features=embeddings, labels=batch[self.labels_key])
        if len(ids1) == 0:
            raise ValueError(
                "No pairs were mined from the batch: it needs at least two labels with two samples each "
                "(check the sampler)."
            )
        x = batch[self.input_tensors_key]
        scores = self.model(x[ids1], x[ids2])
        loss = self.criterion(scores, is_negative.to(scores.dtype))
        batch_size = len(embeddings)
        self.log("loss", loss.detach(), prog_bar=True, batch_size=batch_size, on_step=True, on_epoch=True)
        for key, value in (getattr(self.miner, "last_logs", None) or {}).items():
            self.log(key, float(value), batch_size=batch_size, on_step=True, on_epoch=True)
        self.log("lr", self.optimizer.param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Any]:
        return batch


class PairwiseModuleDDP(ModuleDDP, PairwiseModule):
    """``PairwiseModule`` that owns its loaders and patches them for DDP (see ``ModuleDDP``).

    Arguments: ``loaders_train``, ``loaders_val``, then those of ``PairwiseModule``.
    """


__all__ = ["PairwiseModule", "PairwiseModuleDDP"]
