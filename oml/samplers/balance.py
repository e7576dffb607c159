"""P x K batches: ``n_labels`` labels with ``n_instances`` samples each."""

from typing import Optional

import numpy as np

from oml.samplers._utils import (
    EpochBatchSampler,
    Groups,
    TLabelsInput,
    check_enough_instances,
    labels_to_array,
    sample_members,
)
from oml.utils.checks import check_int


class BalanceSampler(EpochBatchSampler):
    """Batches of ``n_labels`` distinct labels x ``n_instances`` samples of each (P x K sampling).

    Every epoch the labels are shuffled and cut into ``len(self) = n_unique_labels // n_labels``
    disjoint groups (the incomplete remainder is dropped), so each label appears in at most one batch
    per epoch. A label with at least ``n_instances`` samples contributes distinct samples; a label
    with fewer contributes all of them plus random repeats (sampling with replacement).

    Set-up and sampling are vectorised: building a sampler over 1,000,000 samples with 200,000
    labels takes a fraction of a second (OML 0.4.4 looped over the labels in python).

    Args:
        labels: the label of every sample of the dataset (``dataset.get_labels()``).
        n_labels: labels per batch (P), ``2 <= n_labels <= number of distinct labels``.
        n_instances: samples per label (K), at least 2.
        seed: optional seed of the sampler's own generator: epoch ``e`` is drawn from ``(seed, e)``
            (see ``set_epoch``); by default every epoch draws its seed from numpy's global random state
            (so ``set_global_seed`` makes runs reproducible).

    Raises:
        ValueError: if ``n_labels`` exceeds the number of labels or a label has a single sample.

    >>> sampler = BalanceSampler(labels=[0, 0, 1, 1, 1, 2, 2], n_labels=2, n_instances=2, seed=0)
    >>> len(sampler), sampler.batch_size
    (1, 4)
    >>> batch = next(iter(sampler))
    >>> len(batch), len({[0, 0, 1, 1, 1, 2, 2][i] for i in batch})
    (4, 2)
    """

    def __init__(self, labels: TLabelsInput, n_labels: int, n_instances: int, seed: Optional[int] = None):
        n_labels, n_instances = (
            check_int(n_labels, "n_labels", minimum=2),
            check_int(n_instances, "n_instances", minimum=2),
        )
        self._groups = Groups(labels_to_array(labels))
        if n_labels > len(self._groups):
            raise ValueError(
                f"n_labels={n_labels} is larger than the number of distinct labels in the dataset "
                f"({len(self._groups)}); decrease n_labels."
            )
        check_enough_instances(self._groups, minimum=2)
        self.n_labels, self.n_instances, self.seed = n_labels, n_instances, seed
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        """``n_labels * n_instances``."""
        return self.n_labels * self.n_instances

    def __len__(self) -> int:
        return len(self._groups) // self.n_labels

    def sample_epoch(self) -> np.ndarray:
        """All batches of one epoch as an array ``[len(self), batch_size]`` of sample indices."""
        rng = self._epoch_rng()
        n_batches = len(self)
        chosen_labels = rng.permutation(len(self._groups))[: n_batches * self.n_labels]
        ids = sample_members(rng, self._groups, chosen_labels, self.n_instances)
        return ids.reshape(n_batches, self.batch_size)


__all__ = ["BalanceSampler"]
