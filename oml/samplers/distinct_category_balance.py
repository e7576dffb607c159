"""Category-balanced batches that use every label once per round."""

from typing import Any, Dict, List, Optional

import numpy as np

from oml.samplers._utils import CategoryBatchSampler, TLabelsInput, sample_members
from oml.utils.checks import check_int


class DistinctCategoryBalanceSampler(CategoryBatchSampler):
    """Batches of ``n_categories`` categories x ``n_labels`` labels x ``n_instances`` samples, labels not repeated.

    The labels of every category are shuffled and consumed without repetition: a batch takes the
    next ``n_labels`` unused labels of ``n_categories`` categories chosen uniformly among those that
    still have enough unused labels. When fewer than ``n_categories`` categories have enough labels
    left, a new round starts (all labels become unused again and are reshuffled). So inside a round
    no label is used twice. An epoch has ``epoch_size`` batches; every epoch starts a new round.

    Args:
        labels: the label of every sample.
        label2category: label -> category; must cover every label.
        n_categories: categories per batch.
        n_labels: labels per category in a batch; every category needs at least that many labels.
        n_instances: samples per label (labels with fewer samples are upsampled).
        epoch_size: batches per epoch.
        seed: optional seed of the sampler's own generator, epoch ``e`` is drawn from ``(seed, e)``
            (default: numpy's global random state).

    >>> labels = [0, 0, 1, 1, 2, 2, 3, 3]
    >>> sampler = DistinctCategoryBalanceSampler(labels, {0: 0, 1: 0, 2: 1, 3: 1}, 2, 1, 2, epoch_size=2, seed=0)
    >>> batches = list(sampler)
    >>> sorted(labels[i] for batch in batches for i in batch)
    [0, 0, 1, 1, 2, 2, 3, 3]
    """

    def __init__(
        self,
        labels: TLabelsInput,
        label2category: Dict[Any, Any],
        n_categories: int,
        n_labels: int,
        n_instances: int,
        epoch_size: int,
        seed: Optional[int] = None,
    ):
        self.epoch_size = check_int(epoch_size, "epoch_size")
        self._set_up(labels, label2category, (n_categories, n_labels, n_instances), seed, "decrease n_labels")

    def __len__(self) -> int:
        return self.epoch_size

    def _new_round(self, rng: np.random.Generator) -> List[np.ndarray]:
        return [rng.permutation(self._categories.members(c)) for c in range(len(self._categories))]

    def sample_epoch(self) -> np.ndarray:
        """All batches of one epoch as an array ``[len(self), batch_size]`` of sample indices."""
        rng = self._epoch_rng()
        queues = self._new_round(rng)
        pointers = np.zeros(len(self._categories), dtype=np.int64)
        chosen = np.empty((self.epoch_size, self.n_categories, self.n_labels), dtype=np.int64)
        for b in range(self.epoch_size):
            available = np.flatnonzero(self._categories.counts - pointers >= self.n_labels)
            if len(available) < self.n_categories:
                queues = self._new_round(rng)
                pointers[:] = 0
                available = np.arange(len(self._categories))
            for slot, c in enumerate(rng.choice(available, size=self.n_categories, replace=False)):
                chosen[b, slot] = queues[c][pointers[c] : pointers[c] + self.n_labels]
                pointers[c] += self.n_labels
        ids = sample_members(rng, self._groups, chosen.reshape(-1), self.n_instances)
        return ids.reshape(self.epoch_size, self.batch_size)


__all__ = ["DistinctCategoryBalanceSampler"]
