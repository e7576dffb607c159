"""LightningModule that trains an extractor with a metric-learning loss and returns embeddings for validation."""

from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.optim import Optimizer

from oml.const import EMBEDDINGS_KEY, INPUT_TENSORS_KEY, LABELS_KEY
from oml.interfaces.models import IExtractor
from oml.lightning.modules.base import TrainableModule, TScheduler
from oml.lightning.modules.ddp import ModuleDDP


class ExtractorModule(TrainableModule):
    """Trains ``extractor`` with ``criterion(embeddings, labels)``; validation adds embeddings to the batch.

    Logs ``<criterion_name>_loss`` (e.g. ``triplet_loss``), the criterion's ``last_logs`` and ``lr``.
    With ``freeze_n_epochs > 0`` an ``IFreezable`` extractor is frozen for the first epochs.
    """

    def __init__(
        self,
        extractor: IExtractor,
        criterion: Optional[nn.Module] = None,
        optimizer: Optional[Optimizer] = None,
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
        self.set_model(extractor, criterion, freeze_n_epochs, (input_tensors_key, labels_key, embeddings_key))
        self.set_optimization(optimizer, scheduler, scheduler_interval, scheduler_frequency, scheduler_monitor_metric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.criterion is None:
            raise ValueError("ExtractorModule was built without a criterion, so it cannot be trained.")
        embeddings = self.model(batch[self.input_tensors_key])
        loss = self.criterion(embeddings, batch[self.labels_key])
        batch_size = len(embeddings)
        name = getattr(self.criterion, "criterion_name", "criterion")
        self.log(f"{name}_loss", loss.detach(), prog_bar=True, batch_size=batch_size, on_step=True, on_epoch=True)
        for key, value in (getattr(self.criterion, "last_logs", None) or {}).items():
            self.log(key, float(value), batch_size=batch_size, on_step=True, on_epoch=True)
        if self.optimizer is not None:
            self.log("lr", self.optimizer.param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Any]:
        embeddings = self.model.extract(batch[self.input_tensors_key])
        return {**batch, self.embeddings_key: embeddings}

    def predict_step(self, batch: Dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Any]:
        return self.validation_step(batch, batch_idx, dataloader_idx)


class ExtractorModuleDDP(ModuleDDP, ExtractorModule):
    """``ExtractorModule`` that owns its loaders and patches them for DDP (see ``ModuleDDP``).

    Arguments: ``loaders_train``, ``loaders_val``, then those of ``ExtractorModule``.
    """


__all__ = ["ExtractorModule", "ExtractorModuleDDP"]
