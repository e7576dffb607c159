import math

import pytest
import torch

from oml.functional.losses import get_reduced, surrogate_precision


def surrogate_precision_loops(distances, mask_gt, k, t1, t2):
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    n_q, n_g = distances.shape
    out = []
    for i in range(n_q):
        total = 0.0
        for j in range(n_g):
            rank = sum(sig((float(distances[i, j]) - float(distances[i, l])) / t2) for l in range(n_g))  # noqa: E741
            total += sig((k - rank) / t1) * float(mask_gt[i, j])
        out.append(total / max(min(int(mask_gt[i].sum()), k), 1))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("k,t1,t2", [(1, 1.0, 0.01), (3, 0.5, 0.1), (5, 1.0, 1.0)])
def test_surrogate_precision_equals_the_loops(k: int, t1: float, t2: float) -> None:
    g = torch.Generator().manual_seed(k)
    distances = torch.rand(4, 7, generator=g, dtype=torch.float64)
    mask_gt = torch.rand(4, 7, generator=g) > 0.6
    mask_gt[0] = False  # a query without relevant items has precision 0
    got = surrogate_precision(distances, mask_gt, k, t1, t2, reduction="none")
    assert torch.allclose(got, surrogate_precision_loops(distances, mask_gt, k, t1, t2))
    assert got[0] == 0
    assert torch.isclose(surrogate_precision(distances, mask_gt, k, t1, t2), got.mean())
    assert torch.isclose(surrogate_precision(distances, mask_gt, k, t1, t2, reduction="sum"), got.sum())


def test_surrogate_precision_tends_to_precision_at_k() -> None:
    distances = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]])
    mask_gt = torch.tensor([[True, False, True, False, True]])
    # hard precision@2 = 1/2, @3 = 2/3
    for k, expected in ((2, 0.5), (3, 2 / 3)):
        assert torch.isclose(surrogate_precision(distances, mask_gt, k, t1=0.01, t2=0.001), torch.tensor(expected))


def test_surrogate_precision_gradient_and_errors() -> None:
    distances = torch.rand(3, 4, requires_grad=True)
    surrogate_precision(distances, torch.rand(3, 4) > 0.5, 2).backward()
    assert torch.isfinite(distances.grad).all()
    with pytest.raises(ValueError, match="same shape"):
        surrogate_precision(torch.rand(3, 4), torch.rand(3, 5) > 0.5, 2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        surrogate_precision(torch.rand(3, 4), torch.rand(3, 4) > 0.5, 0)


def test_get_reduced() -> None:
    x = torch.tensor([1.0, 2.0, 3.0])
    assert get_reduced(x, "mean") == 2.0
    assert get_reduced(x, "sum") == 6.0
    assert get_reduced(x, "none") is x
    with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], got 'avg'"):
        get_reduced(x, "avg")
