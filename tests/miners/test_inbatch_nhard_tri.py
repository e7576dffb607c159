import itertools

import pytest
import torch

from oml.miners.inbatch_nhard_tri import NHardTripletsMiner

SHAPES = [(2, 3), (3, 4), (6, 5), (4, 2)]
RANGES = [1, 2, 3, (1, 3), (0, 2), (2, 10)]


def dist(x, i, j):
    return sum((float(x[i, d]) - float(x[j, d])) ** 2 for d in range(x.shape[1])) ** 0.5


def as_range(value):
    return (0, value) if isinstance(value, int) else value


def loops_reference(x, labels, n_pos, n_neg):
    (p_lo, p_hi), (n_lo, n_hi) = as_range(n_pos), as_range(n_neg)
    triplets = set()
    for a in range(len(labels)):
        positives = sorted(
            (j for j in range(len(labels)) if j != a and labels[j] == labels[a]), key=lambda j: -dist(x, a, j)
        )
        negatives = sorted((j for j in range(len(labels)) if labels[j] != labels[a]), key=lambda j: dist(x, a, j))
        for p, n in itertools.product(positives[p_lo:p_hi], negatives[n_lo:n_hi]):
            triplets.add((a, p, n))
    return triplets


def batch(p, k, seed, dim=6):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]
    return torch.randn(p * k, dim, generator=g, dtype=torch.float64), labels


@pytest.mark.parametrize("p,k", SHAPES)
@pytest.mark.parametrize("n_pos,n_neg", list(zip(RANGES, reversed(RANGES))))
def test_n_hard_triplets_equal_the_loops(p, k, n_pos, n_neg) -> None:
    features, labels = batch(p, k, seed=p * 10 + k)
    ids = NHardTripletsMiner(n_positive=n_pos, n_negative=n_neg)._sample(features, labels)
    got = list(zip(*(t.tolist() for t in ids)))
    assert len(got) == len(set(got))
    assert set(got) == loops_reference(features, labels.tolist(), n_pos, n_neg)


def test_ranges_skip_the_hardest() -> None:
    features, labels = batch(4, 5, seed=3)
    cdist = torch.cdist(features, features)
    ids_a, ids_p, ids_n = NHardTripletsMiner(n_positive=(1, 3), n_negative=(2, 4))._sample(features, labels)
    same = labels[:, None] == labels[None, :]
    for a in range(len(labels)):
        positives = same[a].clone()
        positives[a] = False
        pos_sorted = cdist[a][positives].sort(descending=True).values
        neg_sorted = cdist[a][~same[a]].sort().values
        mine = ids_a == a
        assert set(cdist[a, ids_p[mine]].tolist()) == set(pos_sorted[1:3].tolist())
        assert set(cdist[a, ids_n[mine]].tolist()) == set(neg_sorted[2:4].tolist())
        assert mine.sum() == 4


def test_lists_from_yaml_and_errors() -> None:
    assert NHardTripletsMiner(n_positive=[1, 2]).positive_range == (1, 2)
    with pytest.raises(ValueError, match="n_positive must be positive"):
        NHardTripletsMiner(n_positive=0)
    with pytest.raises(ValueError, match=r"n_negative as a range \(min, max\) needs 0 <= min < max"):
        NHardTripletsMiner(n_negative=(3, 3))
    with pytest.raises(TypeError, match="n_positive must be an int or a"):
        NHardTripletsMiner(n_positive="2")
