"""Optimizers by name (``torch.optim``): ``OPTIMIZERS_REGISTRY``, ``get_optimizer``, ``get_optimizer_by_cfg``."""

from typing import Any, Dict, Iterable, Optional, Type

from torch import optim

from oml.registry._base import build_by_cfg_for, build_from_registry

OPTIMIZERS_REGISTRY: Dict[str, Type[optim.Optimizer]] = {
    "adadelta": optim.Adadelta,
    "adagrad": optim.Adagrad,
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "adamax": optim.Adamax,
    "asgd": optim.ASGD,
    "lbfgs": optim.LBFGS,
    "rmsprop": optim.RMSprop,
    "rprop": optim.Rprop,
    "sgd": optim.SGD,
}


def get_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> optim.Optimizer:
    """Build the optimizer registered as ``name`` over ``params`` (parameters or parameter groups).

    >>> import torch
    >>> get_optimizer("adam", params=torch.nn.Linear(2, 2).parameters(), lr=1e-3).defaults["lr"]
    0.001
    """
    return build_from_registry(OPTIMIZERS_REGISTRY, "optimizer", name, {**kwargs, "params": params})


def get_optimizer_by_cfg(cfg: Any, params: Optional[Iterable[Any]] = None, **kwargs_runtime: Any) -> optim.Optimizer:
    """Build an optimizer from ``{"name": ..., "args": {...}}`` over ``params``.

    ``kwargs_runtime`` override the config's arguments (e.g. ``lr``) when the optimizer takes them.
    """
    return build_by_cfg_for(OPTIMIZERS_REGISTRY, "optimizer", cfg, "params", params, kwargs_runtime)


__all__ = ["OPTIMIZERS_REGISTRY", "get_optimizer", "get_optimizer_by_cfg"]
