"""Feed validation outputs into a metric, compute it once all samples arrived, log numbers and figures."""

from typing import Any, Dict, Optional

import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger
from torch.utils.data import DataLoader

from oml.const import LOG_IMAGE_FOLDER
from oml.ddp.patching import check_loaders_is_patched
from oml.interfaces.metrics import IBasicMetric, IMetricDDP, IMetricVisualisable
from oml.utils.misc import flatten_dict


def _n_samples_in_batch(outputs: Dict[str, Any]) -> int:
    for value in outputs.values():
        if hasattr(value, "__len__") and not isinstance(value, (str, bytes, dict)):
            return len(value)
    raise ValueError(f"Cannot tell the batch size from the validation outputs with keys {list(outputs)}.")


def _expected_samples(loader: DataLoader, samples_in_getitem: int) -> int:
    """How many samples this process will see: follows drop_last, custom batch samplers and DDP shares."""
    if loader.batch_sampler is not None:
        return samples_in_getitem * sum(len(batch) for batch in loader.batch_sampler)
    return samples_in_getitem * len(loader.dataset)


def figure_to_array(figure: plt.Figure) -> np.ndarray:
    """RGB ``uint8`` array ``H x W x 3`` of a matplotlib figure."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def log_figure(logger: Logger, figure: plt.Figure, title: str, step: int) -> None:
    """Log a figure to TensorBoard, Weights & Biases, Neptune or MLflow (other loggers are skipped)."""
    name = type(logger).__name__
    if name == "TensorBoardLogger":
        logger.experiment.add_figure(f"{LOG_IMAGE_FOLDER}/{title}", figure, global_step=step)
    elif name == "WandbLogger":
        logger.log_image(key=f"{LOG_IMAGE_FOLDER}/{title}", images=[figure_to_array(figure)], step=step)
    elif name == "NeptuneLogger":
        from neptune.types import File

        logger.experiment[f"{LOG_IMAGE_FOLDER}/{title}"].append(File.as_image(figure))
    elif name == "MLFlowLogger":
        logger.experiment.log_figure(logger.run_id, figure, f"{LOG_IMAGE_FOLDER}/{title}_epoch{step}.png")


class MetricValCallback(pl.Callback):
    """Runs ``metric`` over the outputs of validation loader ``loader_idx`` and logs the results.

    The metric is set up when the loader starts, fed with every batch's outputs (the batch plus the
    embeddings) and computed at the end of the validation epoch. If fewer or more samples arrived
    than the loader holds (``limit_val_batches``, ``overfit_batches``, a broken sampler), a
    ``ValueError`` says how many were expected and received. Metrics are logged flattened
    (``OVERALL/cmc/1``); with ``log_images`` the worst queries are drawn and sent to the logger.

    Args:
        metric: e.g. ``EmbeddingMetrics``.
        log_images: log the metric's figures (needs an ``IMetricVisualisable`` ready to visualise).
        loader_idx: which validation loader this callback listens to.
        samples_in_getitem: how many samples one dataset item holds (e.g. 3 for triplets).
    """

    def __init__(
        self, metric: IBasicMetric, log_images: bool = False, loader_idx: int = 0, samples_in_getitem: int = 1
    ):
        self.metric = metric
        self.log_images = log_images
        self.loader_idx = loader_idx
        self.samples_in_getitem = samples_in_getitem
        self._expected: Optional[int] = None
        self._collected = 0

    def _loader(self, trainer: pl.Trainer) -> DataLoader:
        loaders = trainer.val_dataloaders
        if isinstance(loaders, DataLoader):
            loaders = [loaders]
        elif isinstance(loaders, dict):
            loaders = list(loaders.values())
        return loaders[self.loader_idx]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._expected = _expected_samples(self._loader(trainer), self.samples_in_getitem)
        self._collected = 0
        self.metric.setup(num_samples=self._expected)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != self.loader_idx:
            return
        self._collected += _n_samples_in_batch(outputs)
        if self._collected > self._expected:
            raise ValueError(self._mismatch_message())
        self.metric.update_data(outputs)

    def _mismatch_message(self) -> str:
        return (
            f"Validation loader {self.loader_idx} was expected to give {self._expected} samples, but "
            f"{self._collected} arrived. Metrics need the whole validation set: do not use "
            f"limit_val_batches or overfit_batches with this callback."
        )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._collected != self._expected:
            raise ValueError(self._mismatch_message())
        self._sync()
        metrics = self.metric.compute_metrics()
        flat = {key: float(value) for key, value in flatten_dict(metrics).items()}
        pl_module.log_dict(flat, add_dataloader_idx=False)
        if self.log_images and trainer.is_global_zero:
            self._log_figures(trainer)

    def _sync(self) -> None:
        """Nothing to do in one process; the DDP subclass gathers the data here."""

    def _log_figures(self, trainer: pl.Trainer) -> None:
        if not isinstance(self.metric, IMetricVisualisable) or not self.metric.ready_to_visualize():
            return
        figures, titles = self.metric.visualize()
        for figure, title in zip(figures, titles):
            for logger in trainer.loggers:
                log_figure(logger, figure, title, step=trainer.current_epoch)
            plt.close(figure)


class MetricValCallbackDDP(MetricValCallback):
    """``MetricValCallback`` for DDP: every process gathers all processes' data before computing.

    The validation loaders must be patched with ``oml.ddp.patching.patch_dataloader_to_ddp`` (the
    DDP modules do it): otherwise every process would see the whole set and Lightning's own
    distributed sampler would pad it with duplicates.
    """

    def __init__(self, metric: IMetricDDP, *args: Any, **kwargs: Any):
        if not isinstance(metric, IMetricDDP):
            raise TypeError(f"MetricValCallbackDDP needs an IMetricDDP metric, got {type(metric).__name__}.")
        super().__init__(metric, *args, **kwargs)

    def _check_patched(self, trainer: pl.Trainer) -> None:
        if not check_loaders_is_patched(self._loader(trainer)):
            raise RuntimeError(
                "The validation loaders are not patched for DDP. Either:\n"
                "1) use ExtractorModuleDDP / PairwiseModuleDDP and pass the loaders to the module, not to the "
                "Trainer, or\n"
                "2) patch them yourself with oml.ddp.patching.patch_dataloader_to_ddp(loader, "
                "pad_data_to_num_gpus=False),\n"
                "and build the Trainer with use_distributed_sampler=False."
            )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_patched(trainer)
        super().on_validation_epoch_start(trainer, pl_module)

    def _sync(self) -> None:
        self.metric.sync()


__all__ = ["MetricValCallback", "MetricValCallbackDDP", "log_figure", "figure_to_array"]
