"""Vectorised helpers shared by the batch samplers (grouping of indices, sampling of subsets)."""

from abc import abstractmethod
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from oml.interfaces.samplers import IBatchSampler
from oml.utils.checks import check_int

TLabelsInput = Union[Sequence[Any], np.ndarray, torch.Tensor]


def labels_to_array(labels: TLabelsInput) -> np.ndarray:
    """Labels given as a list, an array or a tensor as a 1d numpy array."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got an array of shape {array.shape}.")
    if len(array) == 0:
        raise ValueError("labels must not be empty.")
    return array


class Groups:
    """Positions of a 1d array grouped by value, computed once (``O(N log N)``, no python loops).

    Attributes:
        values: the sorted distinct values ``[G]``.
        order: ``[N]`` positions sorted by value (stable): group ``g`` is ``order[starts[g]: starts[g] + counts[g]]``.
        starts: ``[G]`` where every group starts in ``order``.
        counts: ``[G]`` the size of every group.
        inverse: ``[N]`` the group of every position.
    """

    def __init__(self, array: np.ndarray):
        array = np.asarray(array)
        n = len(array)
        if n and np.issubdtype(array.dtype, np.integer) and int(array.max()) - int(array.min()) < 4 * n + 1024:
            # bounded integers: counting instead of sorting, O(N)
            low = int(array.min())
            shifted = array.astype(np.int64) - low
            counts_all = np.bincount(shifted)
            present = counts_all > 0
            self.values = np.flatnonzero(present) + low
            self.counts = counts_all[present]
            self.inverse = (np.cumsum(present) - 1)[shifted]
        else:
            self.values, self.inverse, self.counts = np.unique(array, return_inverse=True, return_counts=True)
            self.inverse = self.inverse.reshape(-1)
        if self.values.dtype != array.dtype and len(self.values):
            self.values = self.values.astype(array.dtype)
        # a stable sort of int32 group ids (torch's is several times faster than numpy's here)
        keys = torch.from_numpy(self.inverse.astype(np.int32 if len(self.counts) < 2**31 else np.int64))
        self.order = torch.sort(keys, stable=True).indices.numpy()
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.values)

    def members(self, group: int) -> np.ndarray:
        """Positions belonging to the group with index ``group``."""
        return self.order[self.starts[group] : self.starts[group] + self.counts[group]]


def sample_subsets(rng: np.random.Generator, sizes: np.ndarray, k: int) -> np.ndarray:
    """For every set size ``c`` in ``sizes``, choose ``k`` of the positions ``0 .. c - 1``.

    Positions are chosen without replacement when ``c >= k`` (uniformly over all ``k``-subsets, by
    Floyd's algorithm run on all rows at once); when ``c < k`` all ``c`` positions are taken and the
    remaining ``k - c`` are drawn with replacement. Cost ``O(len(sizes) * k^2)``, independent of ``c``.

    Returns:
        ``[len(sizes), k]`` int64 positions.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if (sizes < 1).any():
        raise ValueError("Cannot sample from an empty set.")
    n_rows = len(sizes)
    n_distinct = np.minimum(sizes, k)
    out = np.empty((n_rows, k), dtype=np.int64)
    for i in range(k):
        # Floyd: t runs over c - n .. c - 1; draw j in [0, t]; take t instead if j is already taken.
        t = sizes - n_distinct + i
        j = np.floor(rng.random(n_rows) * (t + 1)).astype(np.int64)
        j = np.minimum(j, t)
        taken = (out[:, :i] == j[:, None]).any(axis=1) if i > 0 else np.zeros(n_rows, dtype=bool)
        distinct = np.where(taken, t, j)
        repeated = np.minimum(np.floor(rng.random(n_rows) * sizes).astype(np.int64), sizes - 1)
        out[:, i] = np.where(i < n_distinct, distinct, repeated)
    return out


def sample_members(rng: np.random.Generator, groups: Groups, group_ids: np.ndarray, k: int) -> np.ndarray:
    """``k`` members of each group in ``group_ids`` (with repeats only for groups smaller than ``k``).

    Returns:
        ``[len(group_ids), k]`` positions of the grouped array.
    """
    group_ids = np.asarray(group_ids, dtype=np.int64)
    offsets = sample_subsets(rng, groups.counts[group_ids], k)
    return groups.order[groups.starts[group_ids][:, None] + offsets]


def make_rng(seed: Optional[int], epoch: int) -> np.random.Generator:
    """The generator for one epoch.

    With an explicit ``seed`` it is seeded by ``(seed, epoch)``, so an epoch can be reproduced alone
    (e.g. when training resumes); otherwise it is seeded from numpy's global state, so
    ``set_global_seed`` makes epochs reproducible (and equal on all DDP processes seeded alike).
    """
    if seed is not None:
        return np.random.default_rng((seed, epoch))
    return np.random.default_rng(np.random.randint(0, 2**31 - 1, size=4))


class EpochBatchSampler(IBatchSampler):
    """A batch sampler that draws a whole epoch at once with its own generator.

    ``sample_epoch`` returns the batches of one epoch as an array ``[len(self), batch_size]``;
    ``__iter__`` yields them as lists and moves to the next epoch by itself; ``set_epoch(epoch)`` works
    as in ``DistributedSampler``.
    """

    seed: Optional[int]
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the next iteration draws (it matters when the sampler has its own ``seed``)."""
        self.epoch = int(epoch)

    def _epoch_rng(self) -> np.random.Generator:
        rng = make_rng(self.seed, self.epoch)
        self.epoch += 1
        return rng

    @abstractmethod
    def sample_epoch(self) -> np.ndarray:
        """All batches of one epoch as an array ``[len(self), batch_size]`` of sample indices."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[List[int]]:
        for batch in self.sample_epoch():
            yield batch.tolist()


class CategoryBatchSampler(EpochBatchSampler):
    """The set-up shared by the samplers of ``n_categories`` x ``n_labels`` x ``n_instances`` batches."""

    n_categories: int
    n_labels: int
    n_instances: int

    def _set_up(
        self,
        labels: TLabelsInput,
        label2category: Dict[Any, Any],
        sizes: Tuple[Any, Any, Any],
        seed: Optional[int],
        too_few_labels_advice: Optional[str],
    ) -> None:
        """Check the arguments, group the samples by label and the labels by category.

        Args:
            sizes: ``(n_categories, n_labels, n_instances)``, checked to be positive integers.
            too_few_labels_advice: None skips the check that every category has ``n_labels`` labels;
                otherwise it ends the error message of that check.
        """
        n_categories, n_labels, n_instances = (
            check_int(value, name) for value, name in zip(sizes, ("n_categories", "n_labels", "n_instances"))
        )
        groups = Groups(labels_to_array(labels))
        check_enough_instances(groups, minimum=2)
        _, categories = group_labels_by_category(groups.values, label2category)
        if n_categories > len(categories):
            raise ValueError(
                f"n_categories={n_categories} is larger than the number of categories in the dataset "
                f"({len(categories)})."
            )
        if too_few_labels_advice is not None:
            small = categories.counts < n_labels
            if small.any():
                raise ValueError(
                    f"Category {categories.values[small][0].item()!r} has only {int(categories.counts[small][0])} "
                    f"label(s), fewer than n_labels={n_labels} ({int(small.sum())} category(ies) are too small); "
                    f"{too_few_labels_advice}."
                )
        self._groups, self._categories = groups, categories
        self.n_categories, self.n_labels, self.n_instances = n_categories, n_labels, n_instances
        self.seed = seed
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        """``n_categories * n_labels * n_instances``."""
        return self.n_categories * self.n_labels * self.n_instances


def check_enough_instances(groups: Groups, minimum: int = 2) -> None:
    """Every label needs ``minimum`` samples (a label with one sample has no positive pair)."""
    bad = groups.counts < minimum
    if bad.any():
        bad_labels = groups.values[bad].tolist()
        shown = ", ".join(str(x) for x in bad_labels[:10])
        more = f" and {len(bad_labels) - 10} more" if len(bad_labels) > 10 else ""
        raise ValueError(
            f"Every label needs at least {minimum} samples to form positive pairs, but {len(bad_labels)} label(s) "
            f"have fewer: {shown}{more} (e.g. label {bad_labels[0]!r} has {int(groups.counts[bad][0])} sample(s)). "
            f"Drop them from the dataset before building the sampler."
        )


def group_labels_by_category(label_values: np.ndarray, label2category: Dict[Any, Any]) -> Tuple[np.ndarray, Groups]:
    """Map every distinct label to its category.

    Args:
        label_values: the sorted distinct labels ``[L]``.
        label2category: label -> category; must cover every label (extra keys are ignored).

    Returns:
        ``category_of_label [L]`` (index into the categories) and the ``Groups`` of labels by category
        (its members are indices into ``label_values``).
    """
    if not isinstance(label2category, dict):
        raise TypeError(f"label2category must be a dict label -> category, got {type(label2category).__name__}.")
    keys = label_values.tolist()
    missing = [label for label in keys if label not in label2category]
    if missing:
        raise ValueError(
            f"label2category has no category for {len(missing)} label(s), e.g. {missing[:10]}. "
            f"Every label of the dataset needs a category."
        )
    categories = np.asarray([label2category[label] for label in keys])
    by_category = Groups(categories)
    return by_category.inverse, by_category


__all__ = [
    "TLabelsInput",
    "labels_to_array",
    "Groups",
    "sample_subsets",
    "sample_members",
    "make_rng",
    "EpochBatchSampler",
    "CategoryBatchSampler",
    "check_enough_instances",
    "group_labels_by_category",
]
