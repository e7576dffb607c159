"""What the extractor and the pairwise modules share: optimizer and scheduler set-up, epochs of batch
samplers, and freezing an ``IFreezable`` model for the first epochs."""

from typing import Any, Dict, Optional, Tuple, Union

import pytorch_lightning as pl
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from oml.interfaces.models import IFreezable
from oml.lightning.modules.ddp import set_batch_samplers_epoch

TScheduler = Union[LRScheduler, ReduceLROnPlateau]


class TrainableModule(pl.LightningModule):
    """Base of the oml modules; subclasses call ``set_model`` and ``set_optimization`` in their ``__init__``."""

    def set_model(
        self, model: nn.Module, criterion: Optional[nn.Module], freeze_n_epochs: int, keys: Tuple[str, str, str]
    ) -> None:
        """The model, its loss, how many first epochs it is frozen, and the input tensors / labels / embeddings keys."""
        if freeze_n_epochs > 0 and not isinstance(model, IFreezable):
            raise TypeError(f"freeze_n_epochs={freeze_n_epochs} needs an IFreezable model, got {type(model).__name__}.")
        self.model = model
        self.criterion = criterion
        self.freeze_n_epochs = freeze_n_epochs
        self.input_tensors_key, self.labels_key, self.embeddings_key = keys

    def set_optimization(
        self,
        optimizer: Optional[Optimizer],
        scheduler: Optional[TScheduler],
        scheduler_interval: str,
        scheduler_frequency: int,
        scheduler_monitor_metric: Optional[str],
    ) -> None:
        """The optimizer and the scheduler with Lightning's interval, frequency and monitored metric."""
        if scheduler is not None and optimizer is None:
            raise ValueError("A scheduler needs an optimizer.")
        if isinstance(scheduler, ReduceLROnPlateau) and scheduler_monitor_metric is None:
            raise ValueError("ReduceLROnPlateau needs scheduler_monitor_metric (e.g. 'OVERALL/cmc/1').")
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_frequency = scheduler_frequency
        self.monitor_metric = scheduler_monitor_metric

    def configure_optimizers(self) -> Any:
        if self.optimizer is None:
            raise ValueError(f"{type(self).__name__} was built without an optimizer, so it cannot be trained.")
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


__all__ = ["TrainableModule", "TScheduler"]
