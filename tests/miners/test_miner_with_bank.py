import itertools

import pytest
import torch

from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.miners.miner_with_bank import MinerWithBank


def dist(x, i, j):
    return sum((float(x[i, d]) - float(x[j, d])) ** 2 for d in range(x.shape[1])) ** 0.5


def loops_reference(candidates, labels, batch_size, pos_range, neg_range):
    triplets = set()
    for a in range(batch_size):
        positives = sorted(
            (j for j in range(len(labels)) if j != a and labels[j] == labels[a]), key=lambda j: -dist(candidates, a, j)
        )
        negatives = sorted(
            (j for j in range(len(labels)) if labels[j] != labels[a]), key=lambda j: dist(candidates, a, j)
        )
        for p, n in itertools.product(positives[slice(*pos_range)], negatives[slice(*neg_range)]):
            triplets.add((a, p, n))
    return triplets


def row_ids(rows, table):
    return [int((table == row).all(dim=1).nonzero()[0]) for row in rows]


@pytest.mark.parametrize(
    "miner,ranges", [(NHardTripletsMiner(2, (1, 3)), ((0, 2), (1, 3))), (HardTripletsMiner(), ((0, 1), (0, 1)))]
)
def test_equal_to_the_loops_over_batch_and_bank(miner, ranges) -> None:
    bank_size = 2
    miner_with_bank = MinerWithBank(bank_size_in_batches=bank_size, miner=miner)
    history = []
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        labels = torch.randperm(5, generator=g)[:3].repeat_interleave(2)
        features = torch.randn(6, 4, generator=g, dtype=torch.float64)
        anchor, positive, negative = miner_with_bank.sample(features, labels)
        candidates = torch.cat([features] + [f for f, _ in history[-bank_size:]])
        candidate_labels = torch.cat([labels] + [lab for _, lab in history[-bank_size:]]).tolist()
        got = set(zip(row_ids(anchor, candidates), row_ids(positive, candidates), row_ids(negative, candidates)))
        assert got == loops_reference(candidates, candidate_labels, 6, *ranges)
        assert len(anchor) == len(got)
        assert set(miner_with_bank.last_logs) == {"n_triplets", "pos_from_bank", "neg_from_bank"}
        if step > 0:
            assert miner_with_bank.last_logs["neg_from_bank"] > 0  # random bank negatives are often the nearest
        history.append((features, labels))


def test_errors() -> None:
    with pytest.raises(TypeError, match="miner must be an NHardTripletsMiner or a HardTripletsMiner"):
        MinerWithBank(bank_size_in_batches=2, miner="hard")
    miner = MinerWithBank(bank_size_in_batches=2)
    miner.sample(torch.randn(4, 3), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="The bank stores features of dim 3, got a batch of dim 5"):
        miner.sample(torch.randn(4, 5), [0, 0, 1, 1])
