"""Build Trainer arguments, a logger, a scheduler, a sampler and a checkpoint callback from a pipeline config."""

import os
from typing import Any, Dict, List, NamedTuple, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from oml.const import TCfg
from oml.interfaces.samplers import IBatchSampler
from oml.lightning.callbacks.checkpoint import (
    AtomicCheckpointIO,
    NonFiniteLossStop,
    RunCheckpoint,
    infer_checkpoint_mode,
)
from oml.lightning.pipelines.config_check import ConfigError, check_config
from oml.registry.loggers import get_logger_by_cfg
from oml.utils.misc import dictconfig_to_dict, flatten_dict, load_dotenv, set_global_seed


def require_keys(cfg: TCfg, *keys: str, where: str = "config") -> None:
    """Raise ``ConfigError`` naming every key of ``keys`` that ``cfg`` misses."""
    missing = [key for key in keys if key not in cfg]
    if missing:
        raise ConfigError(f"The {where} misses the required keys {missing}.")


def parse_engine_params_from_config(cfg: TCfg) -> Dict[str, Any]:
    """``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` for ``pl.Trainer``.

    ``devices`` may be a count or a list of device ids; more than one device means DDP, on CPU too
    (one process per device). ``accelerator: null`` picks the GPU when there is one. ``num_nodes > 1`` trains on
    several machines: start the same command on every node, with Lightning's cluster environment set
    (``torchrun``, SLURM, or ``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` by hand; see the README).
    """
    accelerator = cfg.get("accelerator") or ("gpu" if torch.cuda.is_available() else "cpu")
    devices = cfg.get("devices") or 1
    num_nodes = int(cfg.get("num_nodes") or 1)
    n_devices = len(devices) if isinstance(devices, (list, tuple)) else int(devices)
    if accelerator == "cpu" and isinstance(devices, (list, tuple)):
        devices = n_devices
    params: Dict[str, Any] = {"accelerator": accelerator, "devices": devices, "use_distributed_sampler": False}
    if num_nodes > 1:
        # every node runs the command itself, so its processes are started by the launcher, not spawned
        params.update(num_nodes=num_nodes, strategy="ddp")
    elif n_devices > 1:
        params["strategy"] = "ddp_spawn" if accelerator == "cpu" else "ddp"
    return params


def parse_precision(precision: Any, accelerator: str) -> str:
    """OML's ``precision: 32 | 16`` as a Lightning 2 precision; half precision on CPU becomes bfloat16."""
    value = str(precision)
    if value in ("32", "32-true"):
        return "32-true"
    if value in ("16", "16-mixed"):
        return "16-mixed" if accelerator in ("gpu", "cuda") else "bf16-mixed"
    if value in ("bf16", "bf16-mixed"):
        return "bf16-mixed"
    raise ConfigError(f"precision must be 32, 16 or bf16, got {precision!r}.")


def check_is_config_for_ddp(engine_params: Dict[str, Any]) -> bool:
    """True when the engine parameters start several processes."""
    return "ddp" in str(engine_params.get("strategy", ""))


def parse_logger_from_config(cfg: TCfg) -> Logger:
    """The ``logger`` block of the config, or TensorBoard in the working directory by default."""
    logger_cfg = cfg.get("logger")
    return TensorBoardLogger(".") if logger_cfg is None else get_logger_by_cfg(logger_cfg)


def initialize_logging(cfg: TCfg) -> Logger:
    """Build the logger and log the config's hyper-parameters, flattened with ``|`` (e.g. ``optimizer|args|lr``).

    MLflow does not accept ``|`` in names, so there the separator is ``/``.
    """
    logger = parse_logger_from_config(cfg)
    plain = dictconfig_to_dict(cfg)
    sep = "/" if isinstance(logger, MLFlowLogger) else "|"
    logger.log_hyperparams(flatten_dict({k: v for k, v in plain.items() if k != "hydra"}, sep=sep))
    return logger


def parse_scheduler_from_config(cfg: TCfg, optimizer: Optimizer) -> Dict[str, Any]:
    """Keyword arguments for the modules: ``scheduler``, its interval, frequency and monitored metric."""
    from oml.registry.schedulers import get_scheduler_by_cfg

    scheduling = cfg.get("scheduling")
    if not scheduling:
        return {}
    require_keys(scheduling, "scheduler", where="'scheduling' block")
    return {
        "scheduler": get_scheduler_by_cfg(scheduling["scheduler"], optimizer=optimizer),
        "scheduler_interval": scheduling.get("scheduler_interval", "step"),
        "scheduler_frequency": scheduling.get("scheduler_frequency", 1),
        "scheduler_monitor_metric": scheduling.get("monitor_metric"),
    }


def parse_metric_kwargs_from_config(cfg: TCfg, dataset: Any, postprocessor: Any = None) -> Dict[str, Any]:
    """The arguments of ``EmbeddingMetrics`` for a validation dataset: the item keys the plots and DDP need, the
    dataset's ``sequence`` key when its table has that column, the postprocessor, then ``metric_args``."""
    kwargs: Dict[str, Any] = {"extra_keys": (dataset.paths_key, dataset.index_key, *dataset.bboxes_keys)}
    if getattr(dataset, "sequence_key", None):
        kwargs["sequence_key"] = dataset.sequence_key
    if postprocessor is not None:
        kwargs["postprocessor"] = postprocessor
    return {**kwargs, **(cfg.get("metric_args") or {})}


