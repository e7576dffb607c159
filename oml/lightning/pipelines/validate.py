"""``extractor_validation_pipeline``: retrieval metrics of an extractor (optionally with a re-ranker)."""

from typing import Any, Dict, Tuple

import pandas as pd
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from oml.const import SPLIT_COLUMN, TCfg
from oml.datasets.base import DatasetQueryGallery
from oml.lightning.callbacks.metric import MetricValCallback, MetricValCallbackDDP
from oml.lightning.modules.extractor import ExtractorModule, ExtractorModuleDDP
from oml.lightning.pipelines.config_check import check_config
from oml.lightning.pipelines.parser import (
    check_is_config_for_ddp,
    parse_engine_params_from_config,
    parse_metric_kwargs_from_config,
    parse_precision,
)
from oml.metrics.embeddings import EmbeddingMetrics, EmbeddingMetricsDDP
from oml.registry.models import get_extractor_by_cfg
from oml.registry.transforms import get_transforms_by_cfg
from oml.utils.dataframe_format import check_retrieval_dataframe_format


def extractor_validation_pipeline(cfg: TCfg) -> Tuple[pl.Trainer, Dict[str, Any]]:
    """Validate an extractor on the ``validation`` rows of the table; returns the trainer and the logged metrics.

    An optional ``postprocessor`` block re-ranks each query's top-n (e.g. with a pairwise model).
    """
    cfg = check_config(cfg, "validate")
    engine_params = parse_engine_params_from_config(cfg)
    is_ddp = check_is_config_for_ddp(engine_params)

    df = pd.read_csv(f"{cfg['dataset_root']}/{cfg['dataframe_name']}")
    outside = cfg.get("allow_paths_outside_root", False)
    check_retrieval_dataframe_format(
        df,
        dataset_root=cfg["dataset_root"],
        verbose=cfg.get("show_dataset_warnings", True),
        allow_paths_outside_root=outside,
    )
    df_val = df[df[SPLIT_COLUMN] == "validation"].reset_index(drop=True)
    dataset = DatasetQueryGallery(
        df_val,
        dataset_root=cfg["dataset_root"],
        transform=get_transforms_by_cfg(cfg["transforms_val"]),
        allow_paths_outside_root=outside,
    )
    loader = DataLoader(dataset, batch_size=cfg["bs_val"], num_workers=cfg["num_workers"], shuffle=False)

    extractor = get_extractor_by_cfg(cfg["extractor"])
    postprocessor = None
    if cfg.get("postprocessor"):
        from oml.registry.postprocessors import get_postprocessor_by_cfg

        postprocessor = get_postprocessor_by_cfg(cfg["postprocessor"])
    metric_kwargs = parse_metric_kwargs_from_config(cfg, dataset, postprocessor)
    if is_ddp:
        module = ExtractorModuleDDP(extractor=extractor, loaders_val=loader)
        callback = MetricValCallbackDDP(metric=EmbeddingMetricsDDP(**metric_kwargs))
    else:
        module = ExtractorModule(extractor=extractor)
        callback = MetricValCallback(metric=EmbeddingMetrics(**metric_kwargs))

    trainer = pl.Trainer(
        callbacks=[callback],
        precision=parse_precision(cfg.get("precision", 32), engine_params["accelerator"]),
        logger=False,
        **engine_params,
    )
    logs = trainer.validate(model=module, dataloaders=None if is_ddp else loader, verbose=True)
    return trainer, logs[0] if logs else {}


__all__ = ["extractor_validation_pipeline"]
