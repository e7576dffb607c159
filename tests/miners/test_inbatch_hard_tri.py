import pytest
import torch

from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner

SHAPES = [(2, 2), (3, 4), (8, 4), (5, 3)]


def dist(x, i, j):
    return sum((float(x[i, d]) - float(x[j, d])) ** 2 for d in range(x.shape[1])) ** 0.5


def loops_reference(x, labels):
    triplets = set()
    for a in range(len(labels)):
        positives = [j for j in range(len(labels)) if j != a and labels[j] == labels[a]]
        negatives = [j for j in range(len(labels)) if labels[j] != labels[a]]
        if positives and negatives:
            triplets.add((a, max(positives, key=lambda j: dist(x, a, j)), min(negatives, key=lambda j: dist(x, a, j))))
    return triplets


def batch(p, k, seed, dim=8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]
    return torch.randn(p * k, dim, generator=g, dtype=torch.float64), labels


@pytest.mark.parametrize("p,k", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_triplets_equal_the_loops(p: int, k: int, seed: int) -> None:
    features, labels = batch(p, k, seed)
    ids = HardTripletsMiner()._sample(features, labels)
    assert set(zip(*(t.tolist() for t in ids))) == loops_reference(features, labels.tolist())
    assert len(ids[0]) == p * k


@pytest.mark.parametrize("p,k", SHAPES)
def test_hardness(p: int, k: int) -> None:
    features, labels = batch(p, k, seed=5)
    cdist = torch.cdist(features, features)
    ids_a, ids_p, ids_n = HardTripletsMiner()._sample(features, labels)
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
        hard = set(zip(*(t.tolist() for t in HardTripletsMiner()._sample(features, labels))))
        n_hard = set(zip(*(t.tolist() for t in NHardTripletsMiner(1, 1)._sample(features, labels))))
        assert hard == n_hard == loops_reference(features, labels.tolist())


def test_sample_keeps_gradients_and_accepts_lists() -> None:
    features, labels = batch(3, 2, seed=0)
    features.requires_grad_(True)
    anchor, positive, negative = HardTripletsMiner().sample(features, labels.tolist())
    (anchor - positive + negative).sum().backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
