from collections import Counter, defaultdict

import numpy as np
import pytest

from oml.samplers.distinct_category_balance import DistinctCategoryBalanceSampler
from oml.utils.misc import set_global_seed


def make_dataset(labels_per_category, seed=0):
    rng = np.random.default_rng(seed)
    labels, label2category, label = [], {}, 0
    for category, n in enumerate(labels_per_category):
        for _ in range(n):
            labels.extend([label] * int(rng.integers(2, 6)))
            label2category[label] = category
            label += 1
    return np.array(labels), label2category


@pytest.mark.parametrize("n_categories,n_labels,n_instances", [(1, 2, 2), (2, 2, 3), (3, 1, 2)])
def test_batches_and_no_repeated_label_inside_a_round(n_categories, n_labels, n_instances) -> None:
    labels, label2category = make_dataset([4, 6, 5, 3])
    sampler = DistinctCategoryBalanceSampler(labels, label2category, n_categories, n_labels, n_instances, 25, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 25
    used_in_round = set()
    n_rounds = 1
    for batch in batches:
        assert len(batch) == sampler.batch_size
        counts = Counter(labels[batch].tolist())
        assert set(counts.values()) == {n_instances}
        by_category = defaultdict(set)
        for label in counts:
            by_category[label2category[label]].add(label)
        assert len(by_category) == n_categories and all(len(v) == n_labels for v in by_category.values())
        if used_in_round & set(counts):  # a label came back: a new round must have started
            n_rounds += 1
            used_in_round = set()
        used_in_round |= set(counts)
    # a round lasts as long as n_categories categories keep n_labels unused labels
    assert n_rounds < 25


def test_a_round_uses_all_labels_when_they_divide_evenly() -> None:
    labels, label2category = make_dataset([4, 4])
    sampler = DistinctCategoryBalanceSampler(labels, label2category, 2, 2, 2, epoch_size=2, seed=0)
    used = [label for batch in sampler for label in set(labels[batch].tolist())]
    assert sorted(used) == list(range(8))


def test_deterministic_under_seed() -> None:
    labels, label2category = make_dataset([4, 5, 3])
    set_global_seed(0)
    first = list(DistinctCategoryBalanceSampler(labels, label2category, 2, 2, 2, 6))
    set_global_seed(0)
    assert first == list(DistinctCategoryBalanceSampler(labels, label2category, 2, 2, 2, 6))


def test_errors() -> None:
    labels, label2category = make_dataset([4, 1])
    with pytest.raises(ValueError, match=r"Category 1 has only 1 label\(s\), fewer than n_labels=2"):
        DistinctCategoryBalanceSampler(labels, label2category, 1, 2, 2, 5)
    with pytest.raises(ValueError, match="n_categories=3 is larger"):
        DistinctCategoryBalanceSampler(labels, label2category, 3, 1, 2, 5)
    with pytest.raises(ValueError, match="epoch_size must be a positive integer"):
        DistinctCategoryBalanceSampler(labels, label2category, 1, 1, 2, 0)
