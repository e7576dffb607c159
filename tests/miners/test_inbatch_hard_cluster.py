import pytest
import torch

from oml.miners.inbatch_hard_cluster import HardClusterMiner


def loops_reference(x, labels):
    uniq = sorted(set(labels))
    means = {lab: sum(x[i] for i in range(len(labels)) if labels[i] == lab) / labels.count(lab) for lab in uniq}
    anchors, positives, negatives = [], [], []
    for lab in uniq:
        members = [i for i in range(len(labels)) if labels[i] == lab]
        far = max(members, key=lambda i: float(((x[i] - means[lab]) ** 2).sum()))
        near = min((o for o in uniq if o != lab), key=lambda o: float(((means[o] - means[lab]) ** 2).sum()))
        anchors.append(means[lab])
        positives.append(x[far])
        negatives.append(means[near])
    return torch.stack(anchors), torch.stack(positives), torch.stack(negatives)


@pytest.mark.parametrize("p,k", [(2, 2), (3, 4), (8, 4), (5, 3)])
def test_equal_to_the_loops(p: int, k: int) -> None:
    g = torch.Generator().manual_seed(p + k)
    labels = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]
    features = torch.randn(p * k, 5, generator=g, dtype=torch.float64)
    got = HardClusterMiner().sample(features, labels)
    expected = loops_reference(features, labels.tolist())
    for tensor_got, tensor_expected in zip(got, expected):
        assert tensor_got.shape == (p, 5)
        assert torch.allclose(tensor_got, tensor_expected)


def test_unequal_instances_and_gradient_through_means() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    features = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    got = HardClusterMiner().sample(features, labels)
    expected = loops_reference(features.detach(), labels)
    assert all(torch.allclose(a, b) for a, b in zip(got, expected))
    sum(t.sum() for t in got).backward()
    assert torch.isfinite(features.grad).all()


def test_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 labels"):
        HardClusterMiner().sample(torch.randn(3, 2), [1, 1, 1])
    with pytest.raises(ValueError, match="label 5 has 1"):
        HardClusterMiner().sample(torch.randn(3, 2), [1, 1, 5])
