"""``postprocessor_training_pipeline``: train a pairwise re-ranker (e.g. STIR's ``ConcatSiamese``) from a config.

The stages: (1) a frozen extractor embeds every image of the table (cached in
``embeddings_cache_dir/embeddings_<hash5>.pkl``); (2) a sampler forms batches of images with their embeddings,
pairs are mined by the embeddings and the pairwise model learns ``is_negative`` with ``BCEWithLogitsLoss``;
(3) validation re-ranks each query's top-n inside ``EmbeddingMetrics`` with the postprocessor that holds the
model being trained.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch.nn import BCEWithLogitsLoss
from torch.utils.data import DataLoader

from oml.const import EMBEDDINGS_KEY, TCfg
from oml.datasets.base import DatasetQueryGallery, DatasetWithLabels
from oml.inference.flat import inference_on_dataframe
from oml.lightning.callbacks.metric import MetricValCallback, MetricValCallbackDDP
from oml.lightning.modules.pairwise_postprocessing import PairwiseModule, PairwiseModuleDDP
from oml.lightning.pipelines.parser import (
    ConfigError,
    fit_by_config,
    initialize_logging,
    parse_engine_params_from_config,
    parse_metric_kwargs_from_config,
    parse_sampler_from_config,
    parse_scheduler_from_config,
    start_training,
)
from oml.lightning.pipelines.run_folder import lock_run_folder
from oml.metrics.embeddings import EmbeddingMetrics, EmbeddingMetricsDDP
from oml.miners.pairs import PairsMiner
from oml.registry.models import get_extractor_by_cfg
from oml.registry.optimizers import get_optimizer_by_cfg
from oml.registry.postprocessors import get_postprocessor_by_cfg
from oml.registry.transforms import get_transforms_by_cfg
from oml.retrieval.postprocessors.pairwise import PairwiseImagesPostprocessor
from oml.transforms.images.torchvision import get_normalisation_resize_torch
from oml.utils.misc import dictconfig_to_dict


def get_hash_of_extraction_stage_cfg(cfg: TCfg) -> str:
    """md5 of what the cached embeddings depend on in the config: ``extractor``, ``transforms_extraction``,
    ``dataframe_name`` and ``precision`` (nested keys sorted, so the order of keys does not matter).

    The cache file also stores a key of the extractor's actual weights, the transforms and the images
    (``oml.inference.flat.embeddings_cache_key``), so a stale file is never used even if the config is the same
    (e.g. ``weights`` pointing to a checkpoint that was overwritten).
    """
    cfg = dictconfig_to_dict(cfg)
    stage = {
        "extractor": cfg["extractor"],
        "transforms_extraction": cfg["transforms_extraction"],
        "dataframe_name": cfg["dataframe_name"],
        "precision": str(cfg.get("precision", 32)),
    }
    return hashlib.md5(json.dumps(stage, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _extraction_device(cfg: Dict[str, Any]) -> torch.device:
    accelerator = parse_engine_params_from_config(cfg)["accelerator"]
    return torch.device("cuda" if accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu")


def _cache_path(cfg: Dict[str, Any]) -> Optional[Path]:
    cache_dir = cfg.get("embeddings_cache_dir")
    if cache_dir is None:
        return None
    return Path(cache_dir) / f"embeddings_{get_hash_of_extraction_stage_cfg(cfg)[:5]}.pkl"


def get_loaders_with_embeddings(cfg: TCfg) -> Tuple[DataLoader, DataLoader]:
    """Embed the table with the frozen extractor (or read the cache) and build the loaders.

    The training loader yields batches of the sampler with images (``transforms_train``) and embeddings; the
    validation loader yields the validation rows with their embeddings (their images are not used for the
    metrics, so they are read at 8 x 8 pixels). Boxes of the table are used (OML 0.4.4 refused them).
    """
    cfg = dictconfig_to_dict(cfg)
    device = _extraction_device(cfg)
    extractor = get_extractor_by_cfg(cfg["extractor"]).to(device)
    emb_train, emb_val, df_train, df_val = inference_on_dataframe(
        dataset_root=cfg["dataset_root"],
        dataframe_name=cfg["dataframe_name"],
        extractor=extractor,
        transforms=get_transforms_by_cfg(cfg["transforms_extraction"]),
        output_cache_path=_cache_path(cfg),
        num_workers=cfg["num_workers"],
        batch_size=cfg["batch_size_inference"],
        use_fp16=str(cfg.get("precision", 32)) in ("16", "16-mixed"),
        verbose=cfg.get("show_dataset_warnings", True),
        allow_paths_outside_root=cfg.get("allow_paths_outside_root", False),
    )
    del extractor
    datasets = {
        "dataset_root": cfg["dataset_root"],
        "allow_paths_outside_root": cfg.get("allow_paths_outside_root", False),
    }

    train_dataset = DatasetWithLabels(
        df=df_train,
        transform=get_transforms_by_cfg(cfg["transforms_train"]),
        cache_size=cfg.get("cache_size", 0),
        extra_data={EMBEDDINGS_KEY: emb_train},
        **datasets,
    )
    valid_dataset = DatasetQueryGallery(
        df=df_val,
        transform=get_normalisation_resize_torch(im_size=8),
        extra_data={EMBEDDINGS_KEY: emb_val},
        **datasets,
    )
    sampler = parse_sampler_from_config(cfg, train_dataset)
    if sampler is None:
        raise ConfigError("The postprocessor pipeline needs a `sampler` (pairs are mined inside its batches).")
    loader_train = DataLoader(train_dataset, batch_sampler=sampler, num_workers=cfg["num_workers"])
    loader_val = DataLoader(
        valid_dataset, batch_size=cfg["batch_size_inference"], num_workers=cfg["num_workers"], shuffle=False
    )
    return loader_train, loader_val


def postprocessor_training_pipeline(cfg: TCfg) -> pl.Trainer:
    """Train the pairwise model of the ``postprocessor`` block (a ``pairwise_images`` postprocessor).

    See ``configs-0.4.4.md`` (section 4) for the keys; ``pipelines/mock/train_postprocessor.yaml`` is a small
    example. The best checkpoint (by ``metric_for_checkpointing`` with re-ranking) goes to
    ``<cwd>/checkpoints/best.ckpt``; ``ConcatSiamese(weights=...)`` loads it. Beyond OML: ``ckpt_path`` resumes,
    ``validate_before_training: True`` logs the metrics of the untrained re-ranker first; the trainer is returned.
    Under DDP with ``freeze_n_epochs > 0`` (or ``find_unused_parameters: True``) DDP is told that some parameters
    may take no part in the loss (the frozen backbone), which OML 0.4.4 did not do.
    """
    cfg, engine_params, is_ddp = start_training(cfg, "train_postprocessor")
    if is_ddp and (cfg.get("freeze_n_epochs", 0) > 0 or cfg.get("find_unused_parameters", False)):
        # a frozen backbone takes no part in the loss: DDP must be told to expect unused parameters
        engine_params["strategy"] = f"{engine_params['strategy']}_find_unused_parameters_true"
    with lock_run_folder(os.getcwd()):
        return _train(cfg, engine_params, is_ddp)


def _train(cfg: Dict[str, Any], engine_params: Dict[str, Any], is_ddp: bool) -> pl.Trainer:
    logger = initialize_logging(cfg)
    loader_train, loader_val = get_loaders_with_embeddings(cfg)
    postprocessor = get_postprocessor_by_cfg(cfg["postprocessor"])
    if not isinstance(postprocessor, PairwiseImagesPostprocessor):
        raise ConfigError(
            f"The postprocessor must be 'pairwise_images' (its model is trained on image pairs), got "
            f"{type(postprocessor).__name__}."
        )
    pairwise_model = postprocessor.model
    optimizer = get_optimizer_by_cfg(cfg["optimizer"], params=pairwise_model.parameters())
    module_kwargs = {
        "pairwise_model": pairwise_model,
        "pairs_miner": PairsMiner(hard_mining=cfg.get("hard_pairs_mining", True)),
        "criterion": BCEWithLogitsLoss(),
        "optimizer": optimizer,
        "freeze_n_epochs": cfg.get("freeze_n_epochs", 0),
        **parse_scheduler_from_config(cfg, optimizer),
    }
    dataset = loader_val.dataset
    metric_kwargs = parse_metric_kwargs_from_config(cfg, dataset, postprocessor)
    log_images = cfg.get("log_images", True)
    if is_ddp:
        module = PairwiseModuleDDP(loaders_train=loader_train, loaders_val=loader_val, **module_kwargs)
        callback = MetricValCallbackDDP(metric=EmbeddingMetricsDDP(**metric_kwargs), log_images=log_images)
    else:
        module = PairwiseModule(**module_kwargs)
        callback = MetricValCallback(metric=EmbeddingMetrics(**metric_kwargs), log_images=log_images)

    return fit_by_config(cfg, module, loader_train, loader_val, [callback], logger, engine_params)


__all__ = ["postprocessor_training_pipeline", "get_hash_of_extraction_stage_cfg", "get_loaders_with_embeddings"]
