from collections import Counter, defaultdict

import numpy as np
import pytest

from oml.samplers.category_balance import CategoryBalanceSampler
from oml.utils.misc import set_global_seed


def make_dataset(labels_per_category, seed=0):
    rng = np.random.default_rng(seed)
    labels, label2category, label = [], {}, 0
    for category, n in enumerate(labels_per_category):
        for _ in range(n):
            labels.extend([label] * int(rng.integers(2, 6)))
            label2category[label] = f"cat{category}"
            label += 1
    return np.array(labels), label2category


@pytest.mark.parametrize("n_categories,n_labels,n_instances", [(1, 2, 2), (2, 3, 2), (3, 2, 4)])
def test_batches_respect_categories(n_categories, n_labels, n_instances) -> None:
    labels, label2category = make_dataset([4, 5, 3, 6])
    sampler = CategoryBalanceSampler(labels, label2category, n_categories, n_labels, n_instances, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == int(np.ceil(len(label2category) / n_labels))
    for batch in batches:
        assert len(batch) == sampler.batch_size == n_categories * n_labels * n_instances
        counts = Counter(labels[batch].tolist())
        assert set(counts.values()) == {n_instances}
        by_category = defaultdict(set)
        for label in counts:
            by_category[label2category[label]].add(label)
        assert len(by_category) == n_categories
        assert all(len(v) == n_labels for v in by_category.values())


def test_categories_are_weighted_by_number_of_labels() -> None:
    labels, label2category = make_dataset([2, 8])
    weighted = CategoryBalanceSampler(labels, label2category, 1, 2, 2, weight_categories=True, seed=0)
    uniform = CategoryBalanceSampler(labels, label2category, 1, 2, 2, weight_categories=False, seed=0)

    def share_of_big_category(sampler):
        hits = [label2category[labels[batch[0]]] == "cat1" for _ in range(300) for batch in sampler]
        return np.mean(hits)

    assert abs(share_of_big_category(weighted) - 0.8) < 0.05
    assert abs(share_of_big_category(uniform) - 0.5) < 0.05


def test_resample_labels_repeats_labels_of_small_categories() -> None:
    labels, label2category = make_dataset([1, 5])
    with pytest.raises(ValueError, match="Category 'cat0' has only 1 label"):
        CategoryBalanceSampler(labels, label2category, 2, 2, 2)
    sampler = CategoryBalanceSampler(labels, label2category, 2, 2, 2, resample_labels=True, seed=0)
    for batch in sampler:
        assert len(batch) == 8
        assert {label2category[x] for x in labels[batch].tolist()} == {"cat0", "cat1"}


def test_deterministic_under_seed() -> None:
    labels, label2category = make_dataset([4, 5, 3])
    set_global_seed(3)
    first = list(CategoryBalanceSampler(labels, label2category, 2, 2, 2))
    set_global_seed(3)
    assert first == list(CategoryBalanceSampler(labels, label2category, 2, 2, 2))
    sampler_1 = CategoryBalanceSampler(labels, label2category, 2, 2, 2, seed=1)
    sampler_2 = CategoryBalanceSampler(labels, label2category, 2, 2, 2, seed=1)
    assert list(sampler_1) == list(sampler_2)


def test_errors() -> None:
    labels, label2category = make_dataset([3, 3])
    with pytest.raises(
        ValueError, match=r"n_categories=3 is larger than the number of categories in the dataset \(2\)"
    ):
        CategoryBalanceSampler(labels, label2category, 3, 2, 2)
    del label2category[4]
    with pytest.raises(ValueError, match=r"no category for 1 label\(s\), e.g. \[4\]"):
        CategoryBalanceSampler(labels, label2category, 1, 2, 2)
    with pytest.raises(ValueError, match="label 9 has 1 sample"):
        CategoryBalanceSampler([0, 0, 9], {0: "a", 9: "a"}, 1, 2, 2)
    with pytest.raises(TypeError, match="label2category must be a dict"):
        CategoryBalanceSampler([0, 0, 1, 1], None, 1, 2, 2)
