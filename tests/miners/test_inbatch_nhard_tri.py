import pytest
import torch

from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.utils.checks import InvalidArgumentError
from tests.utils.miners import as_ranks, as_set, n_hard_reference, pk_batch

SHAPES = [(2, 3), (3, 4), (6, 5), (4, 2)]
RANGES = [1, 2, 3, (2, 3), (1, 2), (3, 10), (2, 2)]


@pytest.mark.parametrize("p,k", SHAPES)
@pytest.mark.parametrize("n_pos,n_neg", list(zip(RANGES, reversed(RANGES))))
def test_n_hard_triplets_equal_the_loops(p, k, n_pos, n_neg) -> None:
    features, labels = pk_batch(p, k, seed=p * 10 + k)
    ids = NHardTripletsMiner(n_positive=n_pos, n_negative=n_neg).sample_ids(features, labels)
    assert as_set(ids) == n_hard_reference(features, labels.tolist(), n_pos, n_neg)


@pytest.mark.parametrize("n_pos,n_neg", [((1, 2), (2, 5)), (2, (2, 5)), ((2, 3), (3, 4)), (3, 4), ((1, 1), (5, 5))])
def test_ranges_are_1_based_and_inclusive_as_in_oml(n_pos, n_neg) -> None:
    # OML 0.4.4: (a, b) takes the a-th to the b-th hardest, so with enough candidates for every anchor
    # sample() returns len(labels) * (b_pos - a_pos + 1) * (b_neg - a_neg + 1) triplets
    features, labels = pk_batch(4, 5, seed=3)  # 4 positives and 15 negatives per anchor
    (a_pos, b_pos), (a_neg, b_neg) = as_ranks(n_pos), as_ranks(n_neg)
    miner = NHardTripletsMiner(n_positive=n_pos, n_negative=n_neg)
    anchor, _, _ = miner.sample(features, labels)
    assert len(anchor) == len(labels) * (b_pos - a_pos + 1) * (b_neg - a_neg + 1)

    cdist = torch.cdist(features, features)
    ids_a, ids_p, ids_n = miner.sample_ids(features, labels)
    same = labels[:, None] == labels[None, :]
    for a in range(len(labels)):
        positives = same[a].clone()
        positives[a] = False
        pos_sorted = cdist[a][positives].sort(descending=True).values
        neg_sorted = cdist[a][~same[a]].sort().values
        mine = ids_a == a
        assert set(cdist[a, ids_p[mine]].tolist()) == set(pos_sorted[a_pos - 1 : b_pos].tolist())
        assert set(cdist[a, ids_n[mine]].tolist()) == set(neg_sorted[a_neg - 1 : b_neg].tolist())


def test_int_means_the_n_hardest_and_1_1_is_batch_hard() -> None:
    features, labels = pk_batch(4, 4, seed=7)
    assert as_set(NHardTripletsMiner(2, 3).sample_ids(features, labels)) == as_set(
        NHardTripletsMiner((1, 2), (1, 3)).sample_ids(features, labels)
    )
    assert as_set(NHardTripletsMiner(1, 1).sample_ids(features, labels)) == as_set(
        HardTripletsMiner().sample_ids(features, labels)
    )


def test_lists_from_yaml_and_errors() -> None:
    assert NHardTripletsMiner(n_positive=[1, 2]).positive_range == (1, 2)
    assert NHardTripletsMiner(n_negative=3).negative_range == (1, 3)
    with pytest.raises(InvalidArgumentError, match="n_positive must be a positive integer, got 0."):
        NHardTripletsMiner(n_positive=0)
    with pytest.raises(ValueError, match=r"n_negative as a range \(first, last\) of hardness ranks needs 1 <= first"):
        NHardTripletsMiner(n_negative=(3, 2))
    with pytest.raises(ValueError, match=r"1 is the hardest, both ends included\), got \(0, 2\)"):
        NHardTripletsMiner(n_negative=(0, 2))
    with pytest.raises(TypeError, match="n_positive must be a positive integer or a"):
        NHardTripletsMiner(n_positive="2")
    with pytest.raises(TypeError, match="n_positive must be a positive integer or a"):
        NHardTripletsMiner(n_positive=True)
