import math

import pytest
import torch

from oml.losses.surrogate_precision import SurrogatePrecision


def loops_reference(x, labels, k, t1, t2):
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    n = len(labels)
    dist = [[math.dist(x[i], x[j]) for j in range(n)] for i in range(n)]
    losses = []
    for i in range(n):
        gt = [labels[j] == labels[i] for j in range(n)]  # the query itself included: always the first hit
        hits = 0.0
        for j in range(n):
            rank = sum(sig((dist[i][j] - dist[i][l]) / t2) for l in range(n))  # noqa: E741
            hits += sig((k + 1 - rank) / t1) * gt[j]
        losses.append(1 - hits / min(sum(gt), k + 1))
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("k,t1,t2", [(1, 1.0, 0.01), (3, 0.3, 0.1)])
def test_equal_to_the_loops(k, t1, t2) -> None:
    g = torch.Generator().manual_seed(k)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    criterion = SurrogatePrecision(k, temperature1=t1, temperature2=t2, reduction="none")
    loss = criterion(x, labels)
    assert torch.allclose(loss, loops_reference(x.tolist(), labels, k, t1, t2))
    assert torch.isclose(SurrogatePrecision(k, t1, t2)(x, labels), loss.mean())
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_loss_decreases_when_the_batch_is_better_clustered() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    tight = torch.tensor([[0.0], [0.1], [5.0], [5.1], [10.0], [10.1]])
    mixed = tight[[0, 2, 1, 4, 3, 5]]
    criterion = SurrogatePrecision(k=1, temperature1=0.1)
    assert criterion(tight, labels) < 0.01 < criterion(mixed, labels)


def test_errors() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        SurrogatePrecision(k=0)
    with pytest.raises(ValueError, match="Got 3 feature vectors but 2 labels"):
        SurrogatePrecision(k=1)(torch.randn(3, 2), [0, 1])
