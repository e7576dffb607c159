"""``extractor_training_pipeline``: train an extractor from a config (a dict or an OmegaConf config)."""

import os
from typing import Any, Dict, List, Tuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from oml.const import TCfg
from oml.datasets.base import DatasetQueryGallery, DatasetWithLabels, get_retrieval_datasets
from oml.lightning.callbacks.metric import MetricValCallback, MetricValCallbackDDP
from oml.lightning.modules.extractor import ExtractorModule, ExtractorModuleDDP
from oml.lightning.pipelines.parser import (
    ConfigError,
    fit_by_config,
    initialize_logging,
    parse_metric_kwargs_from_config,
    parse_sampler_from_config,
    parse_scheduler_from_config,
    start_training,
)
from oml.lightning.pipelines.run_folder import lock_run_folder
from oml.metrics.embeddings import EmbeddingMetrics, EmbeddingMetricsDDP
from oml.registry.losses import get_criterion_by_cfg
from oml.registry.models import get_extractor_by_cfg
from oml.registry.optimizers import get_optimizer_by_cfg
from oml.registry.transforms import get_transforms_by_cfg


def get_retrieval_loaders(cfg: TCfg) -> Tuple[DataLoader, DataLoader]:
    """The training loader (with the configured sampler, or shuffled ``bs_train`` batches) and the validation loader."""
    train_dataset, valid_dataset = _get_datasets(cfg)
    return _get_loaders(cfg, train_dataset, valid_dataset)


def _get_datasets(cfg: Dict[str, Any]) -> Tuple[DatasetWithLabels, DatasetQueryGallery]:
    return get_retrieval_datasets(
        dataset_root=cfg["dataset_root"],
        transforms_train=get_transforms_by_cfg(cfg["transforms_train"]),
        transforms_val=get_transforms_by_cfg(cfg["transforms_val"]),
        dataframe_name=cfg["dataframe_name"],
        cache_size=cfg.get("cache_size", 0),
        verbose=cfg.get("show_dataset_warnings", True),
        allow_paths_outside_root=cfg.get("allow_paths_outside_root", False),
    )


def _get_loaders(
    cfg: Dict[str, Any], train_dataset: DatasetWithLabels, valid_dataset: DatasetQueryGallery
) -> Tuple[DataLoader, DataLoader]:
    sampler = parse_sampler_from_config(cfg, train_dataset)
    num_workers = cfg["num_workers"]
    if sampler is None:
        if "bs_train" not in cfg:
            raise ConfigError("With `sampler: null` the config needs `bs_train` (the training batch size).")
        loader_train = DataLoader(
            train_dataset, batch_size=cfg["bs_train"], shuffle=True, drop_last=True, num_workers=num_workers
        )
    else:
        loader_train = DataLoader(train_dataset, batch_sampler=sampler, num_workers=num_workers)
    loader_val = DataLoader(valid_dataset, batch_size=cfg["bs_val"], shuffle=False, num_workers=num_workers)
    return loader_train, loader_val


def _optimizer_param_groups(cfg: Dict[str, Any], modules: List[torch.nn.Module]) -> List[Dict[str, Any]]:
    lr = cfg["optimizer"]["args"]["lr"]
    groups = [{"params": list(module.parameters()), "lr": lr} for module in modules]
    return [group for group in groups if group["params"]]


def extractor_training_pipeline(cfg: TCfg) -> pl.Trainer:
    """Train an extractor as the config says; the best checkpoint goes to ``<cwd>/checkpoints/best.ckpt``.

    See ``configs-0.4.4.md`` for the keys. Beyond OML: ``ckpt_path`` resumes training from a
    Lightning checkpoint (epoch, optimizer and scheduler state, best score); ``validate_before_training: True``
    computes the metrics of the initial model first (logged at step 0); the trainer is returned. The whole
    config is checked first (``check_config``), and the run folder (the working directory) is locked against
    other runs (``lock_run_folder``).
    """
    cfg, engine_params, is_ddp = start_training(cfg, "train")
    with lock_run_folder(os.getcwd()):
        return _train(cfg, engine_params, is_ddp)


def _train(cfg: Dict[str, Any], engine_params: Dict[str, Any], is_ddp: bool) -> pl.Trainer:
    logger = initialize_logging(cfg)
    train_dataset, valid_dataset = _get_datasets(cfg)
    loader_train, loader_val = _get_loaders(cfg, train_dataset, valid_dataset)

    extractor = get_extractor_by_cfg(cfg["extractor"])
    criterion = get_criterion_by_cfg(cfg["criterion"], label2category=train_dataset.get_label2category())
    optimizer = get_optimizer_by_cfg(cfg["optimizer"], params=_optimizer_param_groups(cfg, [extractor, criterion]))
    module_kwargs = {
        "extractor": extractor,
        "criterion": criterion,
        "optimizer": optimizer,
        "freeze_n_epochs": cfg.get("freeze_n_epochs", 0),
        **parse_scheduler_from_config(cfg, optimizer),
    }
    metric_kwargs = parse_metric_kwargs_from_config(cfg, valid_dataset)
    if is_ddp:
        module = ExtractorModuleDDP(loaders_train=loader_train, loaders_val=loader_val, **module_kwargs)
        metrics_callback = MetricValCallbackDDP(
            metric=EmbeddingMetricsDDP(**metric_kwargs), log_images=cfg.get("log_images", False)
        )
    else:
        module = ExtractorModule(**module_kwargs)
        metrics_callback = MetricValCallback(
            metric=EmbeddingMetrics(**metric_kwargs), log_images=cfg.get("log_images", False)
        )

    return fit_by_config(cfg, module, loader_train, loader_val, [metrics_callback], logger, engine_params)


__all__ = ["extractor_training_pipeline", "get_retrieval_loaders"]
