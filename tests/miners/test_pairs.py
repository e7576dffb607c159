import pytest
import torch

from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.pairs import PairsMiner
from tests.utils.miners import all_triplets_reference


def pairs_from_triplets(triplets):
    positives = {tuple(sorted((a, p))) for a, p, _ in triplets}
    negatives = {tuple(sorted((a, n))) for a, _, n in triplets}
    return positives, negatives


@pytest.mark.parametrize("hard_mining", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_are_the_unique_pairs_of_the_triplets(hard_mining: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (10,), generator=g)
    features = torch.randn(10, 3, generator=g, dtype=torch.float64)
    ids1, ids2, is_negative = PairsMiner(hard_mining=hard_mining).sample(features, labels)
    if hard_mining:
        triplets = list(zip(*(t.tolist() for t in HardTripletsMiner().sample_ids(features, labels))))
    else:
        triplets = all_triplets_reference(labels.tolist())
    positives, negatives = pairs_from_triplets(triplets)
    got = list(zip(ids1.tolist(), ids2.tolist(), is_negative.tolist()))
    assert len(got) == len(set(got))
    assert {(i, j) for i, j, neg in got if not neg} == positives
    assert {(i, j) for i, j, neg in got if neg} == negatives
    assert all(i < j for i, j, _ in got)
    assert all((labels[i] != labels[j]) == neg for i, j, neg in got)
