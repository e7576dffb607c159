"""Batches of ``n_categories`` categories x ``n_labels`` labels x ``n_instances`` samples."""

import math
from typing import Any, Dict, Optional

import numpy as np

from oml.samplers._utils import CategoryBatchSampler, TLabelsInput, sample_members


class CategoryBalanceSampler(CategoryBatchSampler):
    """Batches of ``n_categories`` distinct categories, ``n_labels`` labels of each, ``n_instances`` samples per label.

    Batches are drawn independently of each other (labels repeat across the batches of an epoch);
    an epoch has ``ceil(n_unique_labels / n_labels)`` batches. Categories are chosen without
    replacement inside a batch, with probabilities proportional to their number of labels if
    ``weight_categories`` (else uniformly). Inside a category the labels are distinct; if a category
    has fewer than ``n_labels`` labels, ``resample_labels=True`` repeats some of its labels, otherwise
    such a category is an error. A label with fewer than ``n_instances`` samples is upsampled.

    Args:
        labels: the label of every sample.
        label2category: label -> category (``dataset.get_label2category()``); must cover every label.
        n_categories: categories per batch.
        n_labels: labels per category in a batch.
        n_instances: samples per label.
        resample_labels: allow repeating labels of categories that have fewer than ``n_labels`` labels.
        weight_categories: sample categories proportionally to their number of labels.
        seed: optional seed of the sampler's own generator, epoch ``e`` is drawn from ``(seed, e)``
            (default: numpy's global random state).

    >>> labels = [0, 0, 1, 1, 2, 2, 3, 3]
    >>> sampler = CategoryBalanceSampler(labels, {0: "a", 1: "a", 2: "b", 3: "b"}, 1, 2, 2, seed=0)
    >>> len(sampler), sampler.batch_size
    (2, 4)
    >>> sorted({labels[i] for i in next(iter(sampler))}) in ([0, 1], [2, 3])
    True
    """

    def __init__(
        self,
        labels: TLabelsInput,
        label2category: Dict[Any, Any],
        n_categories: int,
        n_labels: int,
        n_instances: int,
        resample_labels: bool = False,
        weight_categories: bool = True,
        seed: Optional[int] = None,
    ):
        advice = None if resample_labels else "decrease n_labels or pass resample_labels=True"
        self._set_up(labels, label2category, (n_categories, n_labels, n_instances), seed, advice)
        self.resample_labels = resample_labels
        self.weight_categories = weight_categories
        weights = self._categories.counts.astype(np.float64) if weight_categories else np.ones(len(self._categories))
        self._log_weights = np.log(weights / weights.sum())

    def __len__(self) -> int:
        return math.ceil(len(self._groups) / self.n_labels)

    def sample_epoch(self) -> np.ndarray:
        """All batches of one epoch as an array ``[len(self), batch_size]`` of sample indices."""
        rng = self._epoch_rng()
        n_batches = len(self)
        # weighted sampling of categories without replacement: Gumbel top-k
        keys = self._log_weights[None, :] + rng.gumbel(size=(n_batches, len(self._categories)))
        categories = np.argsort(-keys, axis=1)[:, : self.n_categories].reshape(-1)
        labels = sample_members(rng, self._categories, categories, self.n_labels).reshape(-1)
        ids = sample_members(rng, self._groups, labels, self.n_instances)
        return ids.reshape(n_batches, self.batch_size)


__all__ = ["CategoryBalanceSampler"]
