"""Batch samplers: pass them to ``DataLoader(dataset, batch_sampler=sampler)``."""

from oml.samplers.balance import BalanceSampler
from oml.samplers.category_balance import CategoryBalanceSampler
from oml.samplers.distinct_category_balance import DistinctCategoryBalanceSampler

__all__ = ["BalanceSampler", "CategoryBalanceSampler", "DistinctCategoryBalanceSampler"]
