"""Tiny training runs on clustered Gaussian data: every miner (and a few other losses) must actually learn.

The data: class centres live in an 8-dim subspace, 24 more dims carry large noise, and everything is
rotated, so nearest neighbours in the raw space are poor. A small MLP trained with a BalanceSampler
must learn to project the noise away, which is measured on labels never seen in training.
"""

from typing import Any, Callable, Dict, Iterator, Tuple

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from oml.losses.triplet import TripletLossWithMiner
from oml.registry.losses import get_criterion
from oml.registry.miners import get_miner
from oml.samplers.balance import BalanceSampler
from oml.utils.misc import set_global_seed

N_TRAIN_LABELS, N_VAL_LABELS, N_PER_LABEL = 40, 20, 8
CHANCE = (N_PER_LABEL - 1) / (N_VAL_LABELS * N_PER_LABEL - 1)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    # tiny matrices: intra-op threads only add overhead (and contention on busy CI machines)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(n_labels: int, seed: int) -> Tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_labels, 8, generator=g)
    labels = torch.arange(n_labels).repeat_interleave(N_PER_LABEL)
    signal = centers[labels] + 0.25 * torch.randn(len(labels), 8, generator=g)
    noise = 1.5 * torch.randn(len(labels), 24, generator=g)
    rotation = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(123)))[0]
    return torch.cat([signal, noise], dim=1) @ rotation, labels


def cmc_at_1(embeddings: Tensor, labels: Tensor) -> float:
    """Brute-force leave-one-out CMC@1: is the nearest other sample of the same label?"""
    dist = torch.cdist(embeddings, embeddings)
    dist.fill_diagonal_(float("inf"))
    return float((labels[dist.argmin(dim=1)] == labels).float().mean())


def train(criterion_factory: Callable[[], nn.Module], epochs: int = 40) -> Dict[str, Any]:
    set_global_seed(0)
    x_train, y_train = make_data(N_TRAIN_LABELS, seed=0)
    x_val, y_val = make_data(N_VAL_LABELS, seed=1)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    criterion = criterion_factory()
    optimizer = torch.optim.Adam([*model.parameters(), *criterion.parameters()], lr=3e-3)
    sampler = BalanceSampler(y_train, n_labels=8, n_instances=4)
    with torch.no_grad():
        cmc_before = cmc_at_1(model(x_val), y_val)
    losses = []
    for _ in range(epochs):
        for batch in sampler:
            loss = criterion(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    with torch.no_grad():
        cmc_after = cmc_at_1(model(x_val), y_val)
    return {"losses": losses, "cmc_before": cmc_before, "cmc_after": cmc_after}


MINERS = {
    "all_triplets": {"max_output_triplets": 512},
    "hard_triplets": {},
    "n_hard_triplets": {"n_positive": 2, "n_negative": [1, 3]},
    "hard_cluster": {},
    "triplets_with_memory": {"bank_size_in_batches": 5, "tri_expand_k": 3},
    "miner_with_bank": {"bank_size_in_batches": 3, "miner": {"name": "n_hard_triplets", "args": {}}},
}


@pytest.mark.parametrize("miner_name", list(MINERS))
def test_each_miner_learns_with_balance_sampler(miner_name: str) -> None:
    result = train(lambda: TripletLossWithMiner(margin=0.5, miner=get_miner(miner_name, **MINERS[miner_name])))
    losses = result["losses"]
    assert len(losses) == 40 * (N_TRAIN_LABELS // 8)
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20]), (losses[:5], losses[-5:])
    assert result["cmc_after"] > CHANCE + 0.5, result["cmc_after"]
    assert result["cmc_after"] > result["cmc_before"] + 0.4, result


@pytest.mark.parametrize(
    "name,args",
    [
        ("surrogate_precision", {"k": 3, "temperature1": 0.5, "temperature2": 0.05}),
        ("arcface", {"in_features": 16, "num_classes": N_TRAIN_LABELS, "m": 0.2, "s": 16}),
        ("pml.MultiSimilarityLoss", {"miner": {"name": "pml.MultiSimilarityMiner"}}),
    ],
)
def test_other_criteria_learn(name: str, args: Dict[str, Any]) -> None:
    result = train(lambda: get_criterion(name, **args))
    losses = result["losses"]
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20]), (losses[:5], losses[-5:])
    assert result["cmc_after"] > CHANCE + 0.4, result["cmc_after"]
    assert result["cmc_after"] > result["cmc_before"] + 0.3, result
