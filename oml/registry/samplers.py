"""Batch samplers by name: ``SAMPLERS_REGISTRY``, ``get_sampler``, ``get_sampler_by_cfg``."""

from typing import Any, Dict, Type

from oml.interfaces.samplers import IBatchSampler
from oml.registry._base import build_from_registry, check_in_registry, parse_cfg
from oml.samplers.balance import BalanceSampler
from oml.samplers.category_balance import CategoryBalanceSampler
from oml.samplers.distinct_category_balance import DistinctCategoryBalanceSampler

SAMPLERS_CATEGORIES_BASED: Dict[str, Type[IBatchSampler]] = {
    "category_balance": CategoryBalanceSampler,
    "distinct_category_balance": DistinctCategoryBalanceSampler,
}

SAMPLERS_REGISTRY: Dict[str, Type[IBatchSampler]] = {**SAMPLERS_CATEGORIES_BASED, "balance": BalanceSampler}

# values that a pipeline knows only at run time; dropped when the sampler does not take them
RUNTIME_KWARGS = ("labels", "label2category")


def get_sampler(name: str, **kwargs: Any) -> IBatchSampler:
    """Build the sampler registered as ``name``; ``labels`` and ``label2category`` may always be passed.

    >>> get_sampler("balance", labels=[0, 0, 1, 1], label2category=None, n_labels=2, n_instances=2).batch_size
    4
    """
    runtime = {key: kwargs.pop(key) for key in RUNTIME_KWARGS if key in kwargs}
    return build_from_registry(SAMPLERS_REGISTRY, "sampler", name, kwargs, runtime)


def get_sampler_by_cfg(cfg: Any, **kwargs_runtime: Any) -> IBatchSampler:
    """Build a sampler from ``{"name": ..., "args": {...}}`` plus runtime ``labels`` (and ``label2category``)."""
    name, args = parse_cfg(cfg, "sampler")
    check_in_registry(name, SAMPLERS_REGISTRY, "sampler")
    if name in SAMPLERS_CATEGORIES_BASED and kwargs_runtime.get("label2category", args.get("label2category")) is None:
        raise ValueError(
            f"Sampler {name!r} balances categories, so it needs label2category (the dataset has no 'category' column?)."
        )
    return build_from_registry(SAMPLERS_REGISTRY, "sampler", name, args, kwargs_runtime)


__all__ = ["SAMPLERS_CATEGORIES_BASED", "SAMPLERS_REGISTRY", "RUNTIME_KWARGS", "get_sampler", "get_sampler_by_cfg"]
