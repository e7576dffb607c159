import time
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from oml.samplers._utils import Groups, sample_subsets
from oml.samplers.balance import BalanceSampler
from oml.utils.misc import set_global_seed


def random_labels(n_labels: int, min_count: int, max_count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.integers(min_count, max_count + 1, size=n_labels)
    labels = np.repeat(rng.permutation(10 * n_labels)[:n_labels], counts)  # non-contiguous label values
    return rng.permutation(labels)


def check_batch(batch, labels, n_labels, n_instances):
    assert len(batch) == n_labels * n_instances
    batch_labels = labels[batch]
    counts = Counter(batch_labels.tolist())
    assert len(counts) == n_labels
    assert set(counts.values()) == {n_instances}
    for label in counts:
        ids = [i for i in batch if labels[i] == label]
        available = int((labels == label).sum())
        if available >= n_instances:
            assert len(set(ids)) == n_instances  # no repeats when the label has enough samples
        else:
            assert set(ids) == set(np.flatnonzero(labels == label).tolist())  # all of them, plus repeats


@pytest.mark.parametrize("n_labels,n_instances", [(2, 2), (3, 4), (8, 5), (17, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_batches_are_p_x_k_and_epoch_covers_labels(n_labels: int, n_instances: int, seed: int) -> None:
    labels = random_labels(n_labels=50, min_count=2, max_count=9, seed=seed)
    sampler = BalanceSampler(labels, n_labels=n_labels, n_instances=n_instances, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 50 // n_labels
    assert sampler.batch_size == n_labels * n_instances
    used = []
    for batch in batches:
        assert all(isinstance(i, int) for i in batch)
        check_batch(batch, labels, n_labels, n_instances)
        used.extend(set(labels[batch].tolist()))
    assert len(used) == len(set(used)) == len(batches) * n_labels  # every label at most once per epoch


def test_all_labels_are_visited_over_epochs() -> None:
    labels = random_labels(n_labels=11, min_count=2, max_count=4, seed=3)
    sampler = BalanceSampler(labels, n_labels=3, n_instances=2, seed=0)
    seen = set()
    for _ in range(20):
        for batch in sampler:
            seen.update(labels[batch].tolist())
    assert seen == set(labels.tolist())


def test_deterministic_under_seed() -> None:
    labels = random_labels(n_labels=30, min_count=2, max_count=6, seed=0)
    set_global_seed(7)
    first = [list(BalanceSampler(labels, 4, 3)) for _ in range(2)]
    set_global_seed(7)
    second = [list(BalanceSampler(labels, 4, 3)) for _ in range(2)]
    assert first == second
    assert first[0] != first[1]  # the global state moved on

    own_1, own_2 = BalanceSampler(labels, 4, 3, seed=5), BalanceSampler(labels, 4, 3, seed=5)
    epochs_1, epochs_2 = [list(own_1) for _ in range(3)], [list(own_2) for _ in range(3)]
    assert epochs_1 == epochs_2
    assert epochs_1[0] != epochs_1[1]  # a new epoch is a new draw


def test_accepts_lists_arrays_tensors_and_strings() -> None:
    labels = [0, 0, 1, 1, 1, 2, 2]
    for given in (labels, np.array(labels), torch.tensor(labels)):
        batch = next(iter(BalanceSampler(given, n_labels=2, n_instances=2, seed=0)))
        check_batch(batch, np.array(labels), 2, 2)
    names = np.array(["cat", "cat", "dog", "dog", "owl", "owl"])
    batch = next(iter(BalanceSampler(list(names), n_labels=3, n_instances=2, seed=0)))
    assert Counter(names[batch].tolist()) == {"cat": 2, "dog": 2, "owl": 2}


def test_works_as_batch_sampler_of_a_dataloader() -> None:
    labels = torch.arange(6).repeat_interleave(3)
    dataset = TensorDataset(torch.randn(len(labels), 4), labels)
    loader = DataLoader(dataset, batch_sampler=BalanceSampler(labels, n_labels=3, n_instances=2, seed=0))
    batches = list(loader)
    assert len(batches) == 2
    for _, batch_labels in batches:
        assert sorted(Counter(batch_labels.tolist()).values()) == [2, 2, 2]


@pytest.mark.parametrize(
    "labels,n_labels,n_instances,error,match",
    [
        (
            [0, 0, 1, 1],
            3,
            2,
            ValueError,
            r"n_labels=3 is larger than the number of distinct labels in the dataset \(2\)",
        ),
        ([0, 0, 1, 1, 7], 2, 2, ValueError, r"label 7 has 1 sample"),
        ([0, 0, 1, 1], 1, 2, ValueError, "n_labels must be an integer >= 2"),
        ([0, 0, 1, 1], 2, 1, ValueError, "n_instances must be an integer >= 2"),
        ([0, 0, 1, 1], 2.0, 2, TypeError, "n_labels must be an integer"),
        ([], 2, 2, ValueError, "labels must not be empty"),
        ([[0, 0], [1, 1]], 2, 2, ValueError, "one-dimensional"),
    ],
)
def test_errors_name_the_problem(labels, n_labels, n_instances, error, match) -> None:
    with pytest.raises(error, match=match):
        BalanceSampler(labels, n_labels=n_labels, n_instances=n_instances)


def test_vectorised_setup_is_fast_on_a_million_samples() -> None:
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.arange(200_000), np.arange(200_000), rng.integers(0, 200_000, 600_000)])
    start = time.perf_counter()
    sampler = BalanceSampler(labels, n_labels=100, n_instances=4, seed=0)
    setup = time.perf_counter() - start
    batch = next(iter(sampler))
    assert len(batch) == 400
    # "well under a second" (benchmarks/bench_training_components.py measures it); generous bound for loaded CI machines
    assert setup < 3.0, setup


def test_groups_match_numpy_unique() -> None:
    rng = np.random.default_rng(0)
    for array in (rng.integers(-5, 5, 100), rng.integers(0, 10**12, 50), np.array(["b", "a", "b", "c"])):
        groups = Groups(array)
        values, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
        assert np.array_equal(groups.values, values)
        assert np.array_equal(groups.inverse, inverse.reshape(-1))
        assert np.array_equal(groups.counts, counts)
        assert np.array_equal(array[groups.order], np.repeat(values, counts))
        for g in range(len(values)):
            assert np.array_equal(np.sort(groups.members(g)), np.flatnonzero(array == values[g]))


def test_subsets_are_uniform() -> None:
    # Floyd's algorithm vectorised over rows: every 2-subset of 5 positions is equally likely
    rng = np.random.default_rng(0)
    n = 20_000
    picks = sample_subsets(rng, np.full(n, 5), k=2)
    assert (picks[:, 0] != picks[:, 1]).all()
    assert ((picks >= 0) & (picks < 5)).all()
    freq = Counter(tuple(sorted(row)) for row in picks.tolist())
    assert len(freq) == 10
    assert all(abs(count / n - 0.1) < 0.012 for count in freq.values()), freq


def test_subsets_of_small_sets_take_everything_then_repeat() -> None:
    rng = np.random.default_rng(0)
    picks = sample_subsets(rng, np.array([2, 3, 7]), k=5)
    assert set(picks[0].tolist()) == {0, 1}
    assert set(picks[1].tolist()) == {0, 1, 2}
    assert len(set(picks[2].tolist())) == 5
    assert (picks < np.array([2, 3, 7])[:, None]).all()


def test_set_epoch_reproduces_an_epoch_with_own_seed() -> None:
    labels = random_labels(n_labels=30, min_count=2, max_count=6, seed=1)
    sampler = BalanceSampler(labels, 4, 3, seed=11)
    epochs = [list(sampler) for _ in range(3)]
    resumed = BalanceSampler(labels, 4, 3, seed=11)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]
    assert list(resumed) != epochs[2]  # moved on to epoch 3 by itself


@pytest.mark.parametrize("own_seed", [None, 3])
def test_processes_of_ddp_draw_the_same_epoch(own_seed) -> None:
    from oml.ddp.patching import DDPSamplerWrapper

    labels = random_labels(n_labels=40, min_count=2, max_count=5, seed=2)
    # each "process" builds its own sampler; the wrapper gives each one its share of the same epoch
    wrappers = [
        DDPSamplerWrapper(BalanceSampler(labels, 4, 2, seed=own_seed), rank=rank, world_size=2) for rank in (0, 1)
    ]
    for epoch in range(2):
        shares = []
        for wrapper in wrappers:
            np.random.seed(1000 * wrapper.rank + epoch)  # whatever else the processes did with the global state
            wrapper.set_epoch(epoch)
            shares.append(list(wrapper))
        assert len(shares[0]) == len(shares[1]) == 5
        used = [label for share in shares for batch in share for label in set(labels[batch].tolist())]
        assert len(used) == len(set(used)) == 40  # together: one epoch, every label once
