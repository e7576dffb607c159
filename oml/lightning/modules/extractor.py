"""LightningModule that trains an extractor with a metric-learning loss and returns embeddings for validation."""

from typing import Any, Dict, Optional, Union

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from oml.const import EMBEDDINGS_KEY, INPUT_TENSORS_KEY, LABELS_KEY
from oml.interfaces.models import IExtractor, IFreezable
from oml.lightning.modules.ddp import ModuleDDP, TLoaders, set_batch_samplers_epoch


class ExtractorModule(pl.LightningModule):
    """Trains ``extractor`` with ``criterion(embeddings, labels)``; validation adds embeddings to the batch.

    Logs ``<criterion_name>_loss`` (e.g. ``triplet_loss``), the criterion's ``last_logs`` and ``lr``.
    With ``freeze_n_epochs > 0`` an ``IFreezable`` extractor is frozen for the first epochs.
    """

    def __init__(
        self,
        extractor: IExtractor,
        criterion: Optional[nn.Module] = None,
        optimizer: Optional[Optimizer] = None,
        scheduler: Optional[Union[LRScheduler, ReduceLROnPlateau]] = None,
        scheduler_interval: str = "step",
        scheduler_frequency: int = 1,
        input_tensors_key: str = INPUT_TENSORS_KEY,
        labels_key: str = LABELS_KEY,
        embeddings_key: str = EMBEDDINGS_KEY,
        scheduler_monitor_metric: Optional[str] = None,
        freeze_n_epochs: int = 0,
    ):
        super().__init__()
        if scheduler is not None and optimizer is None:
            raise ValueError("A scheduler needs an optimizer.")
        if isinstance(scheduler, ReduceLROnPlateau) and scheduler_monitor_metric is None:
            raise ValueError("ReduceLROnPlateau needs scheduler_monitor_metric (e.g. 'OVERALL/cmc/1').")
        if freeze_n_epochs > 0 and not isinstance(extractor, IFreezable):
            raise TypeError(
                f"freeze_n_epochs={freeze_n_epochs} needs an IFreezable extractor, got {type(extractor).__name__}."
            )
        self.model = extractor
        self.criterion = criterion
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_frequency = scheduler_frequency
        self.monitor_metric = scheduler_monitor_metric
        self.input_tensors_key = input_tensors_key
        self.labels_key = labels_key
        self.embeddings_key = embeddings_key
        self.freeze_n_epochs = freeze_n_epochs

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

    def configure_optimizers(self) -> Any:
        if self.optimizer is None:
            raise ValueError("ExtractorModule was built without an optimizer, so it cannot be trained.")
        if self.scheduler is None:
            return self.optimizer
        scheduler: Dict[str, Any] = {
            "scheduler": self.scheduler,
            "interval": self.scheduler_interval,
            "frequency": self.scheduler_frequency,
        }
        if isinstance(self.scheduler, ReduceLROnPlateau):
            scheduler["monitor"] = self.monitor_metric
        return {"optimizer": self.optimizer, "lr_scheduler": scheduler}

    def on_train_epoch_start(self) -> None:
        set_batch_samplers_epoch(self.trainer.train_dataloader, self.current_epoch)
        if self.freeze_n_epochs <= 0:
            return
        if self.current_epoch < self.freeze_n_epochs:
            self.model.freeze()
        else:
            self.model.unfreeze()


class ExtractorModuleDDP(ExtractorModule, ModuleDDP):
    """``ExtractorModule`` that owns its loaders and patches them for DDP (see ``ModuleDDP``)."""

    def __init__(
        self,
        loaders_train: Optional[TLoaders] = None,
        loaders_val: Optional[TLoaders] = None,
        *args: Any,
        **kwargs: Any,
    ):
        ExtractorModule.__init__(self, *args, **kwargs)
        self.set_loaders(loaders_train, loaders_val)


__all__ = ["ExtractorModule", "ExtractorModuleDDP"]
