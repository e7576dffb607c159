import pytest
import torch

from oml.functional.label_smoothing import label_smoothing


def loops_reference(y, num_classes, epsilon, categories=None):
    out = torch.zeros(len(y), num_classes)
    for i, label in enumerate(y.tolist()):
        if categories is None:
            support = list(range(num_classes))
        else:
            support = [c for c in range(num_classes) if categories[c] == categories[label]]
        for c in support:
            out[i, c] += epsilon / len(support)
        out[i, label] += 1 - epsilon
    return out


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_equal_to_the_loops(epsilon: float) -> None:
    y = torch.tensor([0, 3, 5, 2, 2])
    categories = torch.tensor([0, 0, 1, 1, 1, 2])
    for cats in (None, categories):
        got = label_smoothing(y, 6, epsilon, cats)
        assert torch.allclose(got, loops_reference(y, 6, epsilon, cats))
        assert torch.allclose(got.sum(dim=1), torch.ones(5))
        assert (got.argmax(dim=1) == y).all()


def test_mass_stays_inside_the_category() -> None:
    got = label_smoothing(torch.tensor([1]), 4, 0.3, categories=torch.tensor([7, 7, 9, 9]))
    assert got[0, 2:].sum() == 0
    assert torch.isclose(got[0, 1], torch.tensor(0.85))


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\)"):
        label_smoothing(torch.tensor([0]), 3, epsilon=1.0)
    with pytest.raises(ValueError, match=r"Label 3 is outside of the range \[0, 3\)"):
        label_smoothing(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        label_smoothing(torch.tensor([0]), 3, categories=torch.tensor([0, 1]))
