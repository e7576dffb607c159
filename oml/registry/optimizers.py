"""Optimizers by name (``torch.optim``): ``OPTIMIZERS_REGISTRY``, ``get_optimizer``, ``get_optimizer_by_cfg``."""

from typing import Any, Dict, Iterable, Optional, Type

from torch import optim

from oml.registry._base import build, check_in_registry, parse_cfg

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
    check_in_registry(name, OPTIMIZERS_REGISTRY, "optimizer")
    return build(OPTIMIZERS_REGISTRY[name], "optimizer", name, {**kwargs, "params": params})


def get_optimizer_by_cfg(cfg: Any, params: Optional[Iterable[Any]] = None, **kwargs_runtime: Any) -> optim.Optimizer:
    """Build an optimizer from ``{"name": ..., "args": {...}}`` over ``params``.

    ``kwargs_runtime`` override the config's arguments (e.g. ``lr``) when the optimizer takes them.
    """
    name, args = parse_cfg(cfg, "optimizer")
    if params is None:
        params = kwargs_runtime.pop("params", None)
    if params is None:
        raise ValueError(f"Optimizer {name!r} needs params (the parameters to optimise).")
    check_in_registry(name, OPTIMIZERS_REGISTRY, "optimizer")
    return build(OPTIMIZERS_REGISTRY[name], "optimizer", name, {**args, "params": params}, kwargs_runtime)


__all__ = ["OPTIMIZERS_REGISTRY", "get_optimizer", "get_optimizer_by_cfg"]