def parse_sampler_from_config(cfg: TCfg, dataset: Any) -> Optional[IBatchSampler]:
    """The ``sampler`` block built over the dataset's labels (and categories), or None for ``sampler: null``."""
    from oml.registry.samplers import SAMPLERS_CATEGORIES_BASED, get_sampler_by_cfg

    sampler_cfg = cfg.get("sampler")
    if not sampler_cfg:
        return None
    label2category = dataset.get_label2category()
    if sampler_cfg["name"] in SAMPLERS_CATEGORIES_BASED and label2category is None:
        raise ConfigError(
            f"The sampler {sampler_cfg['name']!r} needs categories, but the table {cfg.get('dataframe_name')!r} "
            f"has no 'category' column. Use a table with categories or the 'balance' sampler."
        )
    runtime = {"labels": dataset.get_labels(), "label2category": label2category}
    if "seed" not in (sampler_cfg.get("args") or {}) and cfg.get("seed") is not None:
        # a per-epoch seed (seed + epoch) makes the batches of a resumed run equal to an uninterrupted one
        runtime["seed"] = cfg["seed"]
    return get_sampler_by_cfg(sampler_cfg, **runtime)


def parse_ckpt_callback_from_config(cfg: TCfg) -> RunCheckpoint:
    """``best.ckpt`` by ``metric_for_checkpointing`` and ``last.ckpt`` after every epoch, in ``<cwd>/checkpoints``.

    ``mode_for_checkpointing`` is ``max`` or ``min``; by default ``min`` for FNMR@FMR and ``max`` for the other
    metrics (OML 0.4.4 always maximised, so checkpointing on FNMR kept the worst epoch). See ``RunCheckpoint``.
    """
    require_keys(cfg, "metric_for_checkpointing")
    metric = cfg["metric_for_checkpointing"]
    mode = cfg.get("mode_for_checkpointing") or infer_checkpoint_mode(metric)
    return RunCheckpoint(dirpath=os.path.join(os.getcwd(), "checkpoints"), monitor=metric, mode=mode)


class TrainingSetup(NamedTuple):
    """What every training pipeline starts with (see ``start_training``)."""

    cfg: Dict[str, Any]
    engine_params: Dict[str, Any]
    is_ddp: bool


def start_training(cfg: TCfg, pipeline: str) -> TrainingSetup:
    """Check the config of a training ``pipeline`` (``check_config``), read ``.env`` and seed everything."""
    cfg = check_config(cfg, pipeline)
    load_dotenv()
    set_global_seed(cfg["seed"])
    engine_params = parse_engine_params_from_config(cfg)
    return TrainingSetup(cfg, engine_params, check_is_config_for_ddp(engine_params))


def fit_by_config(
    cfg: TCfg,
    module: pl.LightningModule,
    loader_train: DataLoader,
    loader_val: DataLoader,
    callbacks: List[Callback],
    logger: Logger,
    engine_params: Dict[str, Any],
) -> pl.Trainer:
    """Build the Trainer of a training pipeline and fit ``module``; returns the trainer.

    Adds the checkpoint callback (``RunCheckpoint``), the stop on a non-finite loss and atomic checkpoint
    files (``AtomicCheckpointIO``, which also verifies ``ckpt_path`` before resuming). Reads ``max_epochs``,
    ``valid_period``, ``precision``, ``lightning_trainer_extra_args``, ``validate_before_training`` and
    ``ckpt_path`` (resume). Under DDP the module owns its loaders (``ModuleDDP``), so none are passed to the
    Trainer.
    """
    extra = dict(cfg.get("lightning_trainer_extra_args") or {})
    trainer = pl.Trainer(
        max_epochs=cfg["max_epochs"],
        num_sanity_val_steps=0,
        check_val_every_n_epoch=cfg.get("valid_period", 1),
        precision=parse_precision(cfg.get("precision", 32), engine_params["accelerator"]),
        logger=logger,
        callbacks=[*callbacks, NonFiniteLossStop(), parse_ckpt_callback_from_config(cfg)],
        plugins=[AtomicCheckpointIO(resume_path=cfg.get("ckpt_path")), *(extra.pop("plugins", None) or [])],
        **engine_params,
        **extra,
    )
    is_ddp = check_is_config_for_ddp(engine_params)
    loaders = {} if is_ddp else {"train_dataloaders": loader_train, "val_dataloaders": loader_val}
    if cfg.get("validate_before_training", False):
        trainer.validate(model=module, dataloaders=loaders.get("val_dataloaders"), verbose=False)
    trainer.fit(model=module, ckpt_path=cfg.get("ckpt_path"), **loaders)
    return trainer


__all__ = [
    "TrainingSetup",
    "start_training",
    "fit_by_config",
    "ConfigError",
    "require_keys",
    "parse_engine_params_from_config",
    "parse_precision",
    "check_is_config_for_ddp",
    "parse_logger_from_config",
    "initialize_logging",
    "parse_scheduler_from_config",
    "parse_sampler_from_config",
    "parse_ckpt_callback_from_config",
]
