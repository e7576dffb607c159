"""Experiment loggers by name: ``LOGGERS_REGISTRY`` (tensorboard, wandb, neptune, mlflow)."""

import os
from typing import Any, Callable, Dict

from pytorch_lightning.loggers import Logger, MLFlowLogger, NeptuneLogger, TensorBoardLogger, WandbLogger

from oml.const import TCfg
from oml.registry._base import check_in_registry, parse_cfg


def _wandb(**kwargs: Any) -> WandbLogger:
    offline = kwargs.get("offline") or os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun")
    if not offline and not os.environ.get("WANDB_API_KEY"):
        raise ValueError(
            "The wandb logger needs an API key: set the WANDB_API_KEY environment variable (a .env file next to "
            "the project is read too), or log offline with `offline: True` in the logger args or WANDB_MODE=offline."
        )
    return WandbLogger(**kwargs)


def _neptune(**kwargs: Any) -> NeptuneLogger:
    offline = kwargs.get("mode") in ("offline", "debug") or os.environ.get("NEPTUNE_MODE") in ("offline", "debug")
    if not offline and not kwargs.get("api_key") and not os.environ.get("NEPTUNE_API_TOKEN"):
        raise ValueError(
            "The neptune logger needs an API token: set the NEPTUNE_API_TOKEN environment variable (a .env file "
            "next to the project is read too) or pass api_key, or log offline with `mode: offline` in the logger args."
        )
    kwargs.setdefault("log_model_checkpoints", False)
    return NeptuneLogger(**kwargs)


LOGGERS_REGISTRY: Dict[str, Callable[..., Logger]] = {
    "tensorboard": TensorBoardLogger,
    "wandb": _wandb,
    "neptune": _neptune,
    "mlflow": MLFlowLogger,
}


def get_logger(name: str, **kwargs: Any) -> Logger:
    """Build the logger registered as ``name``; an unknown name lists the available ones."""
    check_in_registry(name, LOGGERS_REGISTRY, "logger")
    return LOGGERS_REGISTRY[name](**kwargs)


def get_logger_by_cfg(cfg: TCfg) -> Logger:
    """Build a logger from ``{"name": ..., "args": {...}}``."""
    name, args = parse_cfg(cfg, "logger")
    return get_logger(name, **args)


__all__ = ["LOGGERS_REGISTRY", "get_logger", "get_logger_by_cfg"]
