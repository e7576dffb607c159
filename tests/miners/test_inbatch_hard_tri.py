import pytest
import torch

from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from tests.utils.miners import as_set, n_hard_reference, pk_batch

SHAPES = [(2, 2), (3, 4), (8, 4), (5, 3)]


@pytest.mark.parametrize("p,k", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_triplets_equal_the_loops(p: int, k: int, seed: int) -> None:
    features, labels = pk_batch(p, k, seed, dim=8)
    ids = HardTripletsMiner().sample_ids(features, labels)
    assert as_set(ids) == n_hard_reference(features, labels.tolist(), 1, 1)
    assert len(ids[0]) == p * k


@pytest.mark.parametrize("p,k", SHAPES)
def test_hardness(p: int, k: int) -> None:
    features, labels = pk_batch(p, k, seed=5, dim=8)
    cdist = torch.cdist(features, features)
    ids_a, ids_p, ids_n = HardTripletsMiner().sample_ids(features, labels)
    same = labels[:, None] == labels[None, :]
    for a, pos, neg in zip(ids_a.tolist(), ids_p.tolist(), ids_n.tolist()):
        positives = same[a].clone()
        positives[a] = False
        assert torch.isclose(cdist[a, pos], cdist[a][positives].max())
        assert torch.isclose(cdist[a, neg], cdist[a][~same[a]].min())


def test_same_as_n_hard_1_1_and_irregular_batches() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        labels = torch.randint(0, 4, (11,), generator=g)
        features = torch.randn(11, 5, generator=g, dtype=torch.float64)
        hard = as_set(HardTripletsMiner().sample_ids(features, labels))
        n_hard = as_set(NHardTripletsMiner(1, 1).sample_ids(features, labels))
        assert hard == n_hard == n_hard_reference(features, labels.tolist(), 1, 1)


def test_sample_keeps_gradients_and_accepts_lists() -> None:
    features, labels = pk_batch(3, 2, seed=0, dim=8)
    features.requires_grad_(True)
    anchor, positive, negative = HardTripletsMiner().sample(features, labels.tolist())
    (anchor - positive + negative).sum().backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
