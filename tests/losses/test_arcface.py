import math

import pytest
import torch

from oml.losses.arcface import ArcFaceLoss, ArcFaceLossWithMLP


def loops_reference(x, y, weight, m, s, epsilon=0.0, categories=None, reduction="mean"):
    losses = []
    for features, label in zip(x.tolist(), y.tolist()):
        norm_x = math.sqrt(sum(v * v for v in features))
        logits = []
        for c, w in enumerate(weight.tolist()):
            cos = sum(a * b for a, b in zip(features, w)) / norm_x / math.sqrt(sum(v * v for v in w))
            if c == label:
                theta = math.acos(max(-1.0, min(1.0, cos)))
                cos = math.cos(theta + m) if cos > -math.cos(m) else cos - m * math.sin(m)
            logits.append(s * cos)
        log_z = math.log(sum(math.exp(v - max(logits)) for v in logits)) + max(logits)
        n = len(logits)
        if categories is None:
            support = list(range(n))
        else:
            support = [c for c in range(n) if categories[c] == categories[label]]
        target = [(1 - epsilon) * (c == label) + (epsilon / len(support) if c in support else 0.0) for c in range(n)]
        losses.append(-sum(t * (v - log_z) for t, v in zip(target, logits)))
    losses = torch.tensor(losses, dtype=torch.float64)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


@pytest.mark.parametrize("m,s", [(0.5, 64.0), (0.2, 10.0), (1.2, 5.0)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_arcface_equals_the_loops(m, s, reduction) -> None:
    torch.manual_seed(0)
    criterion = ArcFaceLoss(in_features=6, num_classes=5, m=m, s=s, reduction=reduction).double()
    x = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    loss = criterion(x, y)
    assert torch.allclose(loss, loops_reference(x, y, criterion.weight, m, s, reduction=reduction))
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(criterion.weight.grad).all()


def test_margin_fallback_branch_when_the_angle_is_large() -> None:
    # features opposite to their class weight: theta + m > pi, the "cos - m sin m" branch is used
    criterion = ArcFaceLoss(in_features=2, num_classes=2, m=0.5, s=2.0).double()
    with torch.no_grad():
        criterion.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[-1.0, 0.01], [0.02, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    assert torch.allclose(criterion(x, y), loops_reference(x, y, criterion.weight, 0.5, 2.0))


@pytest.mark.parametrize("epsilon", [0.1, 0.4])
def test_label_smoothing_with_categories(epsilon: float) -> None:
    torch.manual_seed(1)
    label2category = {0: "shoes", 1: "shoes", 2: "bags", 3: "bags", 4: "bags"}
    criterion = ArcFaceLoss(6, 5, m=0.3, s=8.0, smoothing_epsilon=epsilon, label2category=label2category).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 4, 0])
    categories = [label2category[c] for c in range(5)]
    expected = loops_reference(x, y, criterion.weight, 0.3, 8.0, epsilon, categories)
    assert torch.allclose(criterion(x, y), expected)
    plain = ArcFaceLoss(6, 5, m=0.3, s=8.0, smoothing_epsilon=epsilon).double()
    plain.load_state_dict(criterion.state_dict())  # the categories buffer is not persistent
    assert torch.allclose(plain(x, y), loops_reference(x, y, criterion.weight, 0.3, 8.0, epsilon))


def test_accuracy_log_and_fc() -> None:
    criterion = ArcFaceLoss(in_features=3, num_classes=3)
    with torch.no_grad():
        criterion.weight.copy_(torch.eye(3))
    x = torch.tensor([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 5.0], [1.0, 0, 0]])
    criterion(x, torch.tensor([0, 1, 2, 2]))
    assert criterion.last_logs == {"accuracy": 0.75}
    assert torch.allclose(criterion.fc(x), torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]))


def test_with_mlp() -> None:
    torch.manual_seed(0)
    criterion = ArcFaceLossWithMLP(in_features=8, num_classes=4, mlp_features=[16, 5], m=0.4, s=16.0)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(criterion(x, y), criterion.arcface(criterion.mlp(x), y))
    assert criterion.arcface.weight.shape == (4, 5)
    assert "accuracy" in criterion.last_logs
    assert criterion.criterion_name == "arcface"


def test_errors() -> None:
    criterion = ArcFaceLoss(in_features=4, num_classes=3)
    with pytest.raises(ValueError, match=r"ArcFaceLoss got label 3, but labels must be in \[0, 2\] \(num_classes=3\)"):
        criterion(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="ArcFaceLoss got label -1"):
        criterion(torch.randn(2, 4), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"Expected features \[batch_size, 4\]"):
        criterion(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"label2category has no category for class\(es\) \[2\]"):
        ArcFaceLoss(4, 3, smoothing_epsilon=0.1, label2category={0: "a", 1: "b"})
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        ArcFaceLoss(4, 0)
