"""Label smoothing of one-hot targets, optionally restricted to the classes of the same category."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def label_smoothing(
    y: Tensor,
    num_classes: int,
    epsilon: float = 0.2,
    categories: Optional[Tensor] = None,
) -> Tensor:
    """Smoothed one-hot targets (`Szegedy et al. <https://arxiv.org/abs/1512.00567>`_).

    Without categories the mass ``epsilon`` is spread uniformly over all classes:
    ``target = (1 - epsilon) * one_hot(y) + epsilon / num_classes``.
    With ``categories`` (``categories[c]`` is the category of class ``c``) it is spread only over the
    classes of the same category as the true class (the true class included), so the model is not
    pushed towards classes that are obviously different:
    ``target = (1 - epsilon) * one_hot(y) + epsilon * same_category / n_classes_in_category``.
    Every row sums to 1.

    Args:
        y: ``[B]`` class ids in ``0 .. num_classes - 1``.
        num_classes: the number of classes.
        epsilon: smoothing power in ``[0, 1)``.
        categories: optional ``[num_classes]`` integer category of every class.

    Returns:
        ``[B, num_classes]`` float targets.

    >>> label_smoothing(torch.tensor([0]), num_classes=4, epsilon=0.4)
    tensor([[0.7000, 0.1000, 0.1000, 0.1000]])
    >>> label_smoothing(torch.tensor([0]), num_classes=4, epsilon=0.4, categories=torch.tensor([0, 0, 1, 1]))
    tensor([[0.8000, 0.2000, 0.0000, 0.0000]])
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}.")
    if y.ndim != 1:
        raise ValueError(f"y must be a 1d tensor of class ids, got shape {tuple(y.shape)}.")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0].item()
        raise ValueError(f"Label {bad} is outside of the range [0, {num_classes}).")
    one_hot = F.one_hot(y, num_classes).float()
    if categories is None:
        return (1 - epsilon) * one_hot + epsilon / num_classes
    categories = torch.as_tensor(categories, device=y.device)
    if categories.shape != (num_classes,):
        raise ValueError(
            f"categories must have one entry per class, i.e. shape ({num_classes},), got {tuple(categories.shape)}."
        )
    same_category = (categories[y].unsqueeze(1) == categories.unsqueeze(0)).float()
    return (1 - epsilon) * one_hot + epsilon * same_category / same_category.sum(dim=1, keepdim=True)


__all__ = ["label_smoothing"]
