import pytest
import torch

from oml.miners.inbatch_all_tri import AllTripletsMiner, get_available_triplets, get_available_triplets_naive
from tests.utils.miners import all_triplets_reference as loops_reference
from tests.utils.miners import as_set, pk_batch, row_ids

SHAPES = [(2, 2), (3, 4), (8, 4), (5, 3)]


def pk_labels(p, k, seed):
    return pk_batch(p, k, seed)[1]


@pytest.mark.parametrize("p,k", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_all_triplets_equal_the_loops(p: int, k: int, seed: int) -> None:
    labels = pk_labels(p, k, seed)
    expected = loops_reference(labels.tolist())
    ids = get_available_triplets(labels)
    assert len(ids[0]) == len(expected) == p * k * (k - 1) * (p - 1) * k
    assert as_set(ids) == expected
    assert as_set(get_available_triplets_naive(labels)) == expected


def test_irregular_batches() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        labels = torch.randint(0, 5, (13,), generator=g)
        assert as_set(get_available_triplets(labels)) == loops_reference(labels.tolist())
    for labels in ([0, 0, 0], [0, 1, 2], [3]):
        assert len(get_available_triplets(labels)[0]) == 0


@pytest.mark.parametrize("max_out", [1, 7, 50, 500])
def test_subsampling_returns_distinct_valid_triplets(max_out: int) -> None:
    torch.manual_seed(0)
    labels = pk_labels(4, 3, 0)
    expected = loops_reference(labels.tolist())
    ids = get_available_triplets(labels, max_out_triplets=max_out)
    got = list(zip(*(t.tolist() for t in ids)))
    assert len(got) == min(max_out, len(expected)) == len(set(got))
    assert set(got) <= expected


def test_subsampling_of_a_huge_set_is_uniform_enough() -> None:
    # 64 x 16 = 15.5M triplets: sample without listing them; check anchors are hit evenly
    torch.manual_seed(0)
    labels = torch.arange(64).repeat_interleave(16)
    ids_a, ids_p, ids_n = get_available_triplets(labels, max_out_triplets=100_000)
    assert len(ids_a) == 100_000
    assert (labels[ids_a] == labels[ids_p]).all() and (labels[ids_a] != labels[ids_n]).all() and (ids_a != ids_p).all()
    keys = (ids_a * 1024 + ids_p) * 1024 + ids_n
    assert len(torch.unique(keys)) == 100_000
    counts = torch.bincount(ids_a, minlength=1024).float()
    assert counts.std() / counts.mean() < 0.15  # expected ~0.1 for 1024 equally likely anchors


def test_miner_returns_features_of_triplets() -> None:
    features = torch.randn(6, 3, dtype=torch.float64)
    labels = [0, 0, 1, 1, 2, 2]
    anchor, positive, negative = AllTripletsMiner().sample(features, labels)
    expected = loops_reference(labels)
    got = set(zip(row_ids(anchor, features), row_ids(positive, features), row_ids(negative, features)))
    assert got == expected
    assert len(AllTripletsMiner(max_output_triplets=5).sample(features, labels)[0]) == 5


def test_errors() -> None:
    with pytest.raises(ValueError, match="features must be a matrix"):
        AllTripletsMiner().sample(torch.randn(4), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="Got 4 feature vectors but 3 labels"):
        AllTripletsMiner().sample(torch.randn(4, 2), [0, 0, 1])
    with pytest.raises(ValueError, match="max_output_triplets must be a positive integer, got 0."):
        AllTripletsMiner(max_output_triplets=0)


def test_distinct_sampling_by_rejection_is_uniform() -> None:
    from oml.miners.inbatch_all_tri import _sample_distinct

    torch.manual_seed(0)
    counts = torch.zeros(50)
    for _ in range(4000):
        drawn = _sample_distinct(50, 12, torch.device("cpu"))  # 50 > 4 * 12: the rejection path
        assert len(torch.unique(drawn)) == 12
        counts[drawn] += 1
    expected = 4000 * 12 / 50
    assert ((counts / expected - 1).abs() < 0.1).all()
